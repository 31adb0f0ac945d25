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
    let eventLoop: any EventLoop
    private var context: ChannelHandlerContext?
    var onWritable: (@Sendable () -> Void)?
    /// When the client last sent anything (a pong counts).
    private var lastRead = NIODeadline.now()
    /// A duplicate of the channel's socket for direct sends, -1 when there is none. A duplicate,
    /// not the channel's own descriptor: when the channel closes its descriptor, the number may
    /// be reused by the next connection at once, while the duplicate still names this socket
    /// until `release()` closes it, which the channel's close reaches in the same event-loop turn.
    private var socket: Int32 = -1
    /// Writes handed to the channel that have not completed: while there are any, frames queue
    /// behind them in the channel instead of overtaking them.
    private var queued = 0
    private var needsFlush = false

    /// Whether the client has sent nothing at all for `silence`.
    func hasBeenSilent(for silence: TimeAmount) -> Bool { NIODeadline.now() - lastRead >= silence }

    init(eventLoop: any EventLoop) { self.eventLoop = eventLoop }

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
        if let fd = SocketDescriptor.of(context.channel) {
            socket = fcntl(fd, F_DUPFD_CLOEXEC, 0)
        }
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

    private func release() {
        if socket >= 0 { closeDescriptor(socket) }
        socket = -1
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        lastRead = .now()
        context.fireChannelRead(data)
    }

    /// The channel's writability, kept here on the event loop as it changes: asked twice per
    /// event per connection, where the channel's own answer costs a retain and an atomic load.
    private(set) var isWritable = false

    /// Sends `bytes` (whole WebSocket frames) after everything written before.
    func write(_ bytes: ByteBuffer) {
        guard let context else { return }
        if socket >= 0, queued == 0 {
            let sent = bytes.withUnsafeReadableBytes { send(socket, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
            if sent == bytes.readableBytes { return }
            if sent < 0, errno != EAGAIN, errno != EWOULDBLOCK, errno != EINTR {
                // A broken connection: the channel will find out and close; until then it
                // takes the bytes and reports the error itself.
                release()
            }
            let rest = sent > 0 ? bytes.getSlice(at: bytes.readerIndex + sent, length: bytes.readableBytes - sent)! : bytes
            return enqueue(rest, context: context)
        }
        enqueue(bytes, context: context)
    }

    func flush() {
        guard needsFlush, let context else { return }
        needsFlush = false
        context.flush()
    }

    /// Hands `bytes` to the channel, counted until the write completes.
    private func enqueue(_ bytes: ByteBuffer, context: ChannelHandlerContext) {
        let promise = context.eventLoop.makePromise(of: Void.self)
        track(promise)
        needsFlush = true
        context.write(NIOAny(bytes), promise: promise)
    }

    private func track(_ promise: EventLoopPromise<Void>) {
        queued += 1
        promise.futureResult.whenComplete { _ in self.queued -= 1 }
    }

    /// Writes from the handlers above (the WebSocket handler's pongs and close frames, the
    /// connection task's replay) pass through counted, so direct sends wait for them.
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let promise = promise ?? context.eventLoop.makePromise()
        track(promise)
        context.write(data, promise: promise)
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

private func closeDescriptor(_ fd: Int32) { _ = close(fd) }

/// A NIO socket channel's file descriptor. SwiftNIO offers no public way to it; it is read by
/// reflection from the channel's `socket` (a `BaseSocket` holding `descriptor`). Nil when the
/// channel is not such a socket channel or SwiftNIO's layout has changed: callers then use the
/// channel's own write path, and the realtime tests notice (`FeedWireTests`).
enum SocketDescriptor {
    static func of(_ channel: any Channel) -> Int32? {
        guard let socket = field("socket", of: channel), let fd = field("descriptor", of: socket) as? Int32, fd >= 0 else {
            return nil
        }
        return fd
    }

    /// A stored property by name, searched up the class hierarchy.
    private static func field(_ name: String, of value: Any) -> Any? {
        var mirror: Mirror? = Mirror(reflecting: value)
        while let m = mirror {
            if let v = m.children.first(where: { $0.label == name })?.value { return v }
            mirror = m.superclassMirror
        }
        return nil
    }
}
