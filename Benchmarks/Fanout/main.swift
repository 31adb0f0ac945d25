// Fan-out: N WebSocket clients in one group, a sender posting through the HTTP API at a fixed
// rate; send-to-deliver latency, deliveries per second, and the server's memory. Or, with
// --idle, memory per open idle connection; or, with --resume, what a reconnect from an old cursor
// costs.
//
//   swift build -c release --product verteilt --product fanout-bench
//   .build/release/fanout-bench --clients 1000 --rate 100 --seconds 10
//   .build/release/fanout-bench --idle 10000
//   .build/release/fanout-bench --resume 30000
//
// The server is a separate `verteilt serve` process (the release binary beside this one), so its
// RSS and CPU time are its own. Latency is taken from the send time written into each message to
// its arrival, recorded in an HdrHistogram. The clients (FeedClients.swift) are WebSocket clients
// on raw sockets and epoll: on two shared cores every microsecond the harness spends is taken from
// the server it measures.
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
    /// Whether `--database` named the file: a run's own temporary database is removed after it.
    var keepDatabase = false
    /// Serve without the workflow engine (`serve --no-workers`): what the engine costs a message.
    var noWorkers = false
    /// A file to write each message's send time (ns) and first and last delivery (µs) to.
    var trace: String?
    /// Resume mode: how many events of other people's groups lie between a user's cursor and now.
    var resume: Int?
    /// The server binary (default: the `verteilt` beside this one), to compare two builds.
    var server: String?

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
            case "--database": database = args.next()!; keepDatabase = true
            case "--no-workers": noWorkers = true
            case "--trace": trace = args.next()!
            case "--resume": resume = Int(args.next()!)!
            case "--server": server = args.next()!
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
let binary = options.server
    ?? URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("verteilt").path
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
    + (options.noWorkers ? ["--no-workers"] : [])
/// Stops the server and removes the run's own database (an early exit leaves it for a look).
func finish() {
    server.terminate()
    server.waitUntilExit()
    if !options.keepDatabase {
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: options.database + suffix) }
    }
}
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

if let noise = options.resume {
    // A user's cursor, then their group's messages, then a busy day in a group they are not in.
    let own = 100
    let (fd, _, cursor) = try FeedClients.open(port: options.port, token: sender)
    close(fd)
    try Senders(port: options.port).run(total: own, rate: 1000, conversationID: conversationID, tokens: [sender])
    let other = users[1]
    let elsewhere = try await http(options.port, "/v1/groups/Create", ["name": "Elsewhere"], token: other)
    let elsewhereID = (elsewhere["group"] as! [String: Any])["id"] as! String
    let busy = try await http(options.port, "/v1/threads/CreateConversation", ["group_id": elsewhereID, "topic": "busy"], token: other)
    let busyID = (busy["conversation"] as! [String: Any])["id"] as! String
    try Senders(port: options.port).run(total: noise, rate: 1e9, conversationID: busyID, tokens: Array(repeating: other, count: 4))
    let times = 20
    let cpuBefore = cpuSeconds(server.processIdentifier)
    let ms = try Resume.measure(port: options.port, token: sender, since: cursor, expected: own, times: times)
    let cpu = (cpuSeconds(server.processIdentifier) - cpuBefore) / Double(times)
    print("| resume past \(noise) others' events | \(own) own | \(String(format: "%.1f", ms)) ms per resume | server CPU \(String(format: "%.1f", cpu * 1000)) ms per resume |")
    finish()
    exit(0)
}

let count = options.idle ?? options.clients
let clients = try FeedClients(count: count, port: options.port, tokens: users, readers: 2)
clients.start()
if options.idle != nil {
    try await Task.sleep(for: .seconds(2))
    let rss = rssKiB(server.processIdentifier)
    print("| \(count) idle connections | server RSS \(baseRSS / 1024) MiB before, \(rss / 1024) MiB after | \(String(format: "%.1f", Double(rss - baseRSS) / Double(count))) KiB per connection |")
} else {
    // The senders: a fixed overall rate through the HTTP API, each message carrying its send time.
    let total = Int(options.rate * options.seconds)
    let startNanos = nanos()
    let cpuBefore = cpuSeconds(server.processIdentifier)
    let ownCPUBefore = cpuSeconds(getpid())
    // Sender s posts as user s (of the first few), as the TestClient senders did.
    try Senders(port: options.port).run(total: total, rate: options.rate, conversationID: conversationID,
                                        tokens: (0..<options.senders).map { users[$0 % users.count] })
    let sendSeconds = Double(nanos() - startNanos) / 1e9
    let sendDone = ContinuousClock.now
    let expected = total * count
    while clients.delivered < expected && sendDone.duration(to: .now) < .seconds(30) {
        try await Task.sleep(for: .milliseconds(50))
    }
    let seconds = Double(clients.lastDelivery - startNanos) / 1e9
    let serverCPU = cpuSeconds(server.processIdentifier) - cpuBefore
    let clientCPU = cpuSeconds(getpid()) - ownCPUBefore
    clients.stop()
    let (p50, p99, p999, max) = clients.percentiles()
    let spread = clients.spread(trace: options.trace)
    let delivered = clients.delivered
    let rss = rssKiB(server.processIdentifier)
    print("| \(count) | \(Int(options.rate)) msg/s x \(options.senders) | \(String(format: "%.0f", Double(total) / sendSeconds)) msg/s | \(delivered)/\(expected) | \(String(format: "%.0f", Double(delivered) / seconds)) | \(String(format: "%.2f | %.2f | %.2f | %.1f", p50, p99, p999, max)) | \(rss / 1024) MiB | \(String(format: "%.1f", serverCPU * 1e6 / Double(Swift.max(1, delivered)))) µs | \(String(format: "%.1f", clientCPU * 1e6 / Double(Swift.max(1, delivered)))) µs |")
    print(String(format: "per message: first delivery p50 %.2f p99 %.2f ms; last delivery p50 %.2f p99 %.2f ms",
                 spread.firstP50, spread.firstP99, spread.lastP50, spread.lastP99))
    // Nothing may be lost, repeated or reordered: name every connection where something was.
    let anomalies = clients.anomalies(total: total, senders: options.senders)
    for line in anomalies.prefix(20) { print("ANOMALY \(line)") }
    if anomalies.count > 20 { print("ANOMALY and \(anomalies.count - 20) more connections") }
}
finish()
exit(0)

extension Sequence {
    func asyncMap<T>(_ f: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        for e in self { out.append(try await f(e)) }
        return out
    }
}
