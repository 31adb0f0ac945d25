import Foundation
import Testing
import TestSupport

@Suite("the group page in one round trip")
struct GroupPageTests {
    @Test(arguments: Backend.all)
    func pageHasEverythingTheScreenShows(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let f = try await api.fixture()
            for i in 0..<30 { try await api.say("t\(i)", in: f.conversationID, as: f.member) }
            let chat = try #require(try await api.post("chats/CreateChat", ["user_ids": [f.member.id]], token: f.owner.token)["chat"] as? [String: Any])
            _ = try await api.post("chats/CreateMessage", ["chat_id": chat["id"] as! String, "text": "hi owner"], token: f.member.token)
            let head = try await api.database.read { try await $0.first("SELECT MAX(seq) AS s FROM events") }?.int("s")

            let r = try await api.request("/api/groups/\(f.groupID)", method: .get, token: f.owner.token)
            #expect(r.status == .ok)
            let page = r.json
            #expect(page["id"] as? String == f.groupID)
            #expect(page["name"] as? String == "Friends")
            #expect(page["role"] as? String == "owner")
            #expect((page["cursor"] as? Int).map(Int64.init) == head)
            let members = try #require(page["members"] as? [[String: Any]])
            #expect(members.count == 3)
            let me = try #require(members.first { $0["id"] as? String == f.owner.id })
            #expect(me["current_user"] as? Bool == true && me["chat"] == nil)
            let m = try #require(members.first { $0["id"] as? String == f.member.id })
            #expect(m["email"] as? String == f.member.email)
            #expect(m["current_user"] as? Bool == false)
            let mchat = try #require(m["chat"] as? [String: Any])
            #expect(mchat["id"] as? String == chat["id"] as? String)
            #expect(mchat["unread"] as? Int == 1)
            #expect((mchat["messages"] as? [[String: Any]])?.first?["text"] as? String == "hi owner")
            #expect(members.first { $0["id"] as? String == f.admin.id }?["role"] as? String == "admin")
            let threads = try #require(page["threads"] as? [[String: Any]])
            #expect(threads.count == 1)
            #expect(threads[0]["topic"] as? String == "General")
            #expect(threads[0]["unread"] as? Int == 30)
            let messages = try #require(threads[0]["messages"] as? [[String: Any]])
            #expect(messages.count == 25)
            #expect(messages.first?["text"] as? String == "t29")

            // Reading moves last_seen and unread.
            _ = try await api.post("seen/Set", ["resource_type": "thread", "resource_id": f.conversationID], token: f.owner.token)
            let again = try await api.request("/api/groups/\(f.groupID)", method: .get, token: f.owner.token)
            let t = try #require((again.json["threads"] as? [[String: Any]])?.first)
            #expect(t["unread"] as? Int == 0 && t["last_seen"] is String)
        }
    }

    @Test(arguments: Backend.all)
    func fieldsSelectParts(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let f = try await api.fixture()
            let threadsOnly = try await api.request("/api/groups/\(f.groupID)?fields=threads", method: .get, token: f.member.token)
            #expect(threadsOnly.json["threads"] != nil && threadsOnly.json["members"] == nil)
            let membersOnly = try await api.request("/api/groups/\(f.groupID)?fields=members", method: .get, token: f.member.token)
            #expect(membersOnly.json["members"] != nil && membersOnly.json["threads"] == nil)
            let bad = try await api.request("/api/groups/\(f.groupID)?fields=secrets", method: .get, token: f.member.token)
            #expect(bad.status == .badRequest)
            #expect(bad.isErrorShape)
        }
    }

    @Test(arguments: Backend.all)
    func onlyMembersSeeThePage(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let f = try await api.fixture()
            let anon = try await api.request("/api/groups/\(f.groupID)", method: .get)
            #expect(anon.status == .unauthorized && anon.isErrorShape)
            let stranger = try await api.request("/api/groups/\(f.groupID)", method: .get, token: f.stranger.token)
            let missing = try await api.request("/api/groups/nope", method: .get, token: f.stranger.token)
            #expect(stranger.status == .notFound && missing.status == .notFound && stranger.detail == missing.detail)
            let cookie = try await api.request("/api/groups/\(f.groupID)", method: .get, headers: [.cookie: "verteilt_session=\(f.member.token)"])
            #expect(cookie.status == .ok)
        }
    }
}
