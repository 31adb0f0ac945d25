import Foundation
import Testing
import TestSupport

@Suite("chats and seen")
struct ChatsAndSeenTests {
    @Test(arguments: Backend.all)
    func theSameSetGetsTheSameChat(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let f = try await api.fixture()
            let a = try await api.post("chats/CreateChat", ["user_ids": [f.member.id]], token: f.owner.token)
            #expect(a.status == .ok)
            let chat = try #require(a["chat"] as? [String: Any])
            #expect((chat["user_ids"] as? [String])?.sorted() == [f.owner.id, f.member.id].sorted())
            let b = try await api.post("chats/CreateChat", ["user_ids": [f.owner.id, f.member.id]], token: f.member.token)
            #expect((b["chat"] as? [String: Any])?["id"] as? String == chat["id"] as? String)
            // Strangers and unknown users are refused alike.
            let s = try await api.post("chats/CreateChat", ["user_ids": [f.stranger.id]], token: f.owner.token)
            let u = try await api.post("chats/CreateChat", ["user_ids": ["nobody"]], token: f.owner.token)
            #expect(s.status == .forbidden && u.status == .forbidden && s.detail == u.detail)
            #expect(try await api.post("chats/CreateChat", ["user_ids": []], token: f.owner.token).status == .badRequest)
            let group = try await api.post("chats/CreateChat", ["user_ids": [f.member.id, f.admin.id]], token: f.owner.token)
            #expect((group["chat"] as? [String: Any])?["id"] as? String != chat["id"] as? String)
        }
    }

    /// Two people opening their chat at the same moment get the one chat, not a conflict.
    @Test(arguments: Backend.all)
    func bothSidesOpeningAChatAtOnceGetTheSameOne(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let f = try await api.fixture()
            let answers = try await withThrowingTaskGroup(of: (Int, String?).self) { group in
                for i in 0..<8 {
                    let (me, other) = i % 2 == 0 ? (f.owner, f.member) : (f.member, f.owner)
                    group.addTask {
                        let r = try await api.postConcurrently("chats/CreateChat", ["user_ids": [other.id]], token: me.token)
                        return (r.status.code, (r["chat"] as? [String: Any])?["id"] as? String)
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(answers.allSatisfy { $0.0 == 200 }, "\(answers)")
            #expect(Set(answers.compactMap(\.1)).count == 1)
        }
    }

    @Test(arguments: Backend.all)
    func onlyParticipantsReadAndWrite(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let f = try await api.fixture()
            let c = try await api.post("chats/CreateChat", ["user_ids": [f.member.id]], token: f.owner.token)
            let chatID = try #require((c["chat"] as? [String: Any])?["id"] as? String)
            let m = try await api.post("chats/CreateMessage", ["chat_id": chatID, "text": "psst", "id": "p1"], token: f.member.token)
            #expect((m["message"] as? [String: Any])?["chat_id"] as? String == chatID)
            let again = try await api.post("chats/CreateMessage", ["chat_id": chatID, "text": "psst", "id": "p1"], token: f.member.token)
            #expect((again["message"] as? [String: Any])?["sent_at"] as? String == (m["message"] as? [String: Any])?["sent_at"] as? String)
            let list = try await api.post("chats/ListMessages", ["chat_id": chatID], token: f.owner.token)
            #expect((list["messages"] as? [Any])?.count == 1)
            // An admin of the group is still not part of a private chat.
            for token in [f.admin.token, f.stranger.token] {
                #expect(try await api.post("chats/ListMessages", ["chat_id": chatID], token: token).status == .notFound)
                #expect(try await api.post("chats/CreateMessage", ["chat_id": chatID, "text": "hi"], token: token).status == .notFound)
                #expect(try await api.post("chats/DeleteMessage", ["id": "p1"], token: token).status == .notFound)
            }
            #expect(try await api.post("chats/UpdateMessage", ["id": "p1", "text": "x"], token: f.owner.token).status == .forbidden)
            #expect(try await api.post("chats/DeleteMessage", ["id": "p1"], token: f.owner.token).status == .forbidden)
            #expect(try await api.post("chats/AddReaction", ["message_id": "p1", "emoji": "🙂"], token: f.owner.token).status == .ok)
            #expect(try await api.post("chats/DeleteMessage", ["id": "p1"], token: f.member.token).status == .ok)
        }
    }

    @Test(arguments: Backend.all)
    func chatsListNewestActivityFirst(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let f = try await api.fixture()
            let c1 = try #require(try await api.post("chats/CreateChat", ["user_ids": [f.member.id]], token: f.owner.token)["chat"] as? [String: Any])
            let c2 = try #require(try await api.post("chats/CreateChat", ["user_ids": [f.admin.id]], token: f.owner.token)["chat"] as? [String: Any])
            _ = try await api.post("chats/CreateMessage", ["chat_id": c1["id"] as! String, "text": "newer"], token: f.owner.token)
            let list = try await api.post("chats/List", token: f.owner.token)
            let ids = (list["chats"] as? [[String: Any]])?.map { $0["id"] as? String }
            #expect(ids == [c1["id"] as? String, c2["id"] as? String])
            #expect((list["chats"] as? [[String: Any]])?.first?["last_message_at"] is String)
            #expect(try await api.post("chats/List", ["user_id": f.member.id], token: f.owner.token).status == .forbidden)
        }
    }

    @Test(arguments: Backend.all)
    func seenNeverMovesBackwardsAndCountsUnread(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let f = try await api.fixture()
            let m1 = try await api.say("one", in: f.conversationID, as: f.owner)
            try await api.say("two", in: f.conversationID, as: f.owner)
            try await api.say("mine", in: f.conversationID, as: f.member)
            var unread = try await api.post("seen/Unread", token: f.member.token)
            #expect((unread["threads"] as? [String: Int])?[f.conversationID] == 2)  // own messages do not count

            let t1 = try #require(m1["sent_at"] as? String)
            #expect(try await api.post("seen/Set", ["resource_type": "thread", "resource_id": f.conversationID, "timestamp": t1], token: f.member.token).status == .ok)
            unread = try await api.post("seen/Unread", token: f.member.token)
            #expect((unread["threads"] as? [String: Int])?[f.conversationID] == 1)
            // An older mark does not move it back.
            _ = try await api.post("seen/Set", ["resource_type": "thread", "resource_id": f.conversationID, "timestamp": "2020-01-01T00:00:00Z"], token: f.member.token)
            let read = try await api.post("seen/Read", ["resource_type": "thread", "resource_ids": [f.conversationID]], token: f.member.token)
            #expect((read["timestamps"] as? [String: String])?[f.conversationID] == t1)
            // Now (the default) clears it.
            _ = try await api.post("seen/Set", ["resource_type": "thread", "resource_id": f.conversationID], token: f.member.token)
            unread = try await api.post("seen/Unread", token: f.member.token)
            #expect((unread["threads"] as? [String: Int])?[f.conversationID] == 0)
            // Unset makes everything unread again.
            _ = try await api.post("seen/Unset", ["resource_type": "thread", "resource_id": f.conversationID], token: f.member.token)
            unread = try await api.post("seen/Unread", token: f.member.token)
            #expect((unread["threads"] as? [String: Int])?[f.conversationID] == 2)
            // Chats count the same way.
            let c = try #require(try await api.post("chats/CreateChat", ["user_ids": [f.member.id]], token: f.owner.token)["chat"] as? [String: Any])
            _ = try await api.post("chats/CreateMessage", ["chat_id": c["id"] as! String, "text": "dm"], token: f.owner.token)
            unread = try await api.post("seen/Unread", token: f.member.token)
            #expect((unread["chats"] as? [String: Int])?[c["id"] as! String] == 1)
        }
    }

    @Test(arguments: Backend.all)
    func seenChecksWhoMayRead(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let f = try await api.fixture()
            let r = try await api.post("seen/Set", ["resource_type": "thread", "resource_id": f.conversationID], token: f.stranger.token)
            #expect(r.status == .notFound)
            #expect(try await api.post("seen/Set", ["resource_type": "thread", "resource_id": f.conversationID, "user_id": f.owner.id], token: f.member.token).status == .forbidden)
            let badType = try await api.post("seen/Set", ["resource_type": "page", "resource_id": f.conversationID], token: f.member.token)
            #expect(badType.status == .badRequest)
            #expect(badType.detail.hasPrefix("resource_type:"))
        }
    }
}
