import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A WebSocket client that completes the handshake and then stops reading, with a tiny receive
/// buffer: what a phone on a dead network or a frozen tab looks like to the server. Later it can
/// read everything that did arrive, up to the server's close.
final class StalledSocket: Sendable {
    private let channel: any Channel
    private let collector: Collector

    final class Collector: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let bytes = NIOLockedValueBox(ByteBuffer())
        let closed: EventLoopPromise<Void>

        init(closed: EventLoopPromise<Void>) { self.closed = closed }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var b = unwrapInboundIn(data)
            bytes.withLockedValue { $0.writeBuffer(&b) }
        }

        func channelInactive(context: ChannelHandlerContext) { closed.succeed() }
        func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
    }

    struct Failure: Error, CustomStringConvertible { let description: String }

    private init(channel: any Channel, collector: Collector) {
        self.channel = channel
        self.collector = collector
    }

    /// Connects, upgrades, reads the upgrade response, then stops reading.
    static func connect(port: Int, path: String, token: String) async throws -> StalledSocket {
        let group = MultiThreadedEventLoopGroup.singleton
        let collector = Collector(closed: group.next().makePromise())
        let channel = try await ClientBootstrap(group: group)
            .channelOption(ChannelOptions.autoRead, value: false)
            .channelOption(ChannelOptions.socketOption(.so_rcvbuf), value: 4096)
            .channelInitializer { $0.pipeline.addHandler(collector) }
            .connect(host: "127.0.0.1", port: port).get()
        let request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            + "Authorization: Bearer \(token)\r\n\r\n"
        try await channel.writeAndFlush(ByteBuffer(string: request)).get()
        let socket = StalledSocket(channel: channel, collector: collector)
        for _ in 0..<250 {
            channel.read()
            try await Task.sleep(for: .milliseconds(20))
            let head = collector.bytes.withLockedValue { String(buffer: $0) }
            if let end = head.range(of: "\r\n\r\n") {
                guard head.hasPrefix("HTTP/1.1 101") else { throw Failure(description: "upgrade refused: \(head)") }
                collector.bytes.withLockedValue { $0.moveReaderIndex(forwardBy: head.utf8.distance(from: head.startIndex, to: end.upperBound)) }
                return socket
            }
        }
        throw Failure(description: "no upgrade response")
    }

    /// Reads everything that arrived until the server closed the connection and returns the
    /// text frames, and the close code if a close frame made it through. The timeout is long (a
    /// loaded CI host once took more than 10 s; unloaded it takes milliseconds), and its failure
    /// says what had arrived, to tell a server that kept the socket open from a slow host.
    func drain(timeout: Duration = .seconds(45)) async throws -> (texts: [String], closeCode: UInt16?) {
        try await channel.setOption(ChannelOptions.autoRead, value: true).get()
        channel.read()
        let closed = collector.closed.futureResult
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await closed.get() }
            group.addTask {
                try await Task.sleep(for: timeout)
                let received = self.collector.bytes.withLockedValue { $0.readableBytes }
                throw Failure(description: "the server did not close the connection within \(timeout) (\(received) bytes read, channel active: \(self.channel.isActive))")
            }
            try await group.next()
            group.cancelAll()
        }
        var buffer = collector.bytes.withLockedValue { $0 }
        var texts: [String] = []
        var closeCode: UInt16?
        // Server frames are unmasked: opcode, length (7, 16 or 64 bits), payload.
        while let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self),
              let second = buffer.getInteger(at: buffer.readerIndex + 1, as: UInt8.self) {
            var offset = 2
            var length = Int(second & 0x7f)
            if length == 126 {
                guard let l = buffer.getInteger(at: buffer.readerIndex + 2, as: UInt16.self) else { break }
                length = Int(l)
                offset = 4
            } else if length == 127 {
                guard let l = buffer.getInteger(at: buffer.readerIndex + 2, as: UInt64.self) else { break }
                length = Int(l)
                offset = 10
            }
            guard buffer.readableBytes >= offset + length else { break }  // cut off by the close
            buffer.moveReaderIndex(forwardBy: offset)
            let payload = buffer.readSlice(length: length)!
            switch first & 0x0f {
            case 0x1: texts.append(String(buffer: payload))
            case 0x8: closeCode = payload.getInteger(at: payload.readerIndex, as: UInt16.self)
            default: break
            }
        }
        return (texts, closeCode)
    }

    func close() async { try? await channel.close() }
}
