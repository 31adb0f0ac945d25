import Foundation
import Testing
import TestSupport

@Suite("search over what the caller may read")
struct SearchTests {
    @Test(arguments: Backend.all)
    func findsWordsInReadableMessagesOnly(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let f = try await api.fixture()
            try await api.say("Pizza tonight at Luigi's?", in: f.conversationID, as: f.member, id: "p1")
            try await api.say("I prefer sushi", in: f.conversationID, as: f.owner, id: "s1")
            try await api.say("PIZZA again, why not", in: f.conversationID, as: f.admin, id: "p2")
            try await api.say("Straße café naïve", in: f.conversationID, as: f.admin, id: "u1")
            // Another group the member is not in.
            let other = try await api.createGroup(f.stranger, name: "Other")
            let oc = try await api.post("threads/CreateConversation", ["group_id": other, "topic": "x"], token: f.stranger.token)
            try await api.say("pizza for strangers", in: (oc["conversation"] as! [String: Any])["id"] as! String, as: f.stranger)

            func ids(_ query: String, _ token: String, _ extra: [String: Any] = [:]) async throws -> [String] {
                let r = try await api.post("threads/Search", ["query": query].merging(extra) { $1 }, token: token)
                #expect(r.status == .ok, "\(r.text)")
                return (r["messages"] as? [[String: Any]])?.compactMap { $0["id"] as? String } ?? []
            }
            #expect(try await ids("pizza", f.member.token) == ["p2", "p1"])
            #expect(try await ids("pizza tonight", f.member.token) == ["p1"])
            #expect(try await ids("café", f.member.token) == ["u1"])
            #expect(try await ids("pizza", f.member.token, ["group_id": f.groupID]) == ["p2", "p1"])
            #expect(try await api.post("threads/Search", ["query": "pizza", "group_id": other], token: f.member.token).status == .notFound)
            // Query syntax is never interpreted.
            for hostile in ["\"", "pizza OR sushi", "NEAR(pizza", "*", "pizza AND", "'; DROP TABLE x; --", ""] {
                let r = try await api.post("threads/Search", ["query": hostile], token: f.member.token)
                #expect(r.status == .ok, "\(hostile): \(r.text)")
            }
            // Edits are re-indexed, deletions drop out.
            _ = try await api.post("threads/UpdateMessage", ["id": "s1", "text": "fine, pizza"], token: f.owner.token)
            #expect(try await ids("sushi", f.member.token).isEmpty)
            #expect(try await ids("pizza", f.member.token) == ["p2", "s1", "p1"])
            _ = try await api.post("threads/DeleteMessage", ["id": "p2"], token: f.admin.token)
            #expect(try await ids("pizza", f.member.token) == ["s1", "p1"])
            #expect(try await api.post("threads/Search", ["query": "pizza", "limit": 500], token: f.member.token).status == .badRequest)
        }
    }

    @Test(arguments: Backend.all)
    func chatsSearchTheCallersChats(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let f = try await api.fixture()
            let c = try #require(try await api.post("chats/CreateChat", ["user_ids": [f.member.id]], token: f.owner.token)["chat"] as? [String: Any])
            _ = try await api.post("chats/CreateMessage", ["chat_id": c["id"] as! String, "text": "secret plans"], token: f.owner.token)
            let mine = try await api.post("chats/Search", ["query": "plans"], token: f.member.token)
            #expect((mine["messages"] as? [Any])?.count == 1)
            let theirs = try await api.post("chats/Search", ["query": "plans"], token: f.admin.token)
            #expect((theirs["messages"] as? [Any])?.isEmpty == true)
        }
    }
}
