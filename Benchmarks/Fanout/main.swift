// Fan-out: N WebSocket clients in one group, a sender posting through the HTTP API at a fixed
// rate; send-to-deliver latency, deliveries per second, and the server's memory. Or, with
// --idle, memory per open idle connection.
//
//   swift build -c release --product verteilt --product fanout-bench
//   .build/release/fanout-bench --clients 1000 --rate 100 --seconds 10
//   .build/release/fanout-bench --idle 10000
//
// The server is a separate `verteilt serve` process (the release binary beside this one), so its
// RSS is its own. Latency is taken from the send time written into each message to its arrival.
import Foundation
import HTTPTypes
import HummingbirdTesting
import HummingbirdWSClient
import Logging
import NIOConcurrencyHelpers
import NIOCore
#if canImport(Glibc)
import Glibc
#endif

struct Options {
    var clients = 1000
    var rate = 100.0
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

func nanos() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

final class Stats: Sendable {
    private let state = NIOLockedValueBox<(latencies: [UInt64], delivered: Int)>(([], 0))
    func record(_ ns: UInt64) { state.withLockedValue { $0.latencies.append(ns); $0.delivered += 1 } }
    var delivered: Int { state.withLockedValue { $0.delivered } }
    func percentiles() -> (Double, Double, Double, Double) {
        let l = state.withLockedValue { $0.latencies }.sorted()
        guard !l.isEmpty else { return (0, 0, 0, 0) }
        func p(_ q: Double) -> Double { Double(l[min(l.count - 1, Int(Double(l.count) * q))]) / 1e6 }
        return (p(0.5), p(0.99), p(0.999), Double(l.last!) / 1e6)
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

var logger = Logger(label: "fanout")
logger.logLevel = .critical
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
let stop = NIOLockedValueBox(false)
let count = options.idle ?? options.clients
let marker = Array("\"text\":\"t=".utf8)

// N clients, each its own WebSocket; they parse only what they must.
let clientTasks = (0..<count).map { i in
    Task {
        var config = WebSocketClientConfiguration()
        config.additionalHeaders = [.authorization: "Bearer \(users[i % users.count])"]
        config.autoPing = .disabled
        _ = try? await WebSocketClient.connect(url: "ws://127.0.0.1:\(options.port)/v1/events", configuration: config, logger: logger) {
            inbound, _, _ in
            connected.withLockedValue { $0 += 1 }
            for try await frame in inbound {
                if stop.withLockedValue({ $0 }) { break }
                let bytes = Array(buffer: frame.data)
                guard let r = bytes.firstRange(of: marker) else { continue }
                var v: UInt64 = 0
                for b in bytes[r.upperBound...] {
                    guard b >= 48 && b <= 57 else { break }
                    v = v * 10 + UInt64(b - 48)
                }
                stats.record(nanos() &- v)
            }
        }
    }
}
while connected.withLockedValue({ $0 }) < count {
    try await Task.sleep(for: .milliseconds(100))
}

if options.idle != nil {
    try await Task.sleep(for: .seconds(2))
    let rss = rssKiB(server.processIdentifier)
    print("| \(count) idle connections | server RSS \(baseRSS / 1024) MiB before, \(rss / 1024) MiB after | \(String(format: "%.1f", Double(rss - baseRSS) / Double(count))) KiB per connection |")
} else {
    // The sender: a fixed rate through the HTTP API, each message carrying its send time.
    let total = Int(options.rate * options.seconds)
    let start = ContinuousClock.now
    let senderClient = TestClient(host: "127.0.0.1", port: options.port, configuration: .init(timeout: .seconds(30)))
    senderClient.connect()
    for i in 0..<total {
        try await Task.sleep(until: start.advanced(by: .seconds(Double(i) / options.rate)), clock: .continuous)
        let body = try JSONSerialization.data(withJSONObject: ["conversation_id": conversationID, "text": "t=\(nanos())"])
        _ = try await senderClient.execute(.init("/v1/threads/CreateMessage", method: .post,
            headers: [.authorization: "Bearer \(sender)", .contentType: "application/json"], body: ByteBuffer(bytes: body)))
    }
    let sendDone = ContinuousClock.now
    let expected = total * count
    while stats.delivered < expected && sendDone.duration(to: .now) < .seconds(30) {
        try await Task.sleep(for: .milliseconds(50))
    }
    let elapsed = start.duration(to: .now)
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    let (p50, p99, p999, max) = stats.percentiles()
    let rss = rssKiB(server.processIdentifier)
    print("| \(count) | \(Int(options.rate)) msg/s | \(stats.delivered)/\(expected) | \(String(format: "%.0f", Double(stats.delivered) / seconds)) | \(String(format: "%.2f | %.2f | %.2f | %.1f", p50, p99, p999, max)) | \(rss / 1024) MiB |")
}
stop.withLockedValue { $0 = true }
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
