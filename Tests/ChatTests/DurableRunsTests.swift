import App
import Foundation
import ServiceKit
import Storage
import Testing
import TestSupport

/// What durable runs do after a deletion. These apps run workers, which wake on every commit:
/// `scripts/test` runs this suite with the other durable ones, not beside the ninety others.
@Suite("durable runs: what follows a deletion")
struct DurableRunsTests {
    static let withWorkers: @Sendable (inout AppConfiguration) -> Void = {
        $0.workers.enabled = true
        $0.workers.engine.pollInterval = .milliseconds(100)
        $0.workers.lateWritesSettle = Self.settle
    }
    /// How long removal runs wait before they look again for late writes: long enough that a
    /// test writes "late" before the second look, short enough to wait for.
    static let settle: Duration = .seconds(10)

    /// Writes as a request that was let through just before a deletion, and committed after the
    /// removal run's first pass, would; and checks that `function`'s second look is still to come
    /// (else a host too slow for this test, not a fault of the removal, made it fail).
    static func writeLate(_ api: APIClient, before function: String, _ sql: String, _ values: any SQLBindable...) async throws {
        try await api.database.write { tx in try await tx.query(sql, values) }
        // The wait before the second look is marked done before that look starts (no row yet:
        // the run has not reached the wait).
        let waiting = try await api.database.read { conn in
            try await conn.first(
                """
                SELECT s.status FROM workflow_steps s JOIN workflow_runs r ON r.id = s.run_id
                WHERE r.function_id = $1 AND s.name = 'requests-under-way'
                """, function)?.string("status")
        }
        #expect(waiting != "completed", "the test wrote after the second look of \(function): too slow a host for this test")
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

            // A join and a read mark of the account land after that first pass: the run's second
            // look, once the requests under way have ended, takes them away.
            try await Self.writeLate(
                api, before: "account-removal", "INSERT INTO group_members (group_id, user_id, role, joined_at) VALUES ($1, $2, 'member', $3)",
                otherID, f.owner.id, Timestamp.now())
            try await Self.writeLate(
                api, before: "account-removal", "INSERT INTO seen (user_id, resource_type, resource_id, seen_at) VALUES ($1, 'thread', $2, $3)",
                f.owner.id, f.conversationID, Timestamp.now())
            try await eventually("the late join undone", seconds: 30) {
                (try await group(otherID)?["member_ids"] as? [String]) == [f.member.id]
            }
            try await eventually("the late read mark gone", seconds: 30) { try await marks(f.owner.id) == 0 }
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

            // A conversation, an invite and read marks that requests let through just before the
            // deletion wrote after the first pass: the second look takes them away.
            let now = Timestamp.now()
            try await Self.writeLate(
                api, before: "group-removal", "INSERT INTO conversations (id, group_id, topic, created_by, created_at, updated_at) VALUES ('late-c', $1, 'Late', $2, $3, $3)",
                f.groupID, f.member.id, now)
            try await Self.writeLate(
                api, before: "group-removal", "INSERT INTO invites (id, group_id, email, email_lower, code, inviter_id, created_at) VALUES ('late-i', $1, 'x@example.com', 'x@example.com', 'late-code', $2, $3)",
                f.groupID, f.owner.id, now)
            for conversation in [f.conversationID, "late-c"] {
                try await Self.writeLate(
                    api, before: "group-removal", "INSERT INTO seen (user_id, resource_type, resource_id, seen_at) VALUES ($1, 'thread', $2, $3)",
                    f.admin.id, conversation, now)
            }
            try await eventually("the late conversation gone", seconds: 30) { try await count(conversations, f.groupID) == 0 }
            try await eventually("the late invite gone", seconds: 30) { try await count(invites, f.groupID) == 0 }
            try await eventually("the late read marks gone", seconds: 30) {
                let (kept, late) = (try await count(marks, f.conversationID), try await count(marks, "late-c"))
                return kept == 0 && late == 0
            }
            // Another group's stay.
            #expect(try await count(conversations, other.groupID) == 1)
            #expect(try await count(messages, other.groupID) == 1)
            #expect(try await count(marks, other.conversationID) == 1)
            #expect(try await count(invites, other.groupID) == 1)
        }
    }

    /// A deleted conversation's read marks go, everyone's, and again after the requests under
    /// way when it went have ended; other conversations' stay.
    @Test(arguments: Backend.all)
    func aDeletedConversationsReadMarksGoWithIt(_ backend: Backend) async throws {
        try await withTestApp(backend, configure: Self.withWorkers) { api in
            let f = try await api.fixture()
            let other = try await api.createConversation(in: f.groupID, topic: "Stays", by: f.owner)
            for who in [f.owner, f.member] {
                for c in [f.conversationID, other] {
                    #expect(try await api.post("seen/Set", ["resource_type": "thread", "resource_id": c], token: who.token).status == .ok)
                }
            }
            @Sendable func marks(_ conversation: String) async throws -> Int {
                try await api.database.read { conn in
                    Int(try await conn.first("SELECT COUNT(*) AS n FROM seen WHERE resource_id = $1", conversation)?.int("n") ?? -1)
                }
            }
            #expect(try await api.post("threads/DeleteConversation", ["id": f.conversationID], token: f.owner.token).status == .ok)
            try await eventually("the read marks gone", seconds: 30) { try await marks(f.conversationID) == 0 }
            try await Self.writeLate(
                api, before: "conversation-removal", "INSERT INTO seen (user_id, resource_type, resource_id, seen_at) VALUES ($1, 'thread', $2, $3)",
                f.admin.id, f.conversationID, Timestamp.now())
            try await eventually("the late read mark gone", seconds: 30) { try await marks(f.conversationID) == 0 }
            #expect(try await marks(other) == 2)
        }
    }
}
