import Foundation
import Groups
import Messaging
import ServiceKit
import Storage

public struct Chat: Codable, Sendable, Equatable {
    public var id: String
    public var userIds: [String]
    public var createdAt: Timestamp
    public var lastMessageAt: Timestamp?
}

/// `chat.created`: the Chat, to `chat:<id>`.
public enum ChatCreated: EventKind {
    public typealias Payload = Chat
    public static let name = "chat.created"
}

public struct CreateChatRequest: Codable, Sendable {
    public var userIds: [String]
}

public struct ChatResponse: Codable, Sendable {
    public var chat: Chat
}

public struct ListChatsRequest: Codable, Sendable {
    public var userId: String?
}

public struct ChatsResponse: Codable, Sendable {
    public var chats: [Chat]
}

/// What other services may ask of the chats service.
public protocol ChatsClient: Sendable {
    func chats(ids: [String]) async throws -> [String: Chat]
    func chatIDs(of user: String) async throws -> [String]
    /// The two-person chat between `viewer` and each of `others`, where one exists.
    func directChats(of viewer: String, with others: [String]) async throws -> [String: Chat]
    func recentMessages(_ chatIDs: [String], limit: Int) async throws -> [String: [Message]]
    func unreadCounts(for user: String, since: [String: Timestamp?]) async throws -> [String: Int]
}

/// Private conversations between users who share a group (API.md `chats/*`).
public struct ChatsService: ServiceDefinition, ChatsClient {
    public let name = "chats"
    let db: any Database
    let groups: any GroupsClient
    let board: MessageBoard
    static let maxParticipants = 50

    public static let migrations = [
        Migration(service: "chats", version: 1, [
            """
            CREATE TABLE chats (
                id TEXT PRIMARY KEY,
                member_key TEXT NOT NULL UNIQUE,
                created_at BIGINT NOT NULL)
            """,
            """
            CREATE TABLE chat_members (
                chat_id TEXT NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
                user_id TEXT NOT NULL,
                PRIMARY KEY (chat_id, user_id))
            """,
            "CREATE INDEX chat_members_user ON chat_members (user_id)",
        ]),
        MessageBoard.migrations(service: "chats", tablePrefix: "chat", version: 2),
        FullText.migration(service: "chats", version: 3, table: "chat_messages"),
    ]

    public init(db: any Database, groups: any GroupsClient, maxTextLength: Int = 4000) {
        self.db = db
        self.groups = groups
        self.board = MessageBoard(db: db, kind: .chat, tablePrefix: "chat", maxTextLength: maxTextLength)
    }

    public var endpoints: [Endpoint] {
        [
            Endpoint(service: name, method: "CreateChat",
                     summary: "The chat of a set of users who share a group (the same set always gets the same chat).",
                     access: .signedIn, handler: createChat),
            Endpoint(service: name, method: "CreateMessage",
                     summary: "Send a message; a repeated client-chosen id returns the stored one.",
                     access: .signedIn, handler: createMessage),
            Endpoint(service: name, method: "ListMessages",
                     summary: "A page of messages, newest first (`sent_before`, `sent_after`, `limit` ≤ 100).",
                     access: .signedIn, handler: listMessages),
            Endpoint(service: name, method: "List", summary: "A user's chats, most recent activity first.",
                     access: .signedIn, handler: list),
            Endpoint(service: name, method: "UpdateMessage", summary: "Edit a message (its author).",
                     access: .signedIn, handler: updateMessage),
            Endpoint(service: name, method: "DeleteMessage", summary: "Delete a message, leaving a tombstone (its author).",
                     access: .signedIn, handler: deleteMessage),
            Endpoint(service: name, method: "AddReaction", summary: "React to a message.",
                     access: .signedIn, handler: addReaction),
            Endpoint(service: name, method: "RemoveReaction", summary: "Take a reaction back.",
                     access: .signedIn, handler: removeReaction),
            Endpoint(service: name, method: "Search", summary: "Full-text search over the caller's chats.",
                     access: .signedIn, handler: search),
        ]
    }

    func createChat(_ req: CreateChatRequest, _ ctx: CallContext) async throws -> ChatResponse {
        var ids = Set(try Validate.ids(req.userIds, field: "user_ids", max: Self.maxParticipants))
        if let me = ctx.caller.userID { ids.insert(me) }
        guard ids.count >= 2 else { throw ServiceError.invalidField("user_ids", "must name at least one other user") }
        guard ids.count <= Self.maxParticipants else {
            throw ServiceError.invalidField("user_ids", "must have at most \(Self.maxParticipants) users")
        }
        if let me = ctx.caller.userID {
            let others = ids.subtracting([me])
            let reachable = try await groups.coMembers(of: me, among: Array(others))
            // Unknown users and strangers look the same: no account discovery through chats.
            guard reachable == others else { throw ServiceError.forbidden("user_ids: you can only chat with people who share a group with you") }
        }
        let members = ids.sorted()
        let key = members.joined(separator: ",")
        @Sendable func existing(_ conn: any SQLExecutor) async throws -> Chat? {
            guard let row = try await conn.first("SELECT id, created_at FROM chats WHERE member_key = $1", key) else { return nil }
            return Chat(id: try row.string("id"), userIds: members, createdAt: try row.timestamp("created_at"))
        }
        let chat: Chat
        do {
            chat = try await db.write { tx -> Chat in
                if let chat = try await existing(tx) { return chat }
                let chat = Chat(id: Secrets.uuid(), userIds: members, createdAt: .now())
                try await tx.query("INSERT INTO chats (id, member_key, created_at) VALUES ($1, $2, $3)", chat.id, key, chat.createdAt)
                for m in members {
                    try await tx.query("INSERT INTO chat_members (chat_id, user_id) VALUES ($1, $2)", chat.id, m)
                }
                try await EventLog.append(tx, ChatCreated.event(chat, audience: "chat:\(chat.id)"))
                return chat
            }
        } catch StorageError.uniqueViolation {
            // Both sides opened it at once and the other committed first: the same set, the same chat.
            guard let raced = try await db.read({ try await existing($0) }) else { throw ServiceError.conflict("chat: try again") }
            chat = raced
        }
        var withActivity = chat
        withActivity.lastMessageAt = try await board.lastSent(containers: [chat.id])[chat.id]
        return ChatResponse(chat: withActivity)
    }

    func createMessage(_ req: CreateMessageRequest, _ ctx: CallContext) async throws -> MessageResponse {
        let author = try ctx.caller.actingUser(req.authorId, field: "author_id")
        guard let cid = req.chatId, !cid.isEmpty else { throw ServiceError.invalidField("chat_id", "is required") }
        let chat = try await participantChat(try Validate.id(cid, field: "chat_id"), user: author)
        return MessageResponse(message: try await board.create(
            id: req.id, container: chat.id, author: author, text: req.text, replyTo: req.replyTo, audience: "chat:\(chat.id)"))
    }

    func listMessages(_ req: ListMessagesRequest, _ ctx: CallContext) async throws -> MessagesResponse {
        guard let cid = req.chatId, !cid.isEmpty else { throw ServiceError.invalidField("chat_id", "is required") }
        let chat = try await readable(try Validate.id(cid, field: "chat_id"), ctx.caller)
        return MessagesResponse(messages: try await board.list(
            container: chat.id, sentBefore: req.sentBefore, sentAfter: req.sentAfter, limit: req.limit))
    }

    func list(_ req: ListChatsRequest, _ ctx: CallContext) async throws -> ChatsResponse {
        let user = try ctx.caller.actingUser(req.userId, field: "user_id")
        let chats = try await chats(ids: try await chatIDs(of: user)).values
        return ChatsResponse(chats: chats.sorted {
            ($0.lastMessageAt ?? $0.createdAt, $0.id) > ($1.lastMessageAt ?? $1.createdAt, $1.id)
        })
    }

    func updateMessage(_ req: UpdateMessageRequest, _ ctx: CallContext) async throws -> MessageResponse {
        try await board.update(req, ctx.caller, access)
    }

    func deleteMessage(_ req: MessageIDRequest, _ ctx: CallContext) async throws -> MessageResponse {
        try await board.delete(req, ctx.caller, denied: "only the author may delete a message", access)
    }

    func addReaction(_ req: ReactionRequest, _ ctx: CallContext) async throws -> MessageResponse {
        try await board.react(req, ctx.caller, add: true, access)
    }

    func removeReaction(_ req: ReactionRequest, _ ctx: CallContext) async throws -> MessageResponse {
        try await board.react(req, ctx.caller, add: false, access)
    }

    /// Participants read a chat; nobody moderates it but a trusted backend.
    @Sendable func access(_ container: String, _ caller: Caller) async throws -> MessageBoard.ContainerAccess {
        let chat = try await readable(container, caller)
        return .init(audience: "chat:\(chat.id)", mayModerate: caller.isServiceKey)
    }

    func search(_ req: SearchRequest, _ ctx: CallContext) async throws -> MessagesResponse {
        guard let user = ctx.caller.userID else { throw ServiceError.forbidden("search is for user sessions") }
        return MessagesResponse(messages: try await board.search(
            containers: try await chatIDs(of: user), query: req.query, limit: req.limit))
    }

    // MARK: Access

    /// The chat if `caller` takes part in it (service keys read every chat); 404 otherwise.
    func readable(_ id: String, _ caller: Caller) async throws -> Chat {
        guard let chat = try await chats(ids: [id])[id] else { throw ServiceError.notFound("chat not found") }
        if let uid = caller.userID, !chat.userIds.contains(uid) { throw ServiceError.notFound("chat not found") }
        return chat
    }

    func participantChat(_ id: String, user: String) async throws -> Chat {
        try await readable(id, .user(id: user, sessionID: "", isAdmin: false))
    }

    // MARK: ChatsClient

    public func chats(ids: [String]) async throws -> [String: Chat] {
        let unique = Array(Set(ids))
        guard !unique.isEmpty else { return [:] }
        let (chats, members) = try await db.lookup { conn in
            let list = SQL.list(unique.count)
            return (
                try await conn.query("SELECT id, created_at FROM chats WHERE id IN (\(list))", unique),
                try await conn.query("SELECT chat_id, user_id FROM chat_members WHERE chat_id IN (\(list)) ORDER BY user_id", unique)
            )
        }
        var users: [String: [String]] = [:]
        for m in members { users[try m.string("chat_id"), default: []].append(try m.string("user_id")) }
        let last = try await board.lastSent(containers: unique)
        return try chats.reduce(into: [:]) { out, row in
            let id = try row.string("id")
            out[id] = Chat(id: id, userIds: users[id] ?? [], createdAt: try row.timestamp("created_at"), lastMessageAt: last[id])
        }
    }

    public func chatIDs(of user: String) async throws -> [String] {
        try await db.read { conn in
            try await conn.query("SELECT chat_id FROM chat_members WHERE user_id = $1", user).map { try $0.string("chat_id") }
        }
    }

    public func directChats(of viewer: String, with others: [String]) async throws -> [String: Chat] {
        var byKey: [String: String] = [:]
        for o in Set(others) where o != viewer { byKey[[viewer, o].sorted().joined(separator: ",")] = o }
        guard !byKey.isEmpty else { return [:] }
        let keys = Array(byKey.keys)
        let rows = try await db.read { conn in
            try await conn.query("SELECT id, member_key FROM chats WHERE member_key IN (\(SQL.list(keys.count)))", keys)
        }
        var idFor: [String: String] = [:]
        for r in rows { idFor[try r.string("id")] = byKey[try r.string("member_key")] }
        let chats = try await chats(ids: Array(idFor.keys))
        return chats.reduce(into: [:]) { out, pair in
            if let other = idFor[pair.key] { out[other] = pair.value }
        }
    }

    public func recentMessages(_ chatIDs: [String], limit: Int) async throws -> [String: [Message]] {
        try await board.recent(containers: chatIDs, limit: limit)
    }

    public func unreadCounts(for user: String, since: [String: Timestamp?]) async throws -> [String: Int] {
        try await board.unreadCounts(for: user, since: since)
    }
}
