import Foundation
import Glibc
import NIOCore
import NIOPosix
@testable import Realtime
import Testing
import TestSupport

@Suite("realtime: frames straight to the socket")
struct FeedWireTests {
    /// The feed's direct sends need the channel's descriptor, which SwiftNIO keeps to itself: if a
    /// SwiftNIO update moves it, this fails (the feed would still work, through the channel).
    @Test func theDescriptorOfAChannelIsItsSocket() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let server = try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
        let client = try await ClientBootstrap(group: group).connect(to: server.localAddress!).get()
        let descriptors = SocketDescriptors()
        let fd = try #require(descriptors.of(client))
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        #expect(named == 0)
        #expect(Int(UInt16(bigEndian: address.sin_port)) == client.localAddress?.port)
        #expect(descriptors.of(server) != nil)
        // Again, from the remembered places.
        #expect(descriptors.of(client) == fd)
        try await client.close()
        try await server.close()
    }

    /// A frame the socket took only part of waits in the channel; a frame written after it, once
    /// the socket has room again but before the channel has sent the rest, must queue behind it
    /// rather than go straight out between its bytes.
    @Test func aFrameWaitingInTheChannelIsNotOvertaken() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let wireReady = group.next().makePromise(of: FeedWire.self)
        let server = try await ServerBootstrap(group: group)
            .childChannelOption(ChannelOptions.socketOption(.so_sndbuf), value: 4096)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let wire = FeedWire(eventLoop: channel.eventLoop, descriptors: SocketDescriptors())
                    try wire.install(in: channel)
                    wireReady.succeed(wire)
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var small: Int32 = 4096
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(server.localAddress!.port!).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        try #require(connected == 0)
        let wire = try await wireReady.futureResult.get()

        let big = WireFrame.text(ByteBuffer(repeating: UInt8(ascii: "a"), count: 1 << 20))
        let after = WireFrame.text(ByteBuffer(string: "after"))
        let early = try await wire.eventLoop.submit {
            wire.write(big)  // the socket takes a part, the channel keeps the rest
            wire.flush()
            // The reader takes some: the socket has room again, and the channel cannot have
            // noticed yet (this closure holds its event loop).
            var chunk = [UInt8](repeating: 0, count: 16384)
            let n = read(fd, &chunk, chunk.count)
            wire.write(after)
            wire.flush()
            return Array(chunk[0..<max(0, n)])
        }.get()
        // Everything arrives, in the order written.
        var expected = big
        expected.writeImmutableBuffer(after)
        var received = early
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        while received.count < expected.readableBytes {
            let n = read(fd, &chunk, chunk.count)
            guard n > 0 else { break }
            received += chunk[0..<n]
        }
        #expect(received.count == expected.readableBytes)
        // Compared as a whole, not printed: a megabyte of bytes makes an unreadable failure.
        let inOrder = received == Array(expected.readableBytesView)
        #expect(inOrder, "the second frame went out between the first one's bytes")
        try await server.close()
    }

    /// Events go straight to the socket while the connection's own writer answers pings through
    /// the channel: no frame may overtake or cut into another.
    @Test(arguments: Backend.all)
    func directSendsAndChannelWritesKeepTheirOrder(_ backend: Backend) async throws {
        // The pings come faster than a client may normally send frames.
        try await withTestApp(backend, configure: { $0.realtime.framesPerSecond = 10_000 }) { api in
            let f = try await api.fixture()
            let member = try await api.feed(f.member)
            _ = try await member.next()
            let count = 60
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for i in 0..<count { _ = try await api.say("m\(i)", in: f.conversationID, as: f.owner, id: "order-\(i)") }
                }
                group.addTask {
                    for _ in 0..<count { try await member.send(#"{"type":"ping"}"#) }
                }
                try await group.waitForAll()
            }
            var ids: [String] = []
            var pongs = 0
            var cursors: [Int] = []
            while ids.count < count || pongs < count {
                let frame = try await member.next()
                switch frame["type"] as? String {
                case "pong": pongs += 1
                case "event" where frame["event"] as? String == "message.created":
                    ids.append((frame["data"] as? [String: Any])?["id"] as? String ?? "?")
                    cursors.append(frame["cursor"] as? Int ?? 0)
                default: break
                }
            }
            #expect(ids == (0..<count).map { "order-\($0)" })
            #expect(cursors == cursors.sorted())
            #expect(pongs == count)
            await member.close()
        }
    }
}
