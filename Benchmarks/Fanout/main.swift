// Fan-out: N WebSocket clients in one group, a sender posting through the HTTP API at a fixed
// rate; send-to-deliver latency, deliveries per second, and the server's memory. Or, with
// --idle, memory per open idle connection.
//
//   swift build -c release --product verteilt --product fanout-bench
//   .build/release/fanout-bench --clients 1000 --rate 100 --seconds 10
//   .build/release/fanout-bench --idle 10000
//
// The server is a separate `verteilt serve` process (the release binary beside this one), so its
// RSS and CPU time are its own. Latency is taken from the send time written into each message to
// its arrival, recorded in an HdrHistogram. The clients are plain NIO channel handlers that parse
// WebSocket frames themselves: on two shared cores the harness must cost less than the server.
import Foundation
import Histogram
import HTTPTypes
import HummingbirdTesting
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
#if canImport(Glibc)
import Glibc
#endif

struct Options {
    var clients = 1000
    var rate = 100.0
    var senders = 1
    var seconds = 10.0
    var idle: Int?
    var port = 18282
    var database = NSTemporaryDirectory() + "fanout-\(UUID().uuidString).sqlite"

    init() {
        var args = CommandLine.arguments.dropFirst().makeIterator()
        while let a = args.next() {
            switch a {
            case "--clients": clients = Int(args.next()!)!
            case "--rate": rate = Double(args.next()!)!
            case "--senders": senders = Int(args.next()!)!
            case "--seconds": seconds = Double(args.next()!)!
            case "--idle": idle = Int(args.next()!)!
            case "--port": port = Int(args.next()!)!
            case "--database": database = args.next()!
            default: fatalError("unknown option \(a)")
            }
        }
    }
}

func raiseFileLimit() {
    var limit = rlimit()
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    limit.rlim_cur = limit.rlim_max
    setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
}

func rssKiB(_ pid: Int32) -> Int {
    guard let s = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
    for line in s.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        return Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
    }
    return 0
}

/// CPU seconds (user + system) a process has used so far.
func cpuSeconds(_ pid: Int32) -> Double {
    guard let s = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = s.lastIndex(of: ")") else { return 0 }
    let fields = s[s.index(after: close)...].split(separator: " ")
    // After the command: state is field 3, utime 14 and stime 15 (1-based in proc(5)).
    let ticks = (Double(fields[11]) ?? 0) + (Double(fields[12]) ?? 0)
    return ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
}

func nanos() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

/// Send-to-delivery latencies in an HdrHistogram (microseconds, 3 significant digits).
final class Stats: Sendable {
    private let state = NIOLockedValueBox<(histogram: Histogram<UInt64>, delivered: Int, last: UInt64)>(
        (Histogram(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three), 0, 0))
    func record(sentAt: UInt64) {
        let now = nanos()
        state.withLockedValue {
            _ = $0.histogram.record((now &- sentAt) / 1000)
            $0.delivered += 1
            $0.last = now
        }
    }
    var delivered: Int { state.withLockedValue { $0.delivered } }
    var lastDelivery: UInt64 { state.withLockedValue { $0.last } }
    /// p50, p99, p99.9 and max in milliseconds.
    func percentiles() -> (Double, Double, Double, Double) {
        state.withLockedValue { s in
            let h = s.histogram
            return (Double(h.valueAtPercentile(50)) / 1000, Double(h.valueAtPercentile(99)) / 1000,
                    Double(h.valueAtPercentile(99.9)) / 1000, Double(h.max) / 1000)
        }
    }
}

func http(_ port: Int, _ path: String, _ json: [String: Any], token: String? = nil) async throws -> [String: Any] {
    let client = TestClient(host: "127.0.0.1", port: port, configuration: .init(timeout: .seconds(30)))
    client.connect()
    defer { Task { try? await client.shutdown() } }
    var headers: HTTPFields = [.contentType: "application/json"]
    if let token { headers[.authorization] = "Bearer \(token)" }
    let r = try await client.execute(.init(path, method: .post, headers: headers,
                                           body: ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: json))))
    return (try JSONSerialization.jsonObject(with: r.body.map { Data(buffer: $0) } ?? Data()) as? [String: Any]) ?? [:]
}

let options = Options()
raiseFileLimit()
let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("verteilt").path
// A service key creates the accounts: sign-up's per-address rate limit is for people.
let keys = Process()
keys.executableURL = URL(fileURLWithPath: binary)
keys.arguments = ["keys", "create", "bench", "--database", options.database]
let keyPipe = Pipe()
keys.standardOutput = keyPipe
try keys.run()
keys.waitUntilExit()
let serviceKey = String(decoding: keyPipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    .trimmingCharacters(in: .whitespacesAndNewlines)
let server = Process()
server.executableURL = URL(fileURLWithPath: binary)
server.arguments = ["serve", "--port", String(options.port), "--database", options.database, "--bcrypt-cost", "4", "--log-level", "error"]
try server.run()
defer { server.terminate() }
for _ in 0..<200 {
    if (try? await http(options.port, "/healthz", [:])) != nil { break }
    try await Task.sleep(for: .milliseconds(50))
}
let baseRSS = rssKiB(server.processIdentifier)

let users = try await (0..<max(1, min(options.idle ?? options.clients, 50))).asyncMap { i in
    try await http(options.port, "/v1/users/Create", [
        "first_name": "U\(i)", "email": "u\(i)-\(UUID().uuidString.prefix(6))@bench.test", "password": "benchmark-password",
    ], token: serviceKey)["token"] as! String
}
let sender = users[0]
let group = try await http(options.port, "/v1/groups/Create", ["name": "Fan-out"], token: sender)
let groupID = (group["group"] as! [String: Any])["id"] as! String
let invite = try await http(options.port, "/v1/invites/Create", ["group_id": groupID], token: sender)
let code = (invite["invite"] as! [String: Any])["code"] as! String
for t in users.dropFirst() { _ = try await http(options.port, "/v1/invites/Accept", ["code": code], token: t) }
let conv = try await http(options.port, "/v1/threads/CreateConversation", ["group_id": groupID, "topic": "load"], token: sender)
let conversationID = (conv["conversation"] as! [String: Any])["id"] as! String

let stats = Stats()
let connected = NIOLockedValueBox(0)
let count = options.idle ?? options.clients
let marker = Array("\"text\":\"t=".utf8)

/// One client socket: upgrades, then parses server frames (unmasked) straight from the bytes.
final class FeedClient: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let token: String
    let port: Int
    var buffer = ByteBuffer()
    var upgraded = false

    init(token: String, port: Int) {
        self.token = token
        self.port = port
    }

    func channelActive(context: ChannelHandlerContext) {
        let request = "GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer \(token)\r\n\r\n"
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: request)), promise: nil)
    }

    /// The number after `"text":"t=` in a frame's payload (memmem: the harness must stay cheap).
    static func sentAt(in payload: UnsafeRawBufferPointer) -> UInt64? {
        guard let base = payload.baseAddress, payload.count > marker.count else { return nil }
        var at: Int?
        marker.withUnsafeBytes { m in
            for i in 0...(payload.count - m.count) where payload[i] == m[0] && memcmp(base + i, m.baseAddress!, m.count) == 0 {
                at = i
                break
            }
        }
        guard var i = at.map({ $0 + marker.count }) else { return nil }
        var v: UInt64 = 0
        while i < payload.count, payload[i] >= 48, payload[i] <= 57 {
            v = v * 10 + UInt64(payload[i] - 48)
            i += 1
        }
        return v
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        buffer.writeBuffer(&incoming)
        if !upgraded {
            let view = buffer.readableBytesView
            guard let end = view.firstRange(of: [13, 10, 13, 10]) else { return }
            buffer.moveReaderIndex(to: end.upperBound)
            upgraded = true
            connected.withLockedValue { $0 += 1 }
        }
        while let second = buffer.getInteger(at: buffer.readerIndex + 1, as: UInt8.self) {
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
            guard buffer.readableBytes >= offset + length else { break }
            let opcode = (buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) ?? 0) & 0x0f
            buffer.moveReaderIndex(forwardBy: offset)
            if opcode == 0x9 {
                // Answer the server's heartbeat: an empty pong, masked as client frames must be.
                context.writeAndFlush(wrapOutboundOut(ByteBuffer(bytes: [0x8a, 0x80, 0, 0, 0, 0])), promise: nil)
            }
            if let sentAt = buffer.withUnsafeReadableBytes({ Self.sentAt(in: UnsafeRawBufferPointer(rebasing: $0.prefix(length))) }) {
                stats.record(sentAt: sentAt)
            }
            buffer.moveReaderIndex(forwardBy: length)
        }
        buffer.discardReadBytes()
    }
}

// N clients, each its own WebSocket.
let clientGroup = MultiThreadedEventLoopGroup(numberOfThreads: 2)
var channels: [any Channel] = []
for i in 0..<count {
    let token = users[i % users.count]
    channels.append(try await ClientBootstrap(group: clientGroup)
        .channelInitializer { $0.pipeline.addHandler(FeedClient(token: token, port: options.port)) }
        .connect(host: "127.0.0.1", port: options.port).get())
}
while connected.withLockedValue({ $0 }) < count {
    try await Task.sleep(for: .milliseconds(100))
}

if options.idle != nil {
    try await Task.sleep(for: .seconds(2))
    let rss = rssKiB(server.processIdentifier)
    print("| \(count) idle connections | server RSS \(baseRSS / 1024) MiB before, \(rss / 1024) MiB after | \(String(format: "%.1f", Double(rss - baseRSS) / Double(count))) KiB per connection |")
} else {
    // The senders: a fixed overall rate through the HTTP API, each message carrying its send time.
    let total = Int(options.rate * options.seconds)
    let start = ContinuousClock.now
    let startNanos = nanos()
    let cpuBefore = cpuSeconds(server.processIdentifier)
    let ownCPUBefore = cpuSeconds(getpid())
    try await withThrowingTaskGroup(of: Void.self) { group in
        for s in 0..<options.senders {
            group.addTask {
                let client = TestClient(host: "127.0.0.1", port: options.port, configuration: .init(timeout: .seconds(30)))
                client.connect()
                defer { Task { try? await client.shutdown() } }
                for i in stride(from: s, to: total, by: options.senders) {
                    try await Task.sleep(until: start.advanced(by: .seconds(Double(i) / options.rate)), clock: .continuous)
                    let body = try JSONSerialization.data(withJSONObject: ["conversation_id": conversationID, "text": "t=\(nanos())"])
                    _ = try await client.execute(.init("/v1/threads/CreateMessage", method: .post,
                        headers: [.authorization: "Bearer \(users[s % users.count])", .contentType: "application/json"],
                        body: ByteBuffer(bytes: body)))
                }
            }
        }
        try await group.waitForAll()
    }
    let sendSeconds = Double(nanos() - startNanos) / 1e9
    let sendDone = ContinuousClock.now
    let expected = total * count
    while stats.delivered < expected && sendDone.duration(to: .now) < .seconds(30) {
        try await Task.sleep(for: .milliseconds(50))
    }
    let seconds = Double(stats.lastDelivery - startNanos) / 1e9
    let serverCPU = cpuSeconds(server.processIdentifier) - cpuBefore
    let clientCPU = cpuSeconds(getpid()) - ownCPUBefore
    let (p50, p99, p999, max) = stats.percentiles()
    let rss = rssKiB(server.processIdentifier)
    print("| \(count) | \(Int(options.rate)) msg/s x \(options.senders) | \(String(format: "%.0f", Double(total) / sendSeconds)) msg/s | \(stats.delivered)/\(expected) | \(String(format: "%.0f", Double(stats.delivered) / seconds)) | \(String(format: "%.2f | %.2f | %.2f | %.1f", p50, p99, p999, max)) | \(rss / 1024) MiB | \(String(format: "%.1f", serverCPU * 1e6 / Double(Swift.max(1, stats.delivered)))) µs | \(String(format: "%.1f", clientCPU * 1e6 / Double(Swift.max(1, stats.delivered)))) µs |")
}
server.terminate()
server.waitUntilExit()
exit(0)

extension Sequence {
    func asyncMap<T>(_ f: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        for e in self { out.append(try await f(e)) }
        return out
    }
}
