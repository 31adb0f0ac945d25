import App
import Foundation
import ServiceKit
import Testing
import TestSupport

/// What durable runs do after a deletion. These apps run workers, which wake on every commit:
/// `scripts/test` runs this suite with the other durable ones, not beside the ninety others.
@Suite("durable runs: what follows a deletion")
struct DurableRunsTests {
    static let withWorkers: @Sendable (inout AppConfiguration) -> Void = {
        $0.workers.enabled = true
        $0.workers.engine.pollInterval = .milliseconds(100)
    }

    /// A deleted account leaves its groups: one it owned passes to its longest-standing admin
    /// (else member), one nobody else is in goes with it.
    @Test(arguments: Backend.all)
    func aDeletedAccountLeavesItsGroups(_ backend: Backend) async throws {
        try await withTestApp(backend, configure: Self.withWorkers) { api in
            let f = try await api.fixture()
            let solo = try await api.post("groups/Create", ["name": "Just me"], token: f.owner.token)
            let soloID = try #require((solo["group"] as? [String: Any])?["id"] as? String)
            let other = try await api.post("groups/Create", ["name": "Book club"], token: f.member.token)
            let otherID = try #require((other["group"] as? [String: Any])?["id"] as? String)
            try await api.add(f.owner, to: otherID, by: f.member)

            for who in [f.owner, f.member] {
                #expect(try await api.post("seen/Set", ["resource_type": "thread", "resource_id": f.conversationID], token: who.token).status == .ok)
            }
            #expect(try await api.post("users/Delete", [:], token: f.owner.token).status == .ok)
            let key = try await api.serviceKey()
            func group(_ id: String) async throws -> [String: Any]? {
                (try await api.post("groups/Read", ["ids": [id]], token: key)["groups"] as? [String: Any])?[id] as? [String: Any]
            }
            try await eventually("the owner's group handed on", seconds: 30) {
                try await group(f.groupID)?["owner_id"] as? String == f.admin.id
            }
            let inherited = try #require(try await group(f.groupID))
            #expect((inherited["member_ids"] as? [String])?.contains(f.owner.id) == false)
            #expect((inherited["admin_ids"] as? [String])?.contains(f.admin.id) == true)
            try await eventually("the group with nobody else gone", seconds: 30) { try await group(soloID) == nil }
            let stays = try #require(try await group(otherID))
            #expect(stays["owner_id"] as? String == f.member.id)
            #expect((stays["member_ids"] as? [String]) == [f.member.id])
            // The members were told.
            let told = try await api.database.read { conn in
                try await conn.query("SELECT type FROM events WHERE payload LIKE $1 ORDER BY seq", "%\(f.owner.id)%").map { try $0.string("type") }
            }
            #expect(told.filter { $0 == "member.left" }.count == 2, "\(told)")
            // Its read marks went, the others' stay.
            @Sendable func marks(_ user: String) async throws -> Int {
                try await api.database.read { conn in
                    Int(try await conn.first("SELECT COUNT(*) AS n FROM seen WHERE user_id = $1", user)?.int("n") ?? -1)
                }
            }
            try await eventually("the account's read marks gone", seconds: 30) { try await marks(f.owner.id) == 0 }
            #expect(try await marks(f.member.id) == 1)
        }
    }


    /// A deleted group's conversations and messages are deleted with it.
    @Test(arguments: Backend.all)
    func aDeletedGroupsConversationsGoWithIt(_ backend: Backend) async throws {
        try await withTestApp(backend, configure: Self.withWorkers) { api in
            let f = try await api.fixture()
            for i in 0..<3 { try await api.say("before \(i)", in: f.conversationID, as: f.member) }
            let other = try await api.fixture()
            try await api.say("elsewhere", in: other.conversationID, as: other.member)
            // Read marks and invites that point at the group, and the same elsewhere.
            for (g, conversation, member, owner) in [(f.groupID, f.conversationID, f.member, f.owner),
                                                     (other.groupID, other.conversationID, other.member, other.owner)] {
                #expect(try await api.post("seen/Set", ["resource_type": "thread", "resource_id": conversation], token: member.token).status == .ok)
                #expect(try await api.post("invites/Create", ["group_id": g], token: owner.token).status == .ok)
            }
            #expect(try await api.post("groups/Delete", ["id": f.groupID], token: f.owner.token).status == .ok)
            @Sendable func count(_ sql: String, _ key: String) async throws -> Int {
                try await api.database.read { conn -> Int in
                    guard let row = try await conn.first(sql, key) else { return -1 }
                    return Int(try row.int("n"))
                }
            }
            let conversations = "SELECT COUNT(*) AS n FROM conversations WHERE group_id = $1"
            let messages = "SELECT COUNT(*) AS n FROM thread_messages m JOIN conversations c ON c.id = m.container_id WHERE c.group_id = $1"
            try await eventually("the conversations gone", seconds: 30) { try await count(conversations, f.groupID) == 0 }
            #expect(try await count("SELECT COUNT(*) AS n FROM thread_messages WHERE container_id = $1", f.conversationID) == 0)
            let marks = "SELECT COUNT(*) AS n FROM seen WHERE resource_id = $1"
            let invites = "SELECT COUNT(*) AS n FROM invites WHERE group_id = $1"
            #expect(try await count(marks, f.conversationID) == 0)
            #expect(try await count(invites, f.groupID) == 0)
            // Another group's stay.
            #expect(try await count(conversations, other.groupID) == 1)
            #expect(try await count(messages, other.groupID) == 1)
            #expect(try await count(marks, other.conversationID) == 1)
            #expect(try await count(invites, other.groupID) == 1)
        }
    }
}
