import Foundation
import Glibc
import NIOCore
import NIOPosix
@testable import Storage
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
        let (server, wire, fd) = try await Self.wiredConnection(small: true)
        defer { close(fd) }

        let big = WireFrame.text(ByteBuffer(repeating: UInt8(ascii: "a"), count: 1 << 20))
        let after = WireFrame.text(ByteBuffer(string: "after"))
        let early = try await wire.eventLoop.submit {
            wire.write(big)  // the socket takes a part, the channel keeps the rest
            wire.flush()
            // The reader takes some: the socket has room again, and the channel cannot have
            // noticed yet (this closure holds its event loop).
            var chunk = [UInt8](repeating: 0, count: 16384)
            let n = Glibc.read(fd, &chunk, chunk.count)
            wire.write(after)
            wire.flush()
            return Array(chunk[0..<max(0, n)])
        }.get()
        // Everything arrives, in the order written.
        var expected = big
        expected.writeImmutableBuffer(after)
        let received = early + Self.read(fd, count: expected.readableBytes - early.count)
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

    /// A server-side channel with a feed wire, installed once the channel is active (as the
    /// feed does after the upgrade: before that the socket is not the wire's to write to), and
    /// the other end as a plain socket. `small` shrinks both buffers, so a big frame does not fit.
    static func wiredConnection(small: Bool = false) async throws -> (server: any Channel, wire: FeedWire, fd: Int32) {
        let (server, channel, fd) = try await acceptedConnection(small: small)
        let wire = try await channel.eventLoop.submit {
            let wire = FeedWire(eventLoop: channel.eventLoop, descriptors: SocketDescriptors())
            try wire.install(in: channel)
            return wire
        }.get()
        #expect(try await wire.eventLoop.submit { wire.sendsDirectly }.get(), "the tests are about direct sends")
        return (server, wire, fd)
    }

    /// A server-side channel, active, and the other end as a plain socket.
    static func acceptedConnection(small: Bool = false) async throws -> (server: any Channel, channel: any Channel, fd: Int32) {
        let group = MultiThreadedEventLoopGroup.singleton
        let accepted = group.next().makePromise(of: (any Channel).self)
        let server = try await ServerBootstrap(group: group)
            .childChannelOption(ChannelOptions.socketOption(.so_sndbuf), value: small ? 4096 : 1 << 20)
            .childChannelInitializer { channel in
                accepted.succeed(channel)
                return channel.eventLoop.makeSucceededVoidFuture()
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        if small {
            var size: Int32 = 4096
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(server.localAddress!.port!).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        try #require(connected == 0)
        let channel = try await accepted.futureResult.get()
        try await eventually("the accepted channel active", seconds: 5) { channel.isActive }
        return (server, channel, fd)
    }

    /// A feed and its wire refer to each other (the wire tells the feed when the channel
    /// drains): once the connection is closed, both must still be freed.
    @Test func aClosedConnectionsFeedIsFreed() async throws {
        try await TestDatabase.with(.sqlite) { db in
            let bus = EventBus(db: db, logger: TestDatabase.logger)
            try await bus.prepare()
            let (server, channel, fd) = try await Self.acceptedConnection()
            let (feed, wire) = try await channel.eventLoop.submit {
                let wire = FeedWire(eventLoop: channel.eventLoop, descriptors: SocketDescriptors())
                let feed = LiveFeed(user: "u", session: nil, wire: wire, audiences: Audiences(user: "u", groups: [:], chats: []),
                                    closeTimeout: .seconds(5))
                try feed.install(in: channel, bus: bus)
                return (Weak(feed), Weak(wire))
            }.get()
            close(fd)
            try await channel.closeFuture.get()
            try await eventually("the feed freed", seconds: 5) { feed.object == nil && wire.object == nil }
            try await server.close()
        }
    }

    /// Reads until `count` bytes came (or 5 s passed).
    static func read(_ fd: Int32, count: Int) -> [UInt8] {
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while received.count < count {
            let n = Glibc.read(fd, &chunk, chunk.count)
            guard n > 0 else { break }
            received += chunk[0..<n]
        }
        return received
    }

    /// TCP segments with data this socket has received (Linux's `tcp_info.tcpi_data_segs_in`).
    static func dataSegmentsIn(_ fd: Int32) -> UInt32 {
        var info = [UInt8](repeating: 0, count: 256)
        var length = socklen_t(info.count)
        guard getsockopt(fd, Int32(IPPROTO_TCP), TCP_INFO, &info, &length) == 0, length >= 160 else { return 0 }
        // The field's offset in the kernel's struct (include/uapi/linux/tcp.h), stable ABI.
        return info.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 152, as: UInt32.self) }
    }

    /// Events waiting for one connection leave in one write: one TCP segment, not one per event,
    /// including those committed after the push took its batch.
    @Test func eventsWaitingForAConnectionLeaveTogether() async throws {
        try await TestDatabase.with(.sqlite) { db in
            let bus = EventBus(db: db, logger: TestDatabase.logger)
            try await bus.prepare()
            let (server, wire, fd) = try await Self.wiredConnection()
            defer { close(fd) }
            let feed = LiveFeed(user: "u", session: nil, wire: wire, audiences: Audiences(user: "u", groups: [:], chats: []),
                                closeTimeout: .seconds(5))
            await feed.goLive(from: bus.head, bus: bus)
            // Committed together (one commit hands them to the bus at once): five for this user
            // and one in between for someone else, which is skipped.
            struct NotInTheWindow: Error {}
            func commit(_ notes: [(n: Int, to: String)]) async throws -> [FeedEvent] {
                let from = bus.head
                try await db.write { tx in
                    for note in notes {
                        try await EventLog.append(tx, EventBusTests.NoteLogged.event(.init(n: note.n), audience: note.to))
                    }
                }
                guard case .events(let events) = bus.window(after: from, limit: 100), events.count == notes.count else {
                    throw NotInTheWindow()
                }
                return events
            }
            let waiting = try await commit([(1, "user:u"), (2, "user:u"), (3, "user:u"), (4, "user:v"), (5, "user:u"), (6, "user:u")])
            let base = waiting[0].seq - 1
            try await wire.eventLoop.submit { feed.push(batch: waiting[...], batchBase: base, windowBase: base, bus: bus) }.get()
            var expected: [UInt8] = []
            for e in waiting where e.audience == "user:u" { expected += Array(e.wire.readableBytesView) }
            #expect(Self.read(fd, count: expected.count) == expected)
            #expect(Self.dataSegmentsIn(fd) == 1)
            // One event alone goes as it is.
            let next = try await commit([(7, "user:u")])
            try await wire.eventLoop.submit { feed.push(batch: next[...], batchBase: waiting.last!.seq, windowBase: base, bus: bus) }.get()
            #expect(Self.read(fd, count: next[0].wire.readableBytes) == Array(next[0].wire.readableBytesView))
            #expect(Self.dataSegmentsIn(fd) == 2)
            // An event committed after the loop's pass took its batch rides along with the batch.
            let late = try await commit([(8, "user:u")]) + commit([(9, "user:u")])
            try await wire.eventLoop.submit { feed.push(batch: late[..<1], batchBase: next[0].seq, windowBase: base, bus: bus) }.get()
            let both = late.flatMap { Array($0.wire.readableBytesView) }
            #expect(Self.read(fd, count: both.count) == both)
            #expect(Self.dataSegmentsIn(fd) == 3)
            try await server.close()
        }
    }
}

/// Holds an object without keeping it alive.
final class Weak<Object: AnyObject>: @unchecked Sendable {
    weak var object: Object?
    init(_ object: Object) { self.object = object }
}
