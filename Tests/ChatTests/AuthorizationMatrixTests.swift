import Foundation
import HTTPTypes
import Testing
import TestSupport

/// Every chat endpoint × every kind of caller, with the exact status each must get.
/// Non-members get 404 everywhere: a stranger cannot tell a group they are not in from one that
/// does not exist. Members lacking a role get 403.
@Suite("authorization matrix")
struct AuthorizationMatrixTests {
    enum Who: Int, CaseIterable { case anonymous, stranger, member, admin, owner, serviceKey }

    struct Row {
        let path: String
        /// Statuses for anonymous, stranger, member, admin, owner, service key.
        let expected: [Int]
        let body: @Sendable (Env) async throws -> [String: Any]
    }

    /// The shared world every row acts in.
    struct Env: Sendable {
        let api: APIClient
        let f: GroupFixture
        let key: String
        let chatID: String
        let inviteID: String
        let code: String

        /// A group with the fixture's owner, admin and member, for rows that change a group.
        func freshGroup() async throws -> String {
            let g = try await api.createGroup(f.owner, name: "Fresh")
            try await api.add(f.admin, to: g, by: f.owner, role: "admin")
            try await api.add(f.member, to: g, by: f.owner)
            return g
        }

        func memberMessage() async throws -> String {
            try await api.say("mine", in: f.conversationID, as: f.member)["id"] as! String
        }

        func chatMessage() async throws -> String {
            let r = try await api.post("chats/CreateMessage", ["chat_id": chatID, "text": "dm"], token: f.member.token)
            return (r["message"] as! [String: Any])["id"] as! String
        }
    }

    static let rows: [Row] = [
        // groups
        Row(path: "groups/Create", expected: [401, 200, 200, 200, 200, 400]) { _ in ["name": "New"] },
        Row(path: "groups/Read", expected: [401, 200, 200, 200, 200, 200]) { e in ["ids": [e.f.groupID]] },
        Row(path: "groups/Update", expected: [401, 404, 403, 200, 200, 200]) { e in ["id": e.f.groupID, "name": "Renamed"] },
        Row(path: "groups/Delete", expected: [401, 404, 403, 403, 200, 200]) { e in ["id": try await e.freshGroup()] },
        Row(path: "groups/List", expected: [401, 200, 200, 200, 200, 400]) { _ in [:] },
        Row(path: "groups/AddMember", expected: [401, 404, 403, 200, 200, 200]) { e in
            ["group_id": e.f.groupID, "member_id": try await e.api.signUp("Added").id]
        },
        Row(path: "groups/RemoveMember", expected: [401, 404, 403, 200, 200, 200]) { e in
            let g = try await e.freshGroup()
            let x = try await e.api.signUp("X")
            try await e.api.add(x, to: g, by: e.f.owner)
            return ["group_id": g, "member_id": x.id]
        },
        Row(path: "groups/SetRole", expected: [401, 404, 403, 403, 200, 200]) { e in
            let g = try await e.freshGroup()
            return ["group_id": g, "member_id": e.f.member.id, "role": "admin"]
        },
        // invites
        Row(path: "invites/Create", expected: [401, 404, 403, 200, 200, 200]) { e in ["group_id": e.f.groupID] },
        Row(path: "invites/List", expected: [401, 404, 403, 200, 200, 200]) { e in ["group_id": e.f.groupID] },
        Row(path: "invites/Read", expected: [401, 404, 403, 200, 200, 200]) { e in ["id": e.inviteID] },
        Row(path: "invites/Delete", expected: [401, 404, 403, 200, 200, 200]) { e in
            let r = try await e.api.post("invites/Create", ["group_id": e.f.groupID], token: e.f.owner.token)
            return ["id": (r["invite"] as! [String: Any])["id"] as! String]
        },
        // threads
        Row(path: "threads/CreateConversation", expected: [401, 404, 200, 200, 200, 200]) { e in
            ["group_id": e.f.groupID, "topic": "T"]
        },
        Row(path: "threads/ReadConversation", expected: [401, 404, 200, 200, 200, 200]) { e in ["id": e.f.conversationID] },
        Row(path: "threads/UpdateConversation", expected: [401, 404, 403, 200, 200, 200]) { e in
            ["id": e.f.conversationID, "topic": "General"]
        },
        Row(path: "threads/DeleteConversation", expected: [401, 404, 403, 200, 200, 200]) { e in
            let r = try await e.api.post("threads/CreateConversation", ["group_id": e.f.groupID, "topic": "Doomed"], token: e.f.owner.token)
            return ["id": (r["conversation"] as! [String: Any])["id"] as! String]
        },
        Row(path: "threads/ListConversations", expected: [401, 404, 200, 200, 200, 200]) { e in ["group_id": e.f.groupID] },
        Row(path: "threads/CreateMessage", expected: [401, 404, 200, 200, 200, 400]) { e in
            ["conversation_id": e.f.conversationID, "text": "hi"]
        },
        Row(path: "threads/ListMessages", expected: [401, 404, 200, 200, 200, 200]) { e in ["conversation_id": e.f.conversationID] },
        Row(path: "threads/RecentMessages", expected: [401, 200, 200, 200, 200, 200]) { e in ["conversation_ids": [e.f.conversationID]] },
        Row(path: "threads/UpdateMessage", expected: [401, 404, 200, 403, 403, 403]) { e in ["id": try await e.memberMessage(), "text": "edited"] },
        Row(path: "threads/DeleteMessage", expected: [401, 404, 200, 200, 200, 200]) { e in ["id": try await e.memberMessage()] },
        Row(path: "threads/AddReaction", expected: [401, 404, 200, 200, 200, 403]) { e in
            ["message_id": try await e.memberMessage(), "emoji": "👍"]
        },
        Row(path: "threads/RemoveReaction", expected: [401, 404, 200, 200, 200, 403]) { e in
            ["message_id": try await e.memberMessage(), "emoji": "👍"]
        },
        Row(path: "threads/Search", expected: [401, 200, 200, 200, 200, 403]) { _ in ["query": "hi"] },
        Row(path: "chats/Search", expected: [401, 200, 200, 200, 200, 403]) { _ in ["query": "hi"] },
        // chats: the chat is the owner's and the member's; the admin is not in it
        Row(path: "chats/CreateChat", expected: [401, 403, 400, 200, 200, 400]) { e in ["user_ids": [e.f.member.id]] },
        Row(path: "chats/CreateMessage", expected: [401, 404, 200, 404, 200, 400]) { e in ["chat_id": e.chatID, "text": "hi"] },
        Row(path: "chats/ListMessages", expected: [401, 404, 200, 404, 200, 200]) { e in ["chat_id": e.chatID] },
        Row(path: "chats/List", expected: [401, 200, 200, 200, 200, 400]) { _ in [:] },
        Row(path: "chats/UpdateMessage", expected: [401, 404, 200, 404, 403, 403]) { e in ["id": try await e.chatMessage(), "text": "edited"] },
        Row(path: "chats/DeleteMessage", expected: [401, 404, 200, 404, 403, 200]) { e in ["id": try await e.chatMessage()] },
        Row(path: "chats/AddReaction", expected: [401, 404, 200, 404, 200, 403]) { e in
            ["message_id": try await e.chatMessage(), "emoji": "🙂"]
        },
        Row(path: "chats/RemoveReaction", expected: [401, 404, 200, 404, 200, 403]) { e in
            ["message_id": try await e.chatMessage(), "emoji": "🙂"]
        },
        // seen
        Row(path: "seen/Set", expected: [401, 404, 200, 200, 200, 400]) { e in
            ["resource_type": "thread", "resource_id": e.f.conversationID]
        },
        Row(path: "seen/Unset", expected: [401, 404, 200, 200, 200, 400]) { e in
            ["resource_type": "thread", "resource_id": e.f.conversationID]
        },
        Row(path: "seen/Read", expected: [401, 200, 200, 200, 200, 400]) { e in
            ["resource_type": "thread", "resource_ids": [e.f.conversationID]]
        },
        Row(path: "seen/Unread", expected: [401, 200, 200, 200, 200, 400]) { _ in [:] },
        // Last: accepting makes the stranger a member.
        Row(path: "invites/Preview", expected: [200, 200, 200, 200, 200, 200]) { e in ["code": e.code] },
        Row(path: "invites/Accept", expected: [401, 200, 200, 200, 200, 403]) { e in ["code": e.code] },
    ]

    @Test(arguments: Backend.all)
    func everyEndpointForEveryCaller(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let f = try await api.fixture()
            let chat = try await api.post("chats/CreateChat", ["user_ids": [f.member.id]], token: f.owner.token)
            let invite = try await api.post("invites/Create", ["group_id": f.groupID], token: f.owner.token)
            let inv = try #require(invite["invite"] as? [String: Any])
            let env = Env(
                api: api, f: f, key: try await api.serviceKey(),
                chatID: try #require((chat["chat"] as? [String: Any])?["id"] as? String),
                inviteID: try #require(inv["id"] as? String), code: try #require(inv["code"] as? String))
            let tokens: [String?] = [nil, f.stranger.token, f.member.token, f.admin.token, f.owner.token, env.key]
            // The group page follows the same rule.
            let pageExpected = [401, 404, 200, 200, 200, 403]
            for who in Who.allCases {
                let r = try await api.request("/api/groups/\(f.groupID)", method: .get, token: tokens[who.rawValue])
                #expect(Int(r.status.code) == pageExpected[who.rawValue], "page as \(who)")
            }
            for row in Self.rows {
                for who in Who.allCases {
                    let body = try await row.body(env)
                    let r = try await api.post(row.path, body, token: tokens[who.rawValue])
                    #expect(Int(r.status.code) == row.expected[who.rawValue], "\(row.path) as \(who): \(r.text)")
                    if r.status.code >= 400 { #expect(r.isErrorShape, "\(row.path) as \(who)") }
                }
            }
        }
    }
}
