import Foundation
import NIOConcurrencyHelpers
import Testing
import TestSupport

@Suite("realtime: several nodes, and a server killed mid-stream", .serialized)
struct NodesAndFaultsTests {
    /// Two server processes on one PostgreSQL: what commits through one reaches sockets on the other.
    @Test func eventsCrossNodesOnPostgreSQL() async throws {
        guard Backend.all.contains(.postgres) else { return }
        let db = try await TestDatabase.make(.postgres)
        let a = ServerProcess(database: db.url), b = ServerProcess(database: db.url)
        defer { a.stop(); b.stop() }
        try await a.start()
        try await b.start()
        let ada = try await ProcessUser.signUp(a, "Ada")
        let bob = try await ProcessUser.signUp(b, "Bob")
        let g = try await a.post("groups/Create", ["name": "Nodes"], token: ada.token)
        let groupID = (g["group"] as! [String: Any])["id"] as! String
        _ = try await a.post("groups/AddMember", ["group_id": groupID, "member_id": bob.id], token: ada.token)
        let c = try await a.post("threads/CreateConversation", ["group_id": groupID, "topic": "x"], token: ada.token)
        let conversation = (c["conversation"] as! [String: Any])["id"] as! String

        let onB = try await WSClient(port: b.port, path: "/v1/events", headers: [.authorization: "Bearer \(bob.token)"])
        let onA = try await WSClient(port: a.port, path: "/v1/events", headers: [.authorization: "Bearer \(ada.token)"])
        _ = try await onB.next()
        _ = try await onA.next()
        _ = try await a.post("threads/CreateMessage", ["conversation_id": conversation, "text": "via A", "id": "xa"], token: ada.token)
        let got = try await onB.next(where: { $0["event"] as? String == "message.created" })
        #expect((got["data"] as? [String: Any])?["id"] as? String == "xa")
        _ = try await b.post("threads/CreateMessage", ["conversation_id": conversation, "text": "via B", "id": "xb"], token: bob.token)
        let back = try await onA.next(where: { ($0["data"] as? [String: Any])?["id"] as? String == "xb" })
        #expect(back["event"] as? String == "message.created")
        // Never stored, still across nodes: typing goes through NOTIFY.
        try await onA.send(#"{"type":"typing","conversation_id":"\#(conversation)"}"#)
        let typing = try await onB.next(where: { $0["type"] as? String == "typing" })
        #expect(typing["user_id"] as? String == ada.id)
        await onA.close()
        await onB.close()
        a.stop()
        b.stop()
        try await db.drop()
    }

    /// kill -9 while senders post and clients receive; restart; clients resume from their cursors:
    /// every acknowledged message arrives at every member exactly once and in order.
    @Test(arguments: Backend.all)
    func killedServerLosesNothing(_ backend: Backend) async throws {
        let db = try await TestDatabase.make(backend)
        let server = ServerProcess(database: db.url)
        defer { server.stop() }
        try await server.start()
        let ada = try await ProcessUser.signUp(server, "Ada")
        let bob = try await ProcessUser.signUp(server, "Bob")
        let g = try await server.post("groups/Create", ["name": "Faults"], token: ada.token)
        let groupID = (g["group"] as! [String: Any])["id"] as! String
        _ = try await server.post("groups/AddMember", ["group_id": groupID, "member_id": bob.id], token: ada.token)
        let c = try await server.post("threads/CreateConversation", ["group_id": groupID, "topic": "x"], token: ada.token)
        let conversation = (c["conversation"] as! [String: Any])["id"] as! String

        let total = 60
        let receivers = [ada, bob].map { Receiver(user: $0, port: server.port) }
        let tasks = receivers.map { r in Task { await r.run(until: total) } }
        while receivers.contains(where: { !$0.isConnected }) { try await Task.sleep(for: .milliseconds(20)) }

        // The sender retries each message with its id until the server acknowledges it.
        var acknowledged: [String] = []
        for i in 0..<total {
            let id = "fault-\(i)"
            while true {
                do {
                    _ = try await server.post("threads/CreateMessage", ["conversation_id": conversation, "text": "m\(i)", "id": id], token: ada.token)
                    break
                } catch {
                    try await Task.sleep(for: .milliseconds(50))
                }
            }
            acknowledged.append(id)
            if i == total / 3 {
                server.kill9()
                try await Task.sleep(for: .milliseconds(300))
                try await server.start()
            }
        }
        for t in tasks { await t.value }
        for r in receivers {
            let got = r.messageIDs
            #expect(got == acknowledged, "\(r.user.id): \(got.count) of \(acknowledged.count)")
        }
        server.stop()
        try await db.drop()
    }
}

/// A client that keeps its feed open across server deaths, resuming from its last cursor.
final class Receiver: Sendable {
    let user: ProcessUser
    let port: Int
    private let state = NIOLockedValueBox<(ids: [String], cursor: Int?)>(([], nil))

    init(user: ProcessUser, port: Int) {
        self.user = user
        self.port = port
    }

    var messageIDs: [String] { state.withLockedValue { $0.ids } }
    var isConnected: Bool { state.withLockedValue { $0.cursor != nil } }

    func run(until count: Int) async {
        let deadline = ContinuousClock.now.advanced(by: .seconds(60))
        while messageIDs.count < count && ContinuousClock.now < deadline {
            let since = state.withLockedValue { $0.cursor }.map { "?since=\($0)" } ?? ""
            guard let feed = try? await WSClient(port: port, path: "/v1/events" + since, headers: [.authorization: "Bearer \(user.token)"]) else {
                try? await Task.sleep(for: .milliseconds(100))
                continue
            }
            while messageIDs.count < count {
                guard let frame = try? await feed.next(timeout: .seconds(2)) else { break }
                guard let cursor = frame["cursor"] as? Int else { continue }
                state.withLockedValue { s in
                    if frame["event"] as? String == "message.created", let id = (frame["data"] as? [String: Any])?["id"] as? String {
                        s.ids.append(id)
                    }
                    if frame["type"] as? String == "event" || s.cursor == nil { s.cursor = cursor }
                }
            }
            await feed.close()
        }
    }
}
