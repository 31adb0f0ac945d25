import App
import Foundation
import HTTPTypes
import Testing
import TestSupport

@Suite("emails: the unread digest")
struct UnreadDigestTests {
    @Test(arguments: Backend.all)
    func unreadChatMessagesAreMailedOnceAndReadOnesAreNot(_ backend: Backend) async throws {
        try await withTestApp(backend, configure: { config in
            config.mail.unreadDigest = true
            config.workers.enabled = true
            config.mail.digestDelay = .seconds(1)
            config.mail.publicURL = "https://chat.example.org"
            config.workers.engine.pollInterval = .milliseconds(100)
        }) { api in
            let f = try await api.fixture()
            let key = try await api.serviceKey()
            // The digests only: every sign-up also gets a verification mail.
            func mails(to account: APIClient.Account) async throws -> [[String: Any]] {
                ((try await api.post("mail/List", ["to": account.email], token: key)["mails"] as? [[String: Any]]) ?? [])
                    .filter { !(($0["subject"] as? String)?.hasPrefix("Confirm your email") ?? false) }
            }
            let created = try await api.post("chats/CreateChat", ["user_ids": [f.member.id]], token: f.owner.token)
            let chat = try #require((created["chat"] as? [String: Any])?["id"] as? String)
            func say(_ text: String) async throws {
                let r = try await api.post("chats/CreateMessage", ["chat_id": chat, "text": text], token: f.owner.token)
                #expect(r.status == .ok)
            }

            // A burst the member does not read: one digest with all of it, after the delay.
            let start = Date()
            try await say("Are you coming tonight?")
            try await say("We meet at 8")
            try await say("Bring <snacks> & drinks")
            let early = try await mails(to: f.member)
            if Date().timeIntervalSince(start) < 0.9 { #expect(early.isEmpty, "not before the delay") }
            try await eventually("the digest", seconds: 30) { try await mails(to: f.member).count == 1 }
            let digest = try await mails(to: f.member)[0]
            #expect(digest["subject"] as? String == "3 unread messages")
            let text = try #require(digest["text"] as? String)
            #expect(text.contains("Owner User: Are you coming tonight?"))
            #expect(text.contains("Owner User: We meet at 8"))
            #expect(text.contains("https://chat.example.org/chats"))
            #expect((digest["html"] as? String)?.contains("Bring &lt;snacks&gt; &amp; drinks") == true)
            try await Task.sleep(for: .seconds(2))
            #expect(try await mails(to: f.member).count == 1, "a burst gives one mail")
            #expect(try await mails(to: f.owner).isEmpty, "the author gets none")

            // Read within the delay: no mail.
            try await say("Never mind")
            let seen = try await api.post("seen/Set", ["resource_type": "chat", "resource_id": chat], token: f.member.token)
            #expect(seen.status == .ok)
            try await Task.sleep(for: .seconds(3))
            #expect(try await mails(to: f.member).count == 1)
            let runs = try await api.post("workflows/ListRuns", ["function_id": "unread-digest"], token: key)
            let statuses = ((runs["runs"] as? [[String: Any]]) ?? []).compactMap { $0["status"] as? String }
            #expect(statuses.count == 4 && statuses.allSatisfy { $0 == "completed" }, "\(statuses)")
        }
    }
}
