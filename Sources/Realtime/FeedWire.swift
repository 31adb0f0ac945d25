import NIOConcurrencyHelpers
import NIOCore
import NIOWebSocket
import Glibc

/// Sits next to the socket in a feed's pipeline, right below the WebSocket encoder, and carries
/// every byte the server sends on that connection. The bus writes already-encoded frames
/// through it; it tells the bus when the channel can take writes again after a slow reader
/// caught up, and when the client last sent anything, for heartbeats.
///
/// A frame goes straight to the socket with one `send(2)` when nothing is waiting in the
/// channel's own buffer: SwiftNIO's write and flush (the pipeline, its pending-writes queue, the
/// flush bookkeeping) cost more per frame than the system call, and a fan-out writes the same
/// frame to thousands of sockets. Whatever the socket does not take at once, and every frame
/// that arrives while SwiftNIO still holds bytes of this connection (a pong, a replay written by
/// the connection's task, the rest of a partial send), goes through the channel as usual, so
/// bytes leave in the order they were written and a slow reader is bounded by the channel's
/// high-water mark exactly as before.
///
/// Only valid on a plain TCP connection with no WebSocket extensions: TLS below, or a negotiated
/// extension (compression) above, would have to transform every byte. The server terminates no
/// TLS (a proxy in front does) and negotiates no extensions.
final class FeedWire: ChannelDuplexHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = NIOAny
    typealias OutboundIn = NIOAny
    typealias OutboundOut = NIOAny
    // What a send reads first, together (see `LiveFeed`).
    private var context: ChannelHandlerContext?
    /// The channel's socket for direct sends, -1 when there is none. The channel owns it; the
    /// number is used only on the event loop and forgotten as soon as a write through the
    /// channel fails or the channel goes inactive: SwiftNIO closes a socket only on its event
    /// loop, and within that turn fails the writes it still held before it tells the pipeline,
    /// so a number the system may hand to another connection is never sent to. (A duplicated
    /// descriptor would not need that argument, but costs each idle connection about 0.7 KiB of
    /// the server's memory.)
    private var socket: Int32 = -1
    /// Writes handed to the channel that have not completed: while there are any, frames queue
    /// behind them in the channel instead of overtaking them.
    private var queued = 0
    private var needsFlush = false
    /// The channel's writability, kept here on the event loop as it changes: asked twice per
    /// event per connection, where the channel's own answer costs a retain and an atomic load.
    private(set) var isWritable = false
    let eventLoop: any EventLoop
    var onWritable: (@Sendable () -> Void)?
    /// When the client last sent anything (a pong counts).
    private var lastRead = NIODeadline.now()

    /// Whether the client has sent nothing at all for `silence`.
    func hasBeenSilent(for silence: TimeAmount) -> Bool { NIODeadline.now() - lastRead >= silence }

    /// Without `descriptors`, every byte goes through the channel.
    private let descriptors: SocketDescriptors?

    init(eventLoop: any EventLoop, descriptors: SocketDescriptors? = nil) {
        self.eventLoop = eventLoop
        self.descriptors = descriptors
    }

    /// Puts the wire right below the WebSocket encoder: every frame, ours or the WebSocket
    /// handler's, passes it on its way to the socket.
    func install(in channel: any Channel) throws {
        let pipeline = channel.pipeline.syncOperations
        if let encoder = try? pipeline.handler(type: WebSocketFrameEncoder.self) {
            try pipeline.addHandler(self, position: .before(encoder))
        } else {
            try pipeline.addHandler(self, position: .first)
        }
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        isWritable = context.channel.isWritable
        socket = context.channel.isActive ? descriptors?.of(context.channel) ?? -1 : -1
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        isWritable = false
        release()
    }

    func channelInactive(context: ChannelHandlerContext) {
        release()
        context.fireChannelInactive()
    }

    private func release() { socket = -1 }

    /// Whether frames can go straight to the socket (for tests: the path they mean to exercise).
    var sendsDirectly: Bool { socket >= 0 }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        lastRead = .now()
        context.fireChannelRead(data)
    }

    /// Sends `bytes` (whole WebSocket frames) after everything written before.
    func write(_ bytes: ByteBuffer) {
        // The direct send touches neither the context nor exclusivity checks: a fan-out reaches
        // each connection's objects cold, and each one more is a cache miss per delivery. A
        // socket implies a context (both go when the handler is removed).
        let socket = self.socket
        var sent = 0
        if socket >= 0, queued == 0 {
            sent = bytes.withUnsafeReadableBytes { send(socket, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
            if sent == bytes.readableBytes { return }
            if sent < 0 {
                if errno != EAGAIN, errno != EWOULDBLOCK, errno != EINTR {
                    // A broken connection: the channel will find out and close; until then it
                    // takes the bytes and reports the error itself.
                    release()
                }
                sent = 0
            }
        }
        // Whatever the socket did not take goes through the channel, after what it holds.
        guard let context else { return }
        var rest = bytes
        rest.moveReaderIndex(forwardBy: sent)
        enqueue(rest, context: context)
    }

    func flush() {
        guard needsFlush, let context else { return }
        needsFlush = false
        context.flush()
    }

    /// Hands `bytes` to the channel, counted until the write completes.
    private func enqueue(_ bytes: ByteBuffer, context: ChannelHandlerContext) {
        needsFlush = true
        context.write(NIOAny(bytes), promise: counted(context))
    }

    /// A promise for one write handed to the channel, on this event loop (so the count is only
    /// touched here), that counts the write until it completes. A failed write means the
    /// connection is closing or broken: no more direct sends.
    private func counted(_ context: ChannelHandlerContext) -> EventLoopPromise<Void> {
        let promise = context.eventLoop.makePromise(of: Void.self)
        queued += 1
        promise.futureResult.whenComplete { result in
            self.queued -= 1
            if case .failure = result { self.release() }
        }
        return promise
    }

    /// Writes from the handlers above (the WebSocket handler's pongs and close frames, the
    /// connection task's replay) pass through counted, so direct sends wait for them.
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let ours = counted(context)
        if let promise { ours.futureResult.cascade(to: promise) }
        context.write(data, promise: ours)
    }

    func close(after delay: TimeAmount) {
        guard let channel = context?.channel else { return }
        eventLoop.scheduleTask(in: delay) { channel.close(promise: nil) }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        isWritable = context.channel.isWritable
        if isWritable { onWritable?() }
        context.fireChannelWritabilityChanged()
    }
}

/// NIO socket channels' file descriptors. SwiftNIO offers no public way to them; the descriptor
/// is read by reflection from the channel's `socket` (a `BaseSocket` holding `descriptor`). Where
/// the two fields sit is found once per class and remembered, so a connection costs two field
/// reads, not a walk over every field of the channel (whose temporary copies, made while the
/// connection's long-lived objects are allocated, cost idle connections memory). Nil when the
/// channel is no such socket channel or SwiftNIO's layout has changed: the feed then uses the
/// channel's own write path, and `FeedWireTests` fail.
final class SocketDescriptors: Sendable {
    /// A stored property's place: how many superclasses up, and its index there.
    struct Place: Sendable {
        var depth: Int
        var index: Int
    }
    private let places = NIOLockedValueBox<[ObjectIdentifier: Place?]>([:])

    init() {}

    func of(_ channel: any Channel) -> Int32? {
        guard let socket = field("socket", of: channel), let fd = field("descriptor", of: socket) as? Int32, fd >= 0 else {
            return nil
        }
        return fd
    }

    private func field(_ name: String, of value: Any) -> Any? {
        let key = ObjectIdentifier(type(of: value))
        let known = places.withLockedValue { $0[key] }
        let place: Place?
        if let known {
            place = known
        } else {
            place = Self.find(name, in: value)
            places.withLockedValue { $0[key] = .some(place) }
        }
        guard let place else { return nil }
        var mirror = Mirror(reflecting: value)
        for _ in 0..<place.depth {
            guard let up = mirror.superclassMirror else { return nil }
            mirror = up
        }
        let children = mirror.children
        guard place.index < children.count else { return nil }
        let child = children[children.index(children.startIndex, offsetBy: place.index)]
        return child.label == name ? child.value : nil
    }

    private static func find(_ name: String, in value: Any) -> Place? {
        var mirror: Mirror? = Mirror(reflecting: value)
        var depth = 0
        while let m = mirror {
            if let index = m.children.firstIndex(where: { $0.label == name }) {
                return Place(depth: depth, index: m.children.distance(from: m.children.startIndex, to: index))
            }
            mirror = m.superclassMirror
            depth += 1
        }
        return nil
    }
}
