// The group page in one round trip vs the same data by individual /v1 calls in sequence.
//
//   swift run -c release group-page-bench [--database URL] [--rate VIEWS_PER_S] [--seconds S]
//
// Seeds a group of 20 members with 10 conversations holding 100,000 messages (and a private chat
// between the viewer and each member), then loads the page both ways at a fixed rate and reports
// round trips, bytes and latency per page view. Latency is measured from each view's scheduled
// start, so a slow response that delays the next one is counted, not hidden.
import App
import Foundation
import HTTPTypes
import HummingbirdTesting
import Logging
import NIOCore
import ServiceKit
import Storage

struct Options {
    var database = NSTemporaryDirectory() + "group-page-bench-\(UUID().uuidString).sqlite"
    var rate = 20.0
    var seconds = 15.0
    var messages = 100_000
    var port = 18181

    init() {
        var args = CommandLine.arguments.dropFirst().makeIterator()
        while let a = args.next() {
            switch a {
            case "--database": database = args.next()!
            case "--rate": rate = Double(args.next()!)!
            case "--seconds": seconds = Double(args.next()!)!
            case "--messages": messages = Int(args.next()!)!
            case "--port": port = Int(args.next()!)!
            default: fatalError("unknown option \(a)")
            }
        }
    }
}

/// A small pool of keep-alive connections.
final class Pool: Sendable {
    let clients: [TestClient]
    let next = ManagedAtomicCounter()

    init(port: Int, size: Int) {
        clients = (0..<size).map { _ in TestClient(host: "127.0.0.1", port: port, configuration: .init(timeout: .seconds(60))) }
        for c in clients { c.connect() }
    }

    func client() -> TestClient { clients[next.increment() % clients.count] }
}

final class ManagedAtomicCounter: @unchecked Sendable {
    private var value = 0
    private let lock = NSLock()
    func increment() -> Int { lock.lock(); defer { lock.unlock() }; value += 1; return value }
}

/// What one page view cost.
struct Cost: Sendable {
    var roundTrips = 0
    var requestBytes = 0
    var responseBytes = 0
}

func call(_ client: TestClient, _ method: HTTPRequest.Method, _ uri: String, token: String, body: [String: Any]? = nil,
          cost: inout Cost) async throws -> [String: Any] {
    let data = try body.map { try JSONSerialization.data(withJSONObject: $0) }
    var headers: HTTPFields = [.authorization: "Bearer \(token)"]
    if data != nil { headers[.contentType] = "application/json" }
    let response = try await client.execute(.init(uri, method: method, headers: headers, body: data.map { ByteBuffer(bytes: $0) }))
    let bytes = response.body.map { Data(buffer: $0) } ?? Data()
    guard response.status == .ok else {
        throw NSError(domain: "bench", code: Int(response.status.code), userInfo: [NSLocalizedDescriptionKey: "\(uri): \(String(decoding: bytes, as: UTF8.self))"])
    }
    cost.roundTrips += 1
    cost.requestBytes += (data?.count ?? 0) + uri.utf8.count
    cost.responseBytes += bytes.count
    return (try JSONSerialization.jsonObject(with: bytes) as? [String: Any]) ?? [:]
}

func post(_ client: TestClient, _ path: String, _ body: [String: Any], token: String = "", cost: inout Cost) async throws -> [String: Any] {
    try await call(client, .post, "/v1/" + path, token: token, body: body, cost: &cost)
}

// MARK: Seeding

struct World: Sendable {
    let viewerToken: String
    let groupID: String
    let memberIDs: [String]
    let conversationIDs: [String]
}

func seed(_ pool: Pool, _ db: any Database, messages: Int) async throws -> World {
    var cost = Cost()
    let c = pool.client()
    var tokens: [String] = []
    var ids: [String] = []
    for i in 0..<20 {
        let r = try await post(c, "users/Create", [
            "first_name": "Member \(i)", "last_name": "Bench", "email": "m\(i)-\(UUID().uuidString.prefix(6))@bench.test",
            "password": "benchmark-password",
        ], cost: &cost)
        tokens.append(r["token"] as! String)
        ids.append((r["user"] as! [String: Any])["id"] as! String)
    }
    let viewer = tokens[0]
    let group = try await post(c, "groups/Create", ["name": "Benchmark group"], token: viewer, cost: &cost)
    let groupID = (group["group"] as! [String: Any])["id"] as! String
    for id in ids.dropFirst() {
        _ = try await post(c, "groups/AddMember", ["group_id": groupID, "member_id": id], token: viewer, cost: &cost)
    }
    var conversations: [String] = []
    for i in 0..<10 {
        let r = try await post(c, "threads/CreateConversation", ["group_id": groupID, "topic": "Topic \(i)"], token: viewer, cost: &cost)
        conversations.append((r["conversation"] as! [String: Any])["id"] as! String)
    }
    // 100k messages straight into the threads service's table, in big transactions: going through
    // HTTP one by one would take minutes and measure nothing the benchmark is about.
    let start = Timestamp.now().microseconds / 1000 * 1000 - Int64(messages) * 1000
    let batch = 500
    var n = 0
    while n < messages {
        let count = min(batch, messages - n)
        let first = n
        try await db.write { [conversations, ids] tx in
            var values: [String] = []
            var binds: [any SQLBindable] = []
            for k in 0..<count {
                let i = first + k
                let p = binds.count
                values.append("($\(p + 1), $\(p + 2), $\(p + 3), $\(p + 4), $\(p + 5))")
                binds += ["bench-\(i)", conversations[i % conversations.count], ids[i % ids.count],
                          "Message number \(i) with a few words of text to search", start + Int64(i) * 1000]
            }
            try await tx.query(
                "INSERT INTO thread_messages (id, container_id, author_id, text, sent_at) VALUES \(values.joined(separator: ", "))",
                binds)
        }
        n += count
    }
    // A private chat between the viewer and every member, with a few messages each.
    for (i, id) in ids.enumerated().dropFirst() {
        let chat = try await post(c, "chats/CreateChat", ["user_ids": [id]], token: viewer, cost: &cost)
        let chatID = (chat["chat"] as! [String: Any])["id"] as! String
        for k in 0..<5 {
            _ = try await post(c, "chats/CreateMessage", ["chat_id": chatID, "text": "dm \(k)"], token: tokens[i], cost: &cost)
        }
    }
    _ = try await post(c, "seen/Set", ["resource_type": "thread", "resource_id": conversations[0]], token: viewer, cost: &cost)
    return World(viewerToken: viewer, groupID: groupID, memberIDs: ids, conversationIDs: conversations)
}

// MARK: The two ways

/// One call: `GET /api/groups/{id}`.
func onePage(_ w: World, _ c: TestClient) async throws -> Cost {
    var cost = Cost()
    _ = try await call(c, .get, "/api/groups/\(w.groupID)", token: w.viewerToken, cost: &cost)
    return cost
}

/// The same data the way the Distributed app's page gathered it: one call after another.
func individualCalls(_ w: World, _ c: TestClient) async throws -> Cost {
    var cost = Cost()
    let t = w.viewerToken
    let group = try await post(c, "groups/Read", ["ids": [w.groupID]], token: t, cost: &cost)
    let members = ((group["groups"] as! [String: Any])[w.groupID] as! [String: Any])["member_ids"] as! [String]
    _ = try await post(c, "users/Read", ["ids": members], token: t, cost: &cost)
    let list = try await post(c, "threads/ListConversations", ["group_id": w.groupID], token: t, cost: &cost)
    let conversations = (list["conversations"] as! [[String: Any]]).map { $0["id"] as! String }
    for id in conversations {
        _ = try await post(c, "threads/ListMessages", ["conversation_id": id, "limit": 25], token: t, cost: &cost)
    }
    _ = try await post(c, "seen/Read", ["resource_type": "thread", "resource_ids": conversations], token: t, cost: &cost)
    var chatIDs: [String] = []
    for m in members where m != w.memberIDs[0] {
        let chat = try await post(c, "chats/CreateChat", ["user_ids": [m]], token: t, cost: &cost)
        let id = (chat["chat"] as! [String: Any])["id"] as! String
        chatIDs.append(id)
        _ = try await post(c, "chats/ListMessages", ["chat_id": id, "limit": 25], token: t, cost: &cost)
    }
    _ = try await post(c, "seen/Read", ["resource_type": "chat", "resource_ids": chatIDs], token: t, cost: &cost)
    _ = try await post(c, "seen/Unread", [:], token: t, cost: &cost)
    return cost
}

/// Runs `view` at `rate` per second for `seconds`; latency from each scheduled start.
func measure(_ name: String, rate: Double, seconds: Double, pool: Pool,
             _ view: @escaping @Sendable (TestClient) async throws -> Cost) async throws -> String {
    let total = Int(rate * seconds)
    let interval = 1.0 / rate
    let start = ContinuousClock.now
    let results = try await withThrowingTaskGroup(of: (Double, Cost).self) { group in
        for i in 0..<total {
            let scheduled = start.advanced(by: .seconds(Double(i) * interval))
            try await Task.sleep(until: scheduled, clock: .continuous)
            group.addTask {
                let cost = try await view(pool.client())
                let d = scheduled.duration(to: .now)
                return (d.seconds * 1000, cost)
            }
        }
        var all: [(Double, Cost)] = []
        for try await r in group { all.append(r) }
        return all
    }
    let latencies = results.map(\.0).sorted()
    func pct(_ p: Double) -> Double { latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))] }
    let cost = results[0].1
    return String(
        format: "| %@ | %d | %d | %d | %.1f | %.1f | %.1f |",
        name, cost.roundTrips, cost.requestBytes, cost.responseBytes, pct(0.5), pct(0.99), latencies.last!)
}

// MARK: Main

let options = Options()
var config = AppConfiguration()
config.databaseURL = options.database
config.port = options.port
config.bcryptCost = 4
config.logLevel = .error
config.users.signupPerAddress = .init(burst: 1000, refillSeconds: 1)
config.gateway.requestTimeout = .seconds(60)
let app = try await Verteilt.build(config)
let server = Task { try await app.application.run() }
// Connect only once the server listens: a client whose first connect failed stays broken.
for _ in 0..<100 {
    let probe = TestClient(host: "127.0.0.1", port: options.port)
    probe.connect()
    let up = (try? await probe.get("/healthz")) != nil
    try? await probe.shutdown()
    if up { break }
    try await Task.sleep(for: .milliseconds(100))
}
let pool = Pool(port: options.port, size: 8)
let seedStart = ContinuousClock.now
let world = try await seed(pool, app.database, messages: options.messages)
print("seeded \(options.messages) messages in \(seedStart.duration(to: .now)) on \(app.database.dialect)")
// Warm up both paths (caches, prepared plans) before measuring.
for _ in 0..<20 {
    _ = try await onePage(world, pool.client())
    _ = try await individualCalls(world, pool.client())
}
print("\(options.rate) page views/s for \(options.seconds) s each, \(app.database.dialect), 20 members, 10 conversations")
print("| way | round trips | request bytes | response bytes | p50 ms | p99 ms | max ms |")
print("|---|---|---|---|---|---|---|")
print(try await measure("GET /api/groups/{id}", rate: options.rate, seconds: options.seconds, pool: pool) { try await onePage(world, $0) })
print(try await measure("individual /v1 calls", rate: options.rate, seconds: options.seconds, pool: pool) { try await individualCalls(world, $0) })
server.cancel()
exit(0)
