import Chats
import Foundation
import Groups
import ServiceKit
import Storage
import Threads

public enum ResourceType: String, Codable, Sendable, SchemaEnumeration {
    case thread
    case chat
}

public struct SetSeenRequest: Codable, Sendable {
    public var userId: String?
    public var resourceType: ResourceType
    public var resourceId: String
    public var timestamp: Timestamp?
}

public struct UnsetSeenRequest: Codable, Sendable {
    public var userId: String?
    public var resourceType: ResourceType
    public var resourceId: String
}

public struct ReadSeenRequest: Codable, Sendable {
    public var userId: String?
    public var resourceType: ResourceType
    public var resourceIds: [String]
}

public struct SeenTimestamps: Codable, Sendable {
    public var timestamps: [String: Timestamp]
}

public struct UnreadRequest: Codable, Sendable {
    public var userId: String?
}

/// Unread messages by others, per conversation and per chat the user can read.
public struct UnreadResponse: Codable, Sendable {
    public var threads: [String: Int]
    public var chats: [String: Int]
}

/// `seen.updated`: a user's read mark moved forwards, or was removed (no `timestamp`). Their own
/// devices hear of it; the unread digest waits for it.
public struct SeenUpdated: DomainEvent {
    public static let name = "seen.updated"
    public var userId: String
    public var resourceType: ResourceType
    public var resourceId: String
    public var timestamp: Timestamp?
    public var audience: String { "user:\(userId)" }
}

/// What other services may ask of the seen service.
public protocol SeenClient: Sendable {
    func lastSeen(user: String, type: ResourceType, ids: [String]) async throws -> [String: Timestamp]
    /// Drops everyone's read marks of resources that are gone (a deleted group's conversations).
    func forget(type: ResourceType, ids: [String]) async throws
    /// Drops a deleted account's read marks.
    func forget(user: String) async throws
}

/// What each user has read (API.md `seen/*`).
public struct SeenService: ServiceDefinition, SeenClient {
    public let name = "seen"
    let db: any Database
    let groups: any GroupsClient
    let threads: any ThreadsClient
    let chats: any ChatsClient

    public static let migrations = [
        Migration(service: "seen", version: 1, [
            """
            CREATE TABLE seen (
                user_id TEXT NOT NULL,
                resource_type TEXT NOT NULL,
                resource_id TEXT NOT NULL,
                seen_at BIGINT NOT NULL,
                PRIMARY KEY (user_id, resource_type, resource_id))
            """
        ])
    ]

    public init(db: any Database, groups: any GroupsClient, threads: any ThreadsClient, chats: any ChatsClient) {
        self.db = db
        self.groups = groups
        self.threads = threads
        self.chats = chats
    }

    public var endpoints: [Endpoint] {
        [
            Endpoint(service: name, method: "Set", summary: "Mark a conversation or chat read up to a time (never moves backwards).",
                     access: .signedIn, handler: set),
            Endpoint(service: name, method: "Unset", summary: "Mark a conversation or chat unread.",
                     access: .signedIn, handler: unset),
            Endpoint(service: name, method: "Read", summary: "When the user last read each resource.",
                     access: .signedIn, handler: read),
            Endpoint(service: name, method: "Unread", summary: "Unread counts for every conversation and chat of the user.",
                     access: .signedIn, handler: unread),
        ]
    }

    func set(_ req: SetSeenRequest, _ ctx: CallContext) async throws -> Empty {
        let user = try ctx.caller.actingUser(req.userId, field: "user_id")
        let id = try Validate.id(req.resourceId, field: "resource_id")
        try await requireReadable(user: user, type: req.resourceType, id: id)
        let now = Timestamp.now()
        let ts = min(req.timestamp ?? now, now)
        try await db.write { tx in
            let rows = try await tx.query(
                """
                INSERT INTO seen (user_id, resource_type, resource_id, seen_at) VALUES ($1, $2, $3, $4)
                ON CONFLICT (user_id, resource_type, resource_id) DO UPDATE SET seen_at = excluded.seen_at
                WHERE seen.seen_at < excluded.seen_at
                RETURNING seen_at
                """, user, req.resourceType.rawValue, id, ts)
            // Only a move forwards is news for the user's other devices.
            guard !rows.isEmpty else { return }
            try await EventLog.append(tx, SeenUpdated(userId: user, resourceType: req.resourceType, resourceId: id, timestamp: ts))
        }
        return Empty()
    }

    func unset(_ req: UnsetSeenRequest, _ ctx: CallContext) async throws -> Empty {
        let user = try ctx.caller.actingUser(req.userId, field: "user_id")
        let id = try Validate.id(req.resourceId, field: "resource_id")
        try await requireReadable(user: user, type: req.resourceType, id: id)
        try await db.write { tx in
            let rows = try await tx.query(
                "DELETE FROM seen WHERE user_id = $1 AND resource_type = $2 AND resource_id = $3 RETURNING seen_at",
                user, req.resourceType.rawValue, id)
            guard !rows.isEmpty else { return }
            try await EventLog.append(tx, SeenUpdated(userId: user, resourceType: req.resourceType, resourceId: id, timestamp: nil))
        }
        return Empty()
    }

    func read(_ req: ReadSeenRequest, _ ctx: CallContext) async throws -> SeenTimestamps {
        let user = try ctx.caller.actingUser(req.userId, field: "user_id")
        let ids = try Validate.ids(req.resourceIds, field: "resource_ids")
        // A user's own read marks are theirs alone: nothing here reveals anything about a resource.
        return SeenTimestamps(timestamps: try await lastSeen(user: user, type: req.resourceType, ids: ids))
    }

    func unread(_ req: UnreadRequest, _ ctx: CallContext) async throws -> UnreadResponse {
        let user = try ctx.caller.actingUser(req.userId, field: "user_id")
        var conversationIDs: [String] = []
        for g in try await groups.groupIDs(of: user) {
            conversationIDs += try await threads.conversations(inGroup: g).map(\.id)
        }
        let chatIDs = try await chats.chatIDs(of: user)
        async let threadSeen = lastSeen(user: user, type: .thread, ids: conversationIDs)
        async let chatSeen = lastSeen(user: user, type: .chat, ids: chatIDs)
        let (ts, cs) = try await (threadSeen, chatSeen)
        async let threadCounts = threads.unreadCounts(
            for: user, since: Dictionary(uniqueKeysWithValues: conversationIDs.map { ($0, ts[$0]) }))
        async let chatCounts = chats.unreadCounts(for: user, since: Dictionary(uniqueKeysWithValues: chatIDs.map { ($0, cs[$0]) }))
        return UnreadResponse(threads: try await threadCounts, chats: try await chatCounts)
    }

    /// 404 unless `user` may read the resource, the same for one that does not exist.
    func requireReadable(user: String, type: ResourceType, id: String) async throws {
        switch type {
        case .thread:
            guard let c = try await threads.conversations(ids: [id])[id],
                  try await groups.role(of: user, in: c.groupId) != nil
            else { throw ServiceError.notFound("conversation not found") }
        case .chat:
            guard let chat = try await chats.chats(ids: [id])[id], chat.userIds.contains(user) else {
                throw ServiceError.notFound("chat not found")
            }
        }
    }

    public func forget(type: ResourceType, ids: [String]) async throws {
        for batch in SQL.batches(ids, of: 500) {
            try await db.write { tx in
                try await tx.query(
                    "DELETE FROM seen WHERE resource_type = $1 AND resource_id IN (\(SQL.list(batch.count, from: 2)))",
                    [type.rawValue] + batch)
            }
        }
    }

    public func forget(user: String) async throws {
        try await db.write { tx in try await tx.query("DELETE FROM seen WHERE user_id = $1", user) }
    }

    public func lastSeen(user: String, type: ResourceType, ids: [String]) async throws -> [String: Timestamp] {
        let unique = Array(Set(ids))
        guard !unique.isEmpty else { return [:] }
        return try await db.read { conn in
            try await conn.query(
                "SELECT resource_id, seen_at FROM seen WHERE user_id = $1 AND resource_type = $2 AND resource_id IN (\(SQL.list(unique.count, from: 3)))",
                [user, type.rawValue] + unique
            ).reduce(into: [:]) { $0[try $1.string("resource_id")] = try $1.timestamp("seen_at") }
        }
    }
}
