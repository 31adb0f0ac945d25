import Foundation
import Groups
import Messaging
import ServiceKit
import Storage
import Users

public struct Conversation: Codable, Sendable, Equatable {
    public var id: String
    public var groupId: String
    public var topic: String
    public var createdAt: Timestamp
    public var createdBy: String?
}

// The threads service's conversation events, to `group:<id>`: the Conversation when made or
// changed, its id and group when deleted.
public enum ConversationCreated: EventKind {
    public typealias Payload = Conversation
    public static let name = "conversation.created"
}

public enum ConversationUpdated: EventKind {
    public typealias Payload = Conversation
    public static let name = "conversation.updated"
}

public struct RemovedConversation: Codable, Sendable {
    public var id: String
    public var groupId: String
}

public enum ConversationDeleted: EventKind {
    public typealias Payload = RemovedConversation
    public static let name = "conversation.deleted"
}

public struct CreateConversationRequest: Codable, Sendable {
    public var groupId: String
    public var topic: String
}

public struct ConversationResponse: Codable, Sendable {
    public var conversation: Conversation
}

public struct ReadConversationRequest: Codable, Sendable {
    public var id: String
    public var groupId: String?
}

public struct UpdateConversationRequest: Codable, Sendable {
    public var id: String
    public var topic: String
}

public struct ConversationIDRequest: Codable, Sendable {
    public var id: String
}

public struct ListConversationsRequest: Codable, Sendable {
    public var groupId: String
}

public struct ConversationsResponse: Codable, Sendable {
    public var conversations: [Conversation]
}

public struct RecentMessagesRequest: Codable, Sendable {
    public var conversationIds: [String]
    public var limitPerConversation: Int?
}

public struct ThreadSearchRequest: Codable, Sendable {
    public var query: String
    public var groupId: String?
    public var limit: Int?
}

/// What other services may ask of the threads service.
public protocol ThreadsClient: Sendable {
    func conversations(ids: [String]) async throws -> [String: Conversation]
    func conversations(inGroup groupID: String) async throws -> [Conversation]
    func recentMessages(_ conversationIDs: [String], limit: Int) async throws -> [String: [Message]]
    func unreadCounts(for user: String, since: [String: Timestamp?]) async throws -> [String: Int]
    /// Messages that mention `user`, sent after `after`, newest first (at most `limit`).
    func mentions(of user: String, after: Timestamp?, limit: Int) async throws -> [Message]
    /// Deletes a deleted group's conversations and their messages (`group.deleted`).
    func removeGroup(_ groupID: String) async throws
}

/// Group conversations (API.md `threads/*`): only a group's members read or write them.
public struct ThreadsService: ServiceDefinition, ThreadsClient {
    public let name = "threads"
    let db: any Database
    let groups: any GroupsClient
    let board: MessageBoard

    public static let migrations = [
        Migration(service: "threads", version: 1, [
            """
            CREATE TABLE conversations (
                id TEXT PRIMARY KEY,
                group_id TEXT NOT NULL,
                topic TEXT NOT NULL,
                created_by TEXT,
                created_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL)
            """,
            "CREATE INDEX conversations_group ON conversations (group_id, created_at)",
        ]),
        MessageBoard.migrations(service: "threads", tablePrefix: "thread", version: 2),
        FullText.migration(service: "threads", version: 3, table: "thread_messages"),
        MessageBoard.mentionsMigration(service: "threads", tablePrefix: "thread", version: 4),
    ]

    public init(db: any Database, groups: any GroupsClient, users: any UsersClient, maxTextLength: Int = 4000) {
        self.db = db
        self.groups = groups
        self.board = MessageBoard(
            db: db, kind: .conversation, tablePrefix: "thread", maxTextLength: maxTextLength,
            mentions: { text, conversation, author in
                try await Self.mentioned(in: text, conversation: conversation, author: author, db: db, groups: groups, users: users)
            },
            containers: "conversations")
    }

    /// The members of the conversation's group whose username the text names with `@` (not the
    /// author); unknown names and non-members mention no one.
    /// Names looked up per message at most: a text of a thousand `@`s costs one bounded query.
    static let maxMentions = 50

    static func mentioned(
        in text: String, conversation: String, author: String, db: any Database, groups: any GroupsClient, users: any UsersClient
    ) async throws -> [String] {
        let names = Mentions.names(in: text)
        guard !names.isEmpty,
              let groupID = try await db.read({ try await $0.first("SELECT group_id FROM conversations WHERE id = $1", conversation) })?
                .string("group_id"),
              let group = try await groups.group(groupID)
        else { return [] }
        // Only the named accounts are looked up, not every member's: a big group costs no more.
        let members = Set(group.memberIds).subtracting([author])
        let named = try await users.users(usernames: Array(names.prefix(Self.maxMentions)))
        return names.prefix(Self.maxMentions).compactMap { named[$0].map(\.id) }.filter(members.contains)
    }

    public var endpoints: [Endpoint] {
        [
            Endpoint(service: name, method: "CreateConversation", summary: "Start a conversation in a group (members).",
                     access: .signedIn, handler: createConversation),
            Endpoint(service: name, method: "ReadConversation", summary: "One conversation (members).",
                     access: .signedIn, handler: readConversation),
            Endpoint(service: name, method: "UpdateConversation", summary: "Change the topic (its creator or admins).",
                     access: .signedIn, handler: updateConversation),
            Endpoint(service: name, method: "DeleteConversation",
                     summary: "Delete a conversation and its messages (its creator or admins).",
                     access: .signedIn, handler: deleteConversation),
            Endpoint(service: name, method: "ListConversations", summary: "A group's conversations (members).",
                     access: .signedIn, handler: listConversations),
            Endpoint(service: name, method: "CreateMessage",
                     summary: "Send a message; a repeated client-chosen id returns the stored one.",
                     access: .signedIn, handler: createMessage),
            Endpoint(service: name, method: "ListMessages",
                     summary: "A page of messages, newest first (`sent_before`, `sent_after`, `limit` ≤ 100).",
                     access: .signedIn, handler: listMessages),
            Endpoint(service: name, method: "RecentMessages", summary: "The latest messages of several conversations.",
                     access: .signedIn, handler: recentMessagesEndpoint),
            Endpoint(service: name, method: "UpdateMessage", summary: "Edit a message (its author).",
                     access: .signedIn, handler: updateMessage),
            Endpoint(service: name, method: "DeleteMessage", summary: "Delete a message, leaving a tombstone (author or admins).",
                     access: .signedIn, handler: deleteMessage),
            Endpoint(service: name, method: "AddReaction", summary: "React to a message.",
                     access: .signedIn, handler: addReaction),
            Endpoint(service: name, method: "RemoveReaction", summary: "Take a reaction back.",
                     access: .signedIn, handler: removeReaction),
            Endpoint(service: name, method: "Search",
                     summary: "Full-text search over the messages of the caller's groups (or one group).",
                     access: .signedIn, handler: search),
        ]
    }

    // MARK: Conversations

    func createConversation(_ req: CreateConversationRequest, _ ctx: CallContext) async throws -> ConversationResponse {
        let groupID = try Validate.id(req.groupId, field: "group_id")
        let topic = try Validate.name(req.topic, field: "topic")
        _ = try await groups.require(.member, in: groupID, caller: ctx.caller)
        let c = Conversation(id: Secrets.uuid(), groupId: groupID, topic: topic, createdAt: .now(),
                             createdBy: ctx.caller.userID)
        try await db.write { tx in
            // Counted after taking the log's lock: two creators cannot both take the last place.
            try await EventLog.serialize(tx)
            let count = try await tx.first("SELECT COUNT(*) AS n FROM conversations WHERE group_id = $1", groupID)?.int("n") ?? 0
            guard count < Self.maxConversationsPerGroup else {
                throw ServiceError.conflict("a group has at most \(Self.maxConversationsPerGroup) conversations: delete one first")
            }
            try await tx.query(
                "INSERT INTO conversations (id, group_id, topic, created_by, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)",
                c.id, c.groupId, c.topic, c.createdBy, c.createdAt)
            try await EventLog.append(tx, ConversationCreated.event(c, audience: "group:\(groupID)"))
        }
        return ConversationResponse(conversation: c)
    }

    func readConversation(_ req: ReadConversationRequest, _ ctx: CallContext) async throws -> ConversationResponse {
        let c = try await readable(try Validate.id(req.id, field: "id"), ctx.caller)
        if let g = req.groupId, !g.isEmpty, g != c.conversation.groupId {
            throw ServiceError.notFound("conversation not found")
        }
        return ConversationResponse(conversation: c.conversation)
    }

    func updateConversation(_ req: UpdateConversationRequest, _ ctx: CallContext) async throws -> ConversationResponse {
        let topic = try Validate.name(req.topic, field: "topic")
        let (c, role) = try await readable(try Validate.id(req.id, field: "id"), ctx.caller)
        try Self.requireCreatorOrAdmin(c, role, ctx.caller)
        var changed = c
        changed.topic = topic
        let updated = changed
        try await db.write { tx in
            // A deletion that committed meanwhile leaves nothing to update (one under way waits).
            let rows = try await tx.query(
                "UPDATE conversations SET topic = $2, updated_at = $3 WHERE id = $1 RETURNING id", c.id, topic, Timestamp.now())
            guard !rows.isEmpty else { throw ServiceError.notFound("conversation not found") }
            try await EventLog.append(tx, ConversationUpdated.event(updated, audience: "group:\(c.groupId)"))
        }
        return ConversationResponse(conversation: updated)
    }

    /// Every group page and unread count reads all of a group's conversations at once.
    static let maxConversationsPerGroup = 500

    func deleteConversation(_ req: ConversationIDRequest, _ ctx: CallContext) async throws -> Empty {
        let (c, role) = try await readable(try Validate.id(req.id, field: "id"), ctx.caller)
        try Self.requireCreatorOrAdmin(c, role, ctx.caller)
        try await db.write { tx in
            try await removeConversation(c.id, in: tx)
            try await EventLog.append(
                tx, ConversationDeleted.event(RemovedConversation(id: c.id, groupId: c.groupId), audience: "group:\(c.groupId)"))
        }
        return Empty()
    }

    func listConversations(_ req: ListConversationsRequest, _ ctx: CallContext) async throws -> ConversationsResponse {
        let groupID = try Validate.id(req.groupId, field: "group_id")
        _ = try await groups.require(.member, in: groupID, caller: ctx.caller)
        return ConversationsResponse(conversations: try await conversations(inGroup: groupID))
    }

    static func requireCreatorOrAdmin(_ c: Conversation, _ role: Role, _ caller: Caller) throws {
        guard role >= .admin || (c.createdBy != nil && c.createdBy == caller.userID) else {
            throw ServiceError.forbidden("only the conversation's creator or group admins may do this")
        }
    }

    /// The conversation and the caller's role in its group; 404 for non-members.
    func readable(_ id: String, _ caller: Caller) async throws -> (conversation: Conversation, role: Role) {
        guard let c = try await conversations(ids: [id])[id] else { throw ServiceError.notFound("conversation not found") }
        do {
            return (c, try await groups.require(.member, in: c.groupId, caller: caller))
        } catch let e as ServiceError where e.status == .notFound {
            throw ServiceError.notFound("conversation not found")
        }
    }

    // MARK: Messages

    func createMessage(_ req: CreateMessageRequest, _ ctx: CallContext) async throws -> MessageResponse {
        let author = try ctx.caller.actingUser(req.authorId, field: "author_id")
        guard let cid = req.conversationId, !cid.isEmpty else { throw ServiceError.invalidField("conversation_id", "is required") }
        let (c, _) = try await readable(try Validate.id(cid, field: "conversation_id"), .user(id: author, sessionID: "", isAdmin: false))
        let m = try await board.create(
            id: req.id, container: c.id, author: author, text: req.text, replyTo: req.replyTo, audience: "group:\(c.groupId)")
        return MessageResponse(message: m)
    }

    func listMessages(_ req: ListMessagesRequest, _ ctx: CallContext) async throws -> MessagesResponse {
        guard let cid = req.conversationId, !cid.isEmpty else { throw ServiceError.invalidField("conversation_id", "is required") }
        let (c, _) = try await readable(try Validate.id(cid, field: "conversation_id"), ctx.caller)
        return MessagesResponse(messages: try await board.list(
            container: c.id, sentBefore: req.sentBefore, sentAfter: req.sentAfter, limit: req.limit))
    }

    func recentMessagesEndpoint(_ req: RecentMessagesRequest, _ ctx: CallContext) async throws -> MessagesResponse {
        let ids = try Validate.ids(req.conversationIds, field: "conversation_ids", max: 100)
        let limit = req.limitPerConversation ?? 25
        guard (1...100).contains(limit) else { throw ServiceError.invalidField("limit_per_conversation", "must be between 1 and 100") }
        let found = try await conversations(ids: ids)
        var allowed = Array(found.keys)
        if let uid = ctx.caller.userID {
            let roles = try await groups.roles(of: uid, in: found.values.map(\.groupId))
            allowed = found.values.filter { roles[$0.groupId] != nil }.map(\.id)
        }
        let recent = try await board.recent(containers: allowed, limit: limit)
        // In the order asked for, newest first within each.
        return MessagesResponse(messages: ids.flatMap { recent[$0] ?? [] })
    }

    func updateMessage(_ req: UpdateMessageRequest, _ ctx: CallContext) async throws -> MessageResponse {
        try await board.update(req, ctx.caller, access)
    }

    func deleteMessage(_ req: MessageIDRequest, _ ctx: CallContext) async throws -> MessageResponse {
        try await board.delete(req, ctx.caller, denied: "only the author or group admins may delete a message", access)
    }

    func addReaction(_ req: ReactionRequest, _ ctx: CallContext) async throws -> MessageResponse {
        try await board.react(req, ctx.caller, add: true, access)
    }

    func removeReaction(_ req: ReactionRequest, _ ctx: CallContext) async throws -> MessageResponse {
        try await board.react(req, ctx.caller, add: false, access)
    }

    /// Members read a conversation's messages; admins moderate them.
    @Sendable func access(_ container: String, _ caller: Caller) async throws -> MessageBoard.ContainerAccess {
        let (c, role) = try await readable(container, caller)
        return .init(audience: "group:\(c.groupId)", mayModerate: role >= .admin)
    }

    func search(_ req: ThreadSearchRequest, _ ctx: CallContext) async throws -> MessagesResponse {
        guard let user = ctx.caller.userID else { throw ServiceError.forbidden("search is for user sessions") }
        var groupIDs: [String]
        if let g = req.groupId, !g.isEmpty {
            let id = try Validate.id(g, field: "group_id")
            _ = try await groups.require(.member, in: id, caller: ctx.caller)
            groupIDs = [id]
        } else {
            groupIDs = try await groups.groupIDs(of: user)
        }
        var containers: [String] = []
        for g in groupIDs { containers += try await conversations(inGroup: g).map(\.id) }
        return MessagesResponse(messages: try await board.search(containers: containers, query: req.query, limit: req.limit))
    }

    // MARK: ThreadsClient

    public func conversations(ids: [String]) async throws -> [String: Conversation] {
        let unique = Array(Set(ids))
        guard !unique.isEmpty else { return [:] }
        return try await db.lookup { conn in
            try await conn.query(
                "SELECT id, group_id, topic, created_by, created_at FROM conversations WHERE id IN (\(SQL.list(unique.count)))",
                unique
            ).reduce(into: [:]) { let c = try Self.conversation($1); $0[c.id] = c }
        }
    }

    public func conversations(inGroup groupID: String) async throws -> [Conversation] {
        try await db.read { conn in
            try await conn.query(
                "SELECT id, group_id, topic, created_by, created_at FROM conversations WHERE group_id = $1 ORDER BY created_at, id",
                groupID
            ).map(Self.conversation)
        }
    }

    public func recentMessages(_ conversationIDs: [String], limit: Int) async throws -> [String: [Message]] {
        try await board.recent(containers: conversationIDs, limit: limit)
    }

    public func unreadCounts(for user: String, since: [String: Timestamp?]) async throws -> [String: Int] {
        try await board.unreadCounts(for: user, since: since)
    }

    public func mentions(of user: String, after: Timestamp?, limit: Int) async throws -> [Message] {
        try await board.mentioning(user, after: after, limit: limit)
    }

    public func removeGroup(_ groupID: String) async throws {
        // One conversation per transaction: a big group's history does not hold the writer for long.
        for c in try await conversations(inGroup: groupID) {
            try await db.write { tx in try await removeConversation(c.id, in: tx) }
        }
    }

    /// A conversation and its messages. The conversation's row first: a message being stored
    /// holds it (`MessageBoard.create`), so it is either in before this and deleted here, or
    /// finds the conversation gone. The appenders' lock comes last, with the event, so a long
    /// history being deleted does not hold up every writer.
    func removeConversation(_ id: String, in tx: Transaction) async throws {
        try await tx.query("DELETE FROM conversations WHERE id = $1", id)
        try await board.deleteAll(in: id, tx: tx)
    }

    static func conversation(_ row: Row) throws -> Conversation {
        Conversation(
            id: try row.string("id"), groupId: try row.string("group_id"), topic: try row.string("topic"),
            createdAt: try row.timestamp("created_at"), createdBy: try row.optionalString("created_by"))
    }
}
