import NIOConcurrencyHelpers
import NIOCore

/// Why the bus ends a live feed; the connection's task closes the socket with the matching code.
enum FeedEnd: Sendable {
    /// Fell further behind than the bus's window: reconnect with `?since=<last cursor>`.
    case resume
    case accountDeleted
}

/// A WebSocket text frame as it goes on the wire from a server (unmasked, no extensions), so one
/// encoding serves every connection.
enum WireFrame {
    static func text(_ payload: ByteBuffer) -> ByteBuffer {
        let n = payload.readableBytes
        var out = ByteBufferAllocator().buffer(capacity: n + 10)
        out.writeInteger(UInt8(0x81))  // FIN, text
        if n < 126 {
            out.writeInteger(UInt8(n))
        } else if n <= Int(UInt16.max) {
            out.writeInteger(UInt8(126))
            out.writeInteger(UInt16(n))
        } else {
            out.writeInteger(UInt8(127))
            out.writeInteger(UInt64(n))
        }
        var p = payload
        out.writeBuffer(&p)
        return out
    }
}

/// A `/v1/events` connection that has caught up. The bus writes the already-encoded frames of
/// new events straight to its socket on the channel's event loop: no task wakes per connection
/// per event, no per-connection encoding, and whatever the bus hands over in one go leaves in one
/// flush.
///
/// `cursor`, `ending` and the wire's context are only touched on the channel's event loop; that
/// is the invariant that makes the unchecked `Sendable` sound.
final class LiveFeed: @unchecked Sendable {
    let user: String
    let wire: FeedWire
    let audiences: NIOLockedValueBox<Audiences>
    private let ended: AsyncStream<FeedEnd>.Continuation
    /// The last event this connection has been handed (written, or skipped as not its audience).
    private var cursor: Int64
    private var ending = false

    init(user: String, wire: FeedWire, audiences: NIOLockedValueBox<Audiences>, cursor: Int64,
         ended: AsyncStream<FeedEnd>.Continuation) {
        self.user = user
        self.wire = wire
        self.audiences = audiences
        self.cursor = cursor
        self.ended = ended
    }

    var eventLoop: any EventLoop { wire.eventLoop }

    /// Writes what this connection has not had yet. `batch` holds the events after `batchBase`,
    /// the common case; a connection elsewhere (it was not writable a moment ago) reads the
    /// bus's window. Writes stop when the channel stops being writable, so what waits in memory
    /// for a slow reader is bounded by the channel's high-water mark plus one frame; the
    /// connection resumes when the channel drains or, if the window has moved past it by then,
    /// is told to resume from its cursor.
    func push(batch: ArraySlice<FeedEvent>, batchBase: Int64, windowBase: Int64, bus: EventBus) {
        eventLoop.preconditionInEventLoop()
        guard !ending else { return }
        // Checked even when the channel cannot take writes: a reader that stopped reading must
        // not hold its place for ever.
        guard cursor >= windowBase else { return end(.resume) }
        var wrote = false
        defer { if wrote { wire.flush() } }
        while wire.isWritable {
            let events: ArraySlice<FeedEvent>
            var more = false
            if cursor == batchBase, !batch.isEmpty {
                events = batch
            } else {
                switch bus.window(after: cursor, limit: Self.chunk) {
                case .events(let e):
                    if e.isEmpty { return }
                    events = e[...]
                    more = e.count == Self.chunk
                case .behind:
                    return end(.resume)
                }
            }
            for e in events {
                guard wire.isWritable else { return }
                if case .userDeleted(let u)? = e.change, u == user { return end(.accountDeleted) }
                let visible = audiences.withLockedValue { a -> Bool in
                    if let c = e.change { a.before(c) }
                    let visible = a.contains(e.audience)
                    if let c = e.change { a.after(c) }
                    return visible
                }
                if visible {
                    wire.write(e.wire)
                    wrote = true
                }
                cursor = e.seq
            }
            if !more { return }
        }
    }

    static let chunk = 1000

    /// A frame that is never stored (typing, presence); dropped for a connection that cannot
    /// take it now, as a missed typing notice is harmless and presence is re-read on resume.
    func send(ephemeral wireFrame: ByteBuffer, audience: String, except: String?) {
        eventLoop.preconditionInEventLoop()
        guard !ending, wire.isWritable, except != user, audiences.withLockedValue({ $0.contains(audience) }) else { return }
        wire.write(wireFrame)
        wire.flush()
    }

    private func end(_ reason: FeedEnd) {
        ending = true
        ended.yield(reason)
        ended.finish()
    }
}

/// Sits next to the socket in a live feed's pipeline: the bus writes encoded frames through it
/// (past the WebSocket encoder, which has nothing left to do for them), and it tells the bus when
/// the channel can take writes again after a slow reader caught up.
///
/// Only valid without WebSocket extensions: a negotiated extension (compression) would have to
/// transform every frame. The server negotiates none.
final class FeedWire: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = NIOAny
    typealias OutboundOut = ByteBuffer
    let eventLoop: any EventLoop
    private var context: ChannelHandlerContext?
    var onWritable: (@Sendable () -> Void)?

    init(eventLoop: any EventLoop) { self.eventLoop = eventLoop }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    var isWritable: Bool { context?.channel.isWritable ?? false }

    func write(_ bytes: ByteBuffer) { context?.write(wrapOutboundOut(bytes), promise: nil) }
    func flush() { context?.flush() }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { onWritable?() }
        context.fireChannelWritabilityChanged()
    }
}
