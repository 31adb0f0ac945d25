import Foundation
import ServiceKit
import Testing
import TestSupport

@Suite("threads: conversations and messages")
struct ThreadsTests {
    @Test(arguments: Backend.all)
    func conversationsBelongToMembers(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let f = try await api.fixture()
            let c = try await api.post("threads/CreateConversation", ["group_id": f.groupID, "topic": "Plans"], token: f.member.token)
            #expect(c.status == .ok)
            let id = try #require((c["conversation"] as? [String: Any])?["id"] as? String)
            let list = try await api.post("threads/ListConversations", ["group_id": f.groupID], token: f.member.token)
            #expect((list["conversations"] as? [[String: Any]])?.map { $0["topic"] as? String } == ["General", "Plans"])
            #expect(try await api.post("threads/ReadConversation", ["id": id], token: f.owner.token).status == .ok)
            #expect(try await api.post("threads/ReadConversation", ["id": id, "group_id": "other"], token: f.owner.token).status == .notFound)
            #expect(try await api.post("threads/ReadConversation", ["id": id], token: f.stranger.token).status == .notFound)
            // Its creator or an admin renames or deletes it; another member may not.
            #expect(try await api.post("threads/UpdateConversation", ["id": f.conversationID, "topic": "x"], token: f.member.token).status == .forbidden)
            let renamed = try await api.post("threads/UpdateConversation", ["id": id, "topic": "Trips"], token: f.member.token)
            #expect((renamed["conversation"] as? [String: Any])?["topic"] as? String == "Trips")
            #expect(try await api.post("threads/DeleteConversation", ["id": f.conversationID], token: f.member.token).status == .forbidden)
            #expect(try await api.post("threads/DeleteConversation", ["id": id], token: f.admin.token).status == .ok)
            #expect(try await api.post("threads/ReadConversation", ["id": id], token: f.owner.token).status == .notFound)
        }
    }

    /// A group has at most 500 conversations (its page and unread counts read them all at once).
    @Test(arguments: Backend.all)
    func aGroupHasAtMost500Conversations(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let f = try await api.fixture()
            // The fixture's "General" and 498 more, written straight to the table.
            try await api.database.write { tx in
                for i in 0..<498 {
                    try await tx.query(
                        "INSERT INTO conversations (id, group_id, topic, created_by, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)",
                        "filler-\(i)", f.groupID, "Topic \(i)", f.owner.id, Timestamp.now())
                }
            }
            let last = try await api.post("threads/CreateConversation", ["group_id": f.groupID, "topic": "The 500th"], token: f.member.token)
            #expect(last.status == .ok)
            let over = try await api.post("threads/CreateConversation", ["group_id": f.groupID, "topic": "One too many"], token: f.member.token)
            #expect(over.status == .conflict && over.isErrorShape)
            #expect(over.detail == "a group has at most 500 conversations: delete one first")
        }
    }

    /// Edits and reactions racing a delete of the message or of its conversation: each answers
    /// 200, 404 or 409 (never a crash or a 500), and a deleted message stays a tombstone.
    @Test(arguments: Backend.all)
    func changesRacingADeleteLeaveItDeleted(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let f = try await api.fixture()
            for round in 0..<12 {
                let conversation = try await api.createConversation(in: f.groupID, topic: "Race \(round)", by: f.member)
                let id = "race-\(round)"
                _ = try await api.say("original", in: conversation, as: f.member, id: id)
                let deleteConversation = round % 2 == 1
                let statuses = try await withThrowingTaskGroup(of: (String, Int).self) { group in
                    group.addTask { ("edit", try await api.postConcurrently("threads/UpdateMessage", ["id": id, "text": "edited"], token: f.member.token).status.code) }
                    group.addTask { ("react", try await api.postConcurrently("threads/AddReaction", ["message_id": id, "emoji": "👍"], token: f.owner.token).status.code) }
                    group.addTask { ("delete", try await api.postConcurrently("threads/DeleteMessage", ["id": id], token: f.admin.token).status.code) }
                    if deleteConversation {
                        group.addTask { ("drop", try await api.postConcurrently("threads/DeleteConversation", ["id": conversation], token: f.member.token).status.code) }
                    }
                    return try await group.reduce(into: [String: Int]()) { $0[$1.0] = $1.1 }
                }
                for (call, status) in statuses { #expect([200, 404, 409].contains(status), "\(call): \(status)") }
                let page = try await api.post("threads/ListMessages", ["conversation_id": conversation], token: f.owner.token)
                if deleteConversation {
                    #expect(page.status == .notFound)
                } else {
                    let m = try #require((page["messages"] as? [[String: Any]])?.first)
                    #expect(m["deleted"] as? Bool == true && m["text"] as? String == "" && m["reactions"] == nil, "\(m)")
                }
            }
        }
    }

    /// Messages sent (and a rename made) while their conversation is deleted are stored before
    /// the deletion (and go with it) or refused: none is left behind in a conversation that is
    /// gone, and no event about it follows its deletion.
    @Test(arguments: Backend.all)
    func sendsRacingAConversationsDeletionLeaveNothing(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let f = try await api.fixture()
            for round in 0..<4 {
                let conversation = try await api.createConversation(in: f.groupID, topic: "Going \(round)", by: f.member)
                let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                    for i in 0..<8 {
                        group.addTask {
                            Int(try await api.postConcurrently(
                                "threads/CreateMessage", ["conversation_id": conversation, "text": "last words \(i)"], token: f.member.token
                            ).status.code)
                        }
                    }
                    group.addTask { Int(try await api.postConcurrently("threads/DeleteConversation", ["id": conversation], token: f.member.token).status.code) * 1000 }
                    group.addTask {
                        Int(try await api.postConcurrently("threads/UpdateConversation", ["id": conversation, "topic": "Renamed"], token: f.member.token).status.code)
                    }
                    return try await group.reduce(into: [Int]()) { $0.append($1) }
                }
                #expect(statuses.contains(200_000), "the deletion went through: \(statuses)")
                #expect(statuses.allSatisfy { [200, 404, 200_000].contains($0) }, "\(statuses)")
                let left = try await api.database.read { conn in
                    try await conn.first("SELECT COUNT(*) AS n FROM thread_messages WHERE container_id = $1", conversation)?.int("n")
                }
                #expect(left == 0, "round \(round): messages left in a deleted conversation")
                // Nothing is told of the conversation after its deletion.
                let told = try await api.database.read { conn in
                    try await conn.query("SELECT type FROM events WHERE payload LIKE $1 ORDER BY seq", "%\(conversation)%").map { try $0.string("type") }
                }
                #expect(told.last == "conversation.deleted", "\(told)")
            }
        }
    }

    @Test(arguments: Backend.all)
    func aRetriedSendStoresOneMessage(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let f = try await api.fixture()
            let first = try await api.say("hello", in: f.conversationID, as: f.member, id: "client-1")
            let again = try await api.say("hello", in: f.conversationID, as: f.member, id: "client-1")
            #expect(first["sent_at"] as? String == again["sent_at"] as? String)
            let page = try await api.post("threads/ListMessages", ["conversation_id": f.conversationID], token: f.owner.token)
            #expect((page["messages"] as? [Any])?.count == 1)
            let events = try await api.database.read { try await $0.query("SELECT seq FROM events WHERE type = 'message.created'") }
            #expect(events.count == 1)
            // Someone else reusing the id is a conflict, not a silent overwrite.
            let clash = try await api.post("threads/CreateMessage", ["conversation_id": f.conversationID, "text": "x", "id": "client-1"], token: f.owner.token)
            #expect(clash.status == .conflict)
            // Concurrent retries of one send still store one message.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<5 {
                    group.addTask { _ = try await api.say("race", in: f.conversationID, as: f.member, id: "client-2") }
                }
                try await group.waitForAll()
            }
            let after = try await api.post("threads/ListMessages", ["conversation_id": f.conversationID], token: f.owner.token)
            #expect((after["messages"] as? [Any])?.count == 2)
        }
    }

    @Test(arguments: Backend.all)
    func textRulesKeepUnicodeExactly(_ backend: Backend) async throws {
        try await withTestApp(backend, configure: { $0.maxTextLength = 50 }) { api in
            let f = try await api.fixture()
            let text = "Zoë 👩🏽‍💻\nשלום עולם\te\u{0301} مرحبا"
            let m = try await api.say(text, in: f.conversationID, as: f.member)
            #expect(m["text"] as? String == text)
            let listed = try await api.post("threads/ListMessages", ["conversation_id": f.conversationID], token: f.member.token)
            #expect((listed["messages"] as? [[String: Any]])?.first?["text"] as? String == text)
            let cases: [(Any, String)] = [
                (String(repeating: "a", count: 51), "text: must be at most 50 characters"),
                ("bell\u{7}", "text: must not contain control characters other than newline and tab"),
                ("   ", "text: must not be empty"),
                (5, "text: must be a string"),
            ]
            for (value, detail) in cases {
                let r = try await api.post("threads/CreateMessage", ["conversation_id": f.conversationID, "text": value], token: f.member.token)
                #expect(r.status == .badRequest)
                #expect(r.detail == detail)
            }
            // 50 family emoji are 50 characters, not 550 scalars.
            _ = try await api.say(String(repeating: "👨‍👩‍👧‍👦", count: 50), in: f.conversationID, as: f.member)
            let missing = try await api.post("threads/CreateMessage", ["text": "x"], token: f.member.token)
            #expect(missing.detail == "conversation_id: is required")
        }
    }

    @Test(arguments: Backend.all)
    func paginationEdges(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let f = try await api.fixture()
            func page(_ extra: [String: Any]) async throws -> [[String: Any]] {
                let r = try await api.post("threads/ListMessages", ["conversation_id": f.conversationID].merging(extra) { $1 }, token: f.member.token)
                #expect(r.status == .ok, "\(r.text)")
                return r["messages"] as? [[String: Any]] ?? []
            }
            #expect(try await page([:]).isEmpty)  // empty conversation
            var sent: [[String: Any]] = []
            for i in 0..<10 { sent.append(try await api.say("m\(i)", in: f.conversationID, as: f.member, id: "m\(i)")) }
            // Exactly one page.
            let all = try await page(["limit": 10])
            #expect(all.map { $0["id"] as? String } == (0..<10).reversed().map { "m\($0)" })
            let next = try await page(["limit": 10, "sent_before": all.last!["sent_at"] as! String])
            #expect(next.isEmpty)
            // Walking back in pages of 3 visits every message once.
            var seen: [String] = []
            var before: String? = nil
            while true {
                let p = try await page(before.map { ["limit": 3, "sent_before": $0] } ?? ["limit": 3])
                if p.isEmpty { break }
                seen += p.compactMap { $0["id"] as? String }
                before = p.last!["sent_at"] as? String
            }
            #expect(seen == (0..<10).reversed().map { "m\($0)" })
            // A deleted message at a page boundary keeps its place as a tombstone.
            let del = try await api.post("threads/DeleteMessage", ["id": "m7"], token: f.member.token)
            #expect((del["message"] as? [String: Any])?["deleted"] as? Bool == true)
            let first = try await page(["limit": 3])
            #expect(first.map { $0["id"] as? String } == ["m9", "m8", "m7"])
            #expect(first[2]["text"] as? String == "" && first[2]["deleted"] as? Bool == true)
            let second = try await page(["limit": 3, "sent_before": first[2]["sent_at"] as! String])
            #expect(second.map { $0["id"] as? String } == ["m6", "m5", "m4"])
            // Catching up forwards from a point.
            let after = try await page(["limit": 2, "sent_after": sent[4]["sent_at"] as! String])
            #expect(after.map { $0["id"] as? String } == ["m6", "m5"])
            let window = try await page(["sent_after": sent[2]["sent_at"] as! String, "sent_before": sent[5]["sent_at"] as! String])
            #expect(window.map { $0["id"] as? String } == ["m4", "m3"])
            // Limits.
            let over = try await api.post("threads/ListMessages", ["conversation_id": f.conversationID, "limit": 101], token: f.member.token)
            #expect(over.detail == "limit: must be between 1 and 100")
            #expect(try await api.post("threads/ListMessages", ["conversation_id": f.conversationID, "limit": 0], token: f.member.token).status == .badRequest)
            let badTime = try await api.post("threads/ListMessages", ["conversation_id": f.conversationID, "sent_before": "yesterday"], token: f.member.token)
            #expect(badTime.detail.hasPrefix("sent_before: must be an RFC 3339 timestamp"))
        }
    }

    @Test(arguments: Backend.all)
    func editDeleteReactReply(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let f = try await api.fixture()
            let m = try await api.say("first", in: f.conversationID, as: f.member, id: "a")
            #expect(m["edited_at"] == nil)
            // Only the author edits.
            #expect(try await api.post("threads/UpdateMessage", ["id": "a", "text": "hacked"], token: f.owner.token).status == .forbidden)
            let e = try await api.post("threads/UpdateMessage", ["id": "a", "text": "first!"], token: f.member.token)
            #expect((e["message"] as? [String: Any])?["text"] as? String == "first!")
            #expect((e["message"] as? [String: Any])?["edited_at"] is String)
            // Replies point into the same conversation.
            let reply = try await api.post("threads/CreateMessage", ["conversation_id": f.conversationID, "text": "re", "reply_to": "a"], token: f.owner.token)
            #expect((reply["message"] as? [String: Any])?["reply_to"] as? String == "a")
            let badReply = try await api.post("threads/CreateMessage", ["conversation_id": f.conversationID, "text": "re", "reply_to": "zzz"], token: f.owner.token)
            #expect(badReply.detail == "reply_to: no such message in this conversation")
            // Reactions: once per user and emoji.
            for _ in 0..<2 { _ = try await api.post("threads/AddReaction", ["message_id": "a", "emoji": "👍"], token: f.owner.token) }
            let r = try await api.post("threads/AddReaction", ["message_id": "a", "emoji": "👍"], token: f.admin.token)
            let reactions = try #require((r["message"] as? [String: Any])?["reactions"] as? [[String: Any]])
            #expect(reactions.count == 1)
            #expect(reactions[0]["count"] as? Int == 2)
            #expect(reactions[0]["user_ids"] as? [String] == [f.owner.id, f.admin.id])
            let removed = try await api.post("threads/RemoveReaction", ["message_id": "a", "emoji": "👍"], token: f.owner.token)
            #expect(((removed["message"] as? [String: Any])?["reactions"] as? [[String: Any]])?.first?["count"] as? Int == 1)
            #expect(try await api.post("threads/AddReaction", ["message_id": "a", "emoji": "not an emoji"], token: f.owner.token).status == .badRequest)
            #expect(try await api.post("threads/AddReaction", ["message_id": "a", "emoji": "👍"], token: f.stranger.token).status == .notFound)
            // Delete: another member may not, an admin may; the tombstone has no text or reactions.
            #expect(try await api.post("threads/DeleteMessage", ["id": "a"], token: f.stranger.token).status == .notFound)
            let other = try await api.signUp("Other")
            try await api.add(other, to: f.groupID, by: f.owner)
            #expect(try await api.post("threads/DeleteMessage", ["id": "a"], token: other.token).status == .forbidden)
            let d = try await api.post("threads/DeleteMessage", ["id": "a"], token: f.admin.token)
            let tomb = try #require(d["message"] as? [String: Any])
            #expect(tomb["text"] as? String == "" && tomb["deleted"] as? Bool == true && tomb["reactions"] == nil)
            #expect(try await api.post("threads/UpdateMessage", ["id": "a", "text": "back"], token: f.member.token).status == .conflict)
        }
    }

    @Test(arguments: Backend.all)
    func recentMessagesAcrossConversations(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let f = try await api.fixture()
            let c2 = try await api.post("threads/CreateConversation", ["group_id": f.groupID, "topic": "Two"], token: f.owner.token)
            let id2 = try #require((c2["conversation"] as? [String: Any])?["id"] as? String)
            for i in 0..<4 { try await api.say("a\(i)", in: f.conversationID, as: f.member) }
            for i in 0..<2 { try await api.say("b\(i)", in: id2, as: f.member) }
            let r = try await api.post("threads/RecentMessages", ["conversation_ids": [f.conversationID, id2], "limit_per_conversation": 3], token: f.member.token)
            #expect((r["messages"] as? [[String: Any]])?.map { $0["text"] as? String } == ["a3", "a2", "a1", "b1", "b0"])
            // Conversations the caller cannot read are silently left out.
            let s = try await api.post("threads/RecentMessages", ["conversation_ids": [f.conversationID]], token: f.stranger.token)
            #expect((s["messages"] as? [Any])?.isEmpty == true)
        }
    }

    @Test(arguments: Backend.all)
    func serviceKeysPostForMembersOnly(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let f = try await api.fixture()
            let key = try await api.serviceKey()
            let ok = try await api.post("threads/CreateMessage", ["conversation_id": f.conversationID, "text": "bot", "author_id": f.member.id], token: key)
            #expect((ok["message"] as? [String: Any])?["author_id"] as? String == f.member.id)
            let stranger = try await api.post("threads/CreateMessage", ["conversation_id": f.conversationID, "text": "bot", "author_id": f.stranger.id], token: key)
            #expect(stranger.status == .notFound)
            let asOther = try await api.post("threads/CreateMessage", ["conversation_id": f.conversationID, "text": "x", "author_id": f.owner.id], token: f.member.token)
            #expect(asOther.status == .forbidden)
        }
    }

    @Test(arguments: Backend.all)
    func mentionsNameMembersByUsername(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let f = try await api.fixture()
            try await api.setUsername(f.owner, "Olga")
            try await api.setUsername(f.admin, "ada.admin")
            try await api.setUsername(f.member, "max")
            try await api.setUsername(f.stranger, "eve")
            func mentions(_ m: [String: Any]) -> [String]? { m["mentions"] as? [String] }

            // Case-insensitive, in the text's order, once each; a sentence's full stop is not part
            // of the name. Non-members, unknown names, the author and email addresses mention no one.
            let m = try await api.say(
                "@ADA.ADMIN and @olga. ping @olga, @eve @nobody @max mail olga@example.org", in: f.conversationID, as: f.member)
            #expect(mentions(m) == [f.admin.id, f.owner.id])
            let id = try #require(m["id"] as? String)
            let plain = try await api.say("no one here", in: f.conversationID, as: f.member)
            #expect(plain["mentions"] == nil)
            let strangersOnly = try await api.say("@eve @nobody @max", in: f.conversationID, as: f.member)
            #expect(strangersOnly["mentions"] == nil)

            // Reads show the same, and so does the event the feed and the digest read.
            let page = try await api.post("threads/ListMessages", ["conversation_id": f.conversationID], token: f.owner.token)
            let listed = try #require(page["messages"] as? [[String: Any]])
            #expect(listed.map(mentions) == [nil, nil, [f.admin.id, f.owner.id]])
            let events = try await api.database.read {
                try await $0.query("SELECT payload, audience FROM events WHERE type = 'message.created' ORDER BY seq")
            }
            let first = try #require(events.first)
            let payload = try #require(try JSONSerialization.jsonObject(with: Data(try first.string("payload").utf8)) as? [String: Any])
            #expect(mentions(payload) == [f.admin.id, f.owner.id])
            #expect(payload["id"] as? String == id && payload["text"] as? String == m["text"] as? String)
            #expect(try first.string("audience") == "group:\(f.groupID)")

            // Edits re-evaluate: new names count, dropped ones no longer do.
            let edited = try await api.post("threads/UpdateMessage", ["id": id, "text": "only @Olga now"], token: f.member.token)
            #expect(mentions(try #require(edited["message"] as? [String: Any])) == [f.owner.id])
            let again = try await api.post("threads/ListMessages", ["conversation_id": f.conversationID], token: f.member.token)
            #expect((again["messages"] as? [[String: Any]])?.last.flatMap(mentions) == [f.owner.id])
            let cleared = try await api.post("threads/UpdateMessage", ["id": id, "text": "nobody at all"], token: f.member.token)
            #expect((cleared["message"] as? [String: Any])?["mentions"] == nil)
            let back = try await api.post("threads/UpdateMessage", ["id": id, "text": "@max @ada.admin"], token: f.member.token)
            #expect(mentions(try #require(back["message"] as? [String: Any])) == [f.admin.id])

            // A tombstone mentions no one.
            let deleted = try await api.post("threads/DeleteMessage", ["id": id], token: f.member.token)
            #expect((deleted["message"] as? [String: Any])?["mentions"] == nil)
            let after = try await api.post("threads/ListMessages", ["conversation_id": f.conversationID], token: f.member.token)
            #expect((after["messages"] as? [[String: Any]])?.allSatisfy { $0["mentions"] == nil } == true)

            // Someone who joins later can be mentioned from then on; chats have no mentions.
            try await api.add(f.stranger, to: f.groupID, by: f.owner)
            #expect(mentions(try await api.say("hi @eve", in: f.conversationID, as: f.owner)) == [f.stranger.id])
            let chat = try await api.post("chats/CreateChat", ["user_ids": [f.member.id]], token: f.owner.token)
            let chatID = try #require((chat["chat"] as? [String: Any])?["id"] as? String)
            let dm = try await api.post("chats/CreateMessage", ["chat_id": chatID, "text": "hi @max"], token: f.owner.token)
            #expect((dm["message"] as? [String: Any])?["mentions"] == nil)
        }
    }
}
