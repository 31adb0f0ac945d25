// The fan-out clients: N WebSocket connections to `/v1/events`, read by a few threads with epoll
// and plain read(2), frames parsed straight from the bytes. A real WebSocket client (the upgrade
// handshake, frame parsing, masked pongs to the server's pings) and nothing else, so that on two
// shared cores the harness takes as little as possible from the server it measures.
import Foundation
import Histogram
import NIOConcurrencyHelpers
#if canImport(Glibc)
import Glibc
#endif
#if canImport(CNIOLinux)
import CNIOLinux  // <sys/epoll.h>, which Glibc's module leaves out
#endif

func nanos() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

struct HarnessError: Error, CustomStringConvertible { let description: String }

/// A blocking TCP connection to the server on 127.0.0.1, with TCP_NODELAY as a client sets it.
func connectLoopback(port: Int) throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw HarnessError(description: "socket: \(String(cString: strerror(errno)))") }
    var one: Int32 = 1
    setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    let ok = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard ok == 0 else { throw HarnessError(description: "connect: \(String(cString: strerror(errno)))") }
    return fd
}

final class FeedClients: @unchecked Sendable {
    /// One connection's bytes of a frame that has not fully arrived yet.
    struct Connection {
        var fd: Int32
        var pending: [UInt8] = []
        /// What arrived, to name a lost, repeated or reordered message after the run: how many
        /// messages, the sum of their send times, the last send time, how many came before one
        /// sent earlier, and a hash of the order they came in.
        var received = 0
        var sum: UInt64 = 0
        var lastSent: UInt64 = 0
        var disorder = 0
        var order: UInt64 = 0xcbf29ce484222325
        /// A close frame's code and reason, or the end of the stream.
        var ended: String?
    }

    private let readers: [Reader]
    private let stopping = NIOLockedValueBox(false)
    private var threads: [Thread] = []

    /// Connects and upgrades `count` sockets (tokens used round-robin), blocking until all are open.
    init(count: Int, port: Int, tokens: [String], readers readerCount: Int) throws {
        var conns: [[Connection]] = Array(repeating: [], count: readerCount)
        for i in 0..<count {
            let (fd, leftover, _) = try Self.open(port: port, token: tokens[i % tokens.count])
            conns[i % readerCount].append(Connection(fd: fd, pending: leftover))
        }
        readers = conns.map { Reader(connections: $0) }
    }

    func start() {
        for r in readers {
            let stopping = self.stopping
            let t = Thread { r.run(until: { stopping.withLockedValue { $0 } }) }
            t.start()
            threads.append(t)
        }
    }

    /// Stops the readers and waits for them (they wake every 100 ms).
    func stop() {
        stopping.withLockedValue { $0 = true }
        while readers.contains(where: { !$0.finished.withLockedValue { $0 } }) { usleep(10_000) }
    }

    var delivered: Int { readers.reduce(0) { $0 + $1.stats.withLockedValue { $0.delivered } } }
    var lastDelivery: UInt64 { readers.map { $0.stats.withLockedValue { $0.last } }.max() ?? 0 }

    /// After `stop()`: each connection that did not get every one of the `total` messages exactly
    /// once and in order, with what it missed (when it missed one: its send time's place among
    /// the messages) and how it ended.
    ///
    /// With one sender, the log's order is the order of the send times (it waits for each answer);
    /// with several, it is whatever order their messages committed in, which every connection
    /// must see alike.
    func anomalies(total: Int, senders: Int) -> [String] {
        var sends = Set<UInt64>()
        for r in readers { r.stats.withLockedValue { sends.formUnion($0.spread.keys) } }
        let ordered = sends.sorted()
        let all = ordered.reduce(UInt64(0), &+)
        var orders: [UInt64: Int] = [:]
        for r in readers { for c in r.connections where c.received == total { orders[c.order, default: 0] += 1 } }
        let usual = orders.max { $0.value < $1.value }?.key
        var out: [String] = []
        for (k, r) in readers.enumerated() {
            for (i, c) in r.connections.enumerated() {
                let reordered = senders == 1 ? c.disorder > 0 : c.received == total && c.order != usual
                guard c.received != total || reordered || c.ended != nil else { continue }
                var line = "reader \(k) connection \(i): \(c.received) of \(total) messages"
                if reordered {
                    line += senders == 1 ? ", \(c.disorder) before one sent earlier" : ", in another order than the others"
                }
                if c.received == total - 1 {
                    let missing = all &- c.sum
                    line += ", missed message #\(ordered.firstIndex(of: missing).map(String.init) ?? "?") (sent at \(missing))"
                }
                if let e = c.ended { line += ", ended: \(e)" }
                out.append(line)
            }
        }
        return out
    }

    /// p50, p99, p99.9 and max in milliseconds, over all readers.
    func percentiles() -> (Double, Double, Double, Double) {
        var all = Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
        for r in readers { r.stats.withLockedValue { all.add($0.histogram) } }
        return (Double(all.valueAtPercentile(50)) / 1000, Double(all.valueAtPercentile(99)) / 1000,
                Double(all.valueAtPercentile(99.9)) / 1000, Double(all.max) / 1000)
    }

    /// Per message: p50 and p99 over messages of its first delivery's and of its last delivery's
    /// latency (ms): how long until anyone had it, and until everyone had it.
    func spread(trace: String? = nil) -> (firstP50: Double, firstP99: Double, lastP50: Double, lastP99: Double) {
        var merged: [UInt64: (first: UInt64, last: UInt64)] = [:]
        for r in readers {
            r.stats.withLockedValue { s in
                for (k, v) in s.spread {
                    let e = merged[k] ?? v
                    merged[k] = (min(e.first, v.first), max(e.last, v.last))
                }
            }
        }
        if let trace {
            let lines = merged.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value.first) \($0.value.last)\n" }
            FileManager.default.createFile(atPath: trace, contents: Data(lines.joined().utf8))
        }
        let firsts = merged.values.map(\.first).sorted(), lasts = merged.values.map(\.last).sorted()
        func p(_ a: [UInt64], _ q: Double) -> Double { a.isEmpty ? 0 : Double(a[Int(q * Double(a.count - 1))]) / 1000 }
        return (p(firsts, 0.5), p(firsts, 0.99), p(lasts, 0.5), p(lasts, 0.99))
    }

    /// A blocking connect and upgrade that waits for the server's `ready` frame; returns the
    /// socket (then non-blocking) and any frame bytes that came after it. A connection opened
    /// without a cursor gets the events after the one its `ready` names, so a message sent
    /// between the 101 and that frame would not be this connection's (the web app passes its
    /// page's cursor instead): the senders start only when every connection is ready.
    static func open(port: Int, token: String, since: Int64? = nil) throws -> (fd: Int32, rest: [UInt8], cursor: Int64) {
        let fd = try connectLoopback(port: port)
        let request = "GET /v1/events\(since.map { "?since=\($0)" } ?? "") HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer \(token)\r\n\r\n"
        let bytes = Array(request.utf8)
        guard write(fd, bytes, bytes.count) == bytes.count else { throw HarnessError(description: "write: upgrade") }
        var got: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(fd, &chunk, chunk.count)
            guard n > 0 else { throw HarnessError(description: "the server closed during the upgrade") }
            got += chunk[0..<n]
            guard let end = got.firstRange(of: [13, 10, 13, 10]) else { continue }
            guard got.starts(with: Array("HTTP/1.1 101".utf8)) else {
                throw HarnessError(description: "upgrade refused: \(String(decoding: got, as: UTF8.self))")
            }
            var rest = Array(got[end.upperBound...])
            // Frames until `ready` (the first the server sends), read whole.
            while true {
                let frame = rest.withUnsafeBytes { b in
                    wholeFrame(b, at: 0).map { (String(decoding: b[$0.payload], as: UTF8.self), $0.payload.upperBound) }
                }
                if let (text, size) = frame {
                    rest.removeFirst(size)
                    if text.contains(#""type":"ready""#) {
                        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
                        let cursor = text.split(separator: ":").last.flatMap { Int64($0.dropLast()) } ?? 0
                        return (fd, rest, cursor)
                    }
                    continue
                }
                let n = read(fd, &chunk, chunk.count)
                guard n > 0 else { throw HarnessError(description: "the server closed before the ready frame") }
                rest += chunk[0..<n]
            }
        }
    }
}

/// The whole frame at `at` in `bytes`: its opcode and where its payload lies; nil until all of it
/// has arrived.
func wholeFrame(_ bytes: UnsafeRawBufferPointer, at: Int) -> (opcode: UInt8, payload: Range<Int>)? {
    guard bytes.count - at >= 2 else { return nil }
    var length = Int(bytes[at + 1] & 0x7f), header = 2
    if length == 126 {
        guard bytes.count - at >= 4 else { return nil }
        length = Int(bytes[at + 2]) << 8 | Int(bytes[at + 3])
        header = 4
    } else if length == 127 {
        guard bytes.count - at >= 10 else { return nil }
        length = (0..<8).reduce(0) { $0 << 8 | Int(bytes[at + 2 + $1]) }
        header = 10
    }
    guard bytes.count - at >= header + length else { return nil }
    return (bytes[at] & 0x0f, (at + header)..<(at + header + length))
}

/// One thread's connections, its epoll set and its own histogram (merged at the end).
final class Reader: @unchecked Sendable {
    struct Stats {
        var histogram = Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
        var delivered = 0
        var last: UInt64 = 0
        /// Per message (by send time): its first and last delivery's latency on this thread.
        var spread: [UInt64: (first: UInt64, last: UInt64)] = [:]
    }
    var connections: [FeedClients.Connection]
    let stats = NIOLockedValueBox(Stats())
    let finished = NIOLockedValueBox(false)
    static let marker = Array("\"text\":\"t=".utf8)
    static let pong: [UInt8] = [0x8a, 0x80, 0, 0, 0, 0]

    init(connections: [FeedClients.Connection]) { self.connections = connections }

    func run(until stopping: () -> Bool) {
        let ep = epoll_create1(0)
        for (i, c) in connections.enumerated() {
            var ev = epoll_event()
            ev.events = EPOLLIN.rawValue
            ev.data.u64 = UInt64(i)
            epoll_ctl(ep, EPOLL_CTL_ADD, c.fd, &ev)
        }
        var events = [epoll_event](repeating: epoll_event(), count: 256)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 8)
        defer { buffer.deallocate() }
        // Send times and latencies of one epoll round, recorded under the lock once per round.
        var sends: [UInt64] = []
        var latencies: [UInt64] = []
        sends.reserveCapacity(4096)
        latencies.reserveCapacity(4096)
        func ingest(_ i: Int, _ bytes: UnsafeRawBufferPointer) {
            let now = nanos()
            let start = sends.count
            consume(i, bytes, into: &sends)
            for sent in sends[start...] { latencies.append((now &- sent) / 1000) }
        }
        // Frames that came with the upgrade's answer.
        for i in connections.indices where !connections[i].pending.isEmpty {
            let leftover = connections[i].pending
            connections[i].pending = []
            leftover.withUnsafeBytes { ingest(i, $0) }
        }
        while !stopping() {
            let n = epoll_wait(ep, &events, Int32(events.count), 100)
            for k in 0..<max(0, Int(n)) {
                let i = Int(events[k].data.u64)
                while true {
                    let got = read(connections[i].fd, buffer.baseAddress, buffer.count)
                    if got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR) {
                        connections[i].ended = (connections[i].ended.map { $0 + ", " } ?? "") + (got == 0 ? "end of stream" : "read error \(errno)")
                        epoll_ctl(ep, EPOLL_CTL_DEL, connections[i].fd, nil)
                    }
                    if got <= 0 { break }
                    ingest(i, UnsafeRawBufferPointer(rebasing: buffer[0..<got]))
                    if got < buffer.count { break }
                }
            }
            if !latencies.isEmpty {
                let now = nanos()
                stats.withLockedValue { s in
                    for (k, v) in latencies.enumerated() {
                        _ = s.histogram.record(v)
                        let e = s.spread[sends[k]] ?? (v, v)
                        s.spread[sends[k]] = (min(e.first, v), max(e.last, v))
                    }
                    s.delivered += latencies.count
                    s.last = now
                }
                latencies.removeAll(keepingCapacity: true)
                sends.removeAll(keepingCapacity: true)
            }
        }
        close(ep)
        finished.withLockedValue { $0 = true }
    }

    /// Parses the frames in `bytes` (after what connection `i` had pending); appends the send
    /// time of each message frame to `sent` and answers pings.
    func consume(_ i: Int, _ bytes: UnsafeRawBufferPointer, into sent: inout [UInt64]) {
        if connections[i].pending.isEmpty {
            let used = frames(i, bytes, into: &sent)
            if used < bytes.count { connections[i].pending = Array(bytes[used...]) }
        } else {
            var joined = connections[i].pending
            joined += bytes
            let used = joined.withUnsafeBytes { frames(i, $0, into: &sent) }
            connections[i].pending = Array(joined[used...])
        }
    }

    /// Whole frames from the start of `bytes`; returns how many bytes they took.
    private func frames(_ i: Int, _ bytes: UnsafeRawBufferPointer, into sent: inout [UInt64]) -> Int {
        var at = 0
        while let (opcode, range) = wholeFrame(bytes, at: at) {
            let payload = UnsafeRawBufferPointer(rebasing: bytes[range])
            if opcode == 0x9 {
                _ = Self.pong.withUnsafeBytes { write(connections[i].fd, $0.baseAddress, $0.count) }
            } else if opcode == 0x1, let t = Self.sentAt(in: payload) {
                sent.append(t)
                connections[i].received += 1
                connections[i].sum &+= t
                if t <= connections[i].lastSent { connections[i].disorder += 1 }
                connections[i].lastSent = t
                connections[i].order = (connections[i].order ^ t) &* 0x100000001b3
            } else if opcode == 0x8 {
                let code = payload.count >= 2 ? Int(payload[0]) << 8 | Int(payload[1]) : 0
                let reason = payload.count > 2 ? String(decoding: payload[2...], as: UTF8.self) : ""
                connections[i].ended = "close \(code) \(reason)"
            }
            at = range.upperBound
        }
        return at
    }

    /// The number after `"text":"t=` in a frame's payload.
    static func sentAt(in payload: UnsafeRawBufferPointer) -> UInt64? {
        guard let base = payload.baseAddress, payload.count > marker.count else { return nil }
        var found: Int?
        marker.withUnsafeBytes { m in
            var i = 0
            while i <= payload.count - m.count {
                guard let p = memchr(base + i, Int32(m[0]), payload.count - m.count - i + 1) else { return }
                let off = base.distance(to: UnsafeRawPointer(p))
                if memcmp(base + off, m.baseAddress!, m.count) == 0 { found = off; return }
                i = off + 1
            }
        }
        guard var i = found.map({ $0 + marker.count }) else { return nil }
        var v: UInt64 = 0
        while i < payload.count, payload[i] >= 48, payload[i] <= 57 {
            v = v * 10 + UInt64(payload[i] - 48)
            i += 1
        }
        return v
    }
}
