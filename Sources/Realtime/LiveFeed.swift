import NIOConcurrencyHelpers
import NIOCore
import NIOWebSocket

/// Why the bus ends a live feed; the connection's task closes the socket with the matching code.
enum FeedEnd: Sendable {
    /// Fell further behind than the bus's window: reconnect with `?since=<last cursor>`.
    case resume
    case accountDeleted
}

/// A `/v1/events` connection that has caught up. The bus writes the shared frames of new events
/// straight to its channel on the channel's event loop: no task wakes per connection per event,
/// and every event the bus hands over in one go leaves in one flush.
///
/// `cursor` and `ending` are only touched on `channel.eventLoop`; that is the invariant that
/// makes the unchecked `Sendable` sound.
final class LiveFeed: @unchecked Sendable {
    let user: String
    let channel: any Channel
    let audiences: NIOLockedValueBox<Audiences>
    private let ended: AsyncStream<FeedEnd>.Continuation
    /// The last event this connection has been handed (written, or skipped as not its audience).
    private var cursor: Int64
    private var ending = false

    init(user: String, channel: any Channel, audiences: NIOLockedValueBox<Audiences>, cursor: Int64,
         ended: AsyncStream<FeedEnd>.Continuation) {
        self.user = user
        self.channel = channel
        self.audiences = audiences
        self.cursor = cursor
        self.ended = ended
    }

    var eventLoop: any EventLoop { channel.eventLoop }

    /// Writes what this connection has not had yet. `batch` holds the events after `batchBase`,
    /// the common case; a connection elsewhere (it was not writable a moment ago) reads the
    /// bus's window. Writes stop when the channel stops being writable, so what waits in memory
    /// for a slow reader is bounded by the channel's high-water mark plus one frame; the
    /// connection resumes when the channel drains (`WritabilityWatch`) or, if the window has
    /// moved past it by then, is told to resume from its cursor.
    func push(batch: ArraySlice<FeedEvent>, batchBase: Int64, windowBase: Int64, bus: EventBus) {
        eventLoop.preconditionInEventLoop()
        guard !ending else { return }
        // Checked even when the channel cannot take writes: a reader that stopped reading must
        // not hold its place for ever.
        guard cursor >= windowBase else { return end(.resume) }
        var wrote = false
        defer { if wrote { channel.flush() } }
        while channel.isWritable {
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
                guard channel.isWritable else { return }
                if case .userDeleted(let u)? = e.change, u == user { return end(.accountDeleted) }
                let visible = audiences.withLockedValue { a -> Bool in
                    if let c = e.change { a.before(c) }
                    let visible = a.contains(e.audience)
                    if let c = e.change { a.after(c) }
                    return visible
                }
                if visible {
                    channel.write(WebSocketFrame(fin: true, opcode: .text, data: e.frame), promise: nil)
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
    func send(ephemeral frame: ByteBuffer, audience: String, except: String?) {
        eventLoop.preconditionInEventLoop()
        guard !ending, channel.isWritable, except != user, audiences.withLockedValue({ $0.contains(audience) }) else { return }
        channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .text, data: frame), promise: nil)
    }

    private func end(_ reason: FeedEnd) {
        ending = true
        ended.yield(reason)
        ended.finish()
    }
}

/// Tells the bus when a live feed's channel can take writes again after a slow reader caught up.
final class WritabilityWatch: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = NIOAny
    let onWritable: @Sendable () -> Void

    init(onWritable: @escaping @Sendable () -> Void) { self.onWritable = onWritable }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { onWritable() }
        context.fireChannelWritabilityChanged()
    }
}
