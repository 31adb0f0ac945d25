import Chats
import Foundation
import Groups
import ServiceKit
import Storage

/// M3O streams (API.md `streams/*`): application-defined topics, short-lived tokens, presence.
///
/// Topics a user session may use: its own user id; the id of a group it belongs to or of a chat it
/// takes part in; and any sub-topic of those (`<group id>/<anything>`). Service keys may use any.
public struct StreamsService: ServiceDefinition {
    public let name = "streams"
    let db: any Database
    let groups: any GroupsClient
    let chats: any ChatsClient
    let presence: Presence
    let tokenLifetime: Duration
    static let maxMessageLength = 16_384

    public static let migrations = [
        Presence.migration,
        Migration(service: "realtime", version: 2, [
            """
            CREATE TABLE realtime_tokens (
                token_hash TEXT PRIMARY KEY,
                user_id TEXT,
                topic TEXT NOT NULL,
                expires_at BIGINT NOT NULL)
            """
        ]),
        // The session a user's ticket was made by: the feed it opens closes when that session ends.
        Migration(service: "realtime", version: 3, ["ALTER TABLE realtime_tokens ADD COLUMN session_id TEXT"]),
    ]

    /// `tokenLifetime`: `RealtimeLimits.tokenLifetime`.
    public init(db: any Database, groups: any GroupsClient, chats: any ChatsClient, presence: Presence,
                tokenLifetime: Duration) {
        self.db = db
        self.groups = groups
        self.chats = chats
        self.presence = presence
        self.tokenLifetime = tokenLifetime
    }

    public struct PublishRequest: Codable, Sendable {
        public var topic: String
        public var message: String
    }

    public struct TokenRequest: Codable, Sendable {
        public var topic: String?
    }

    public struct TokenResponse: Codable, Sendable {
        public var token: String
        public var expiresAt: Timestamp
    }

    public struct PresenceRequest: Codable, Sendable {
        public var userIds: [String]
    }

    public struct UserPresence: Codable, Sendable {
        public var online: Bool
    }

    public struct PresenceResponse: Codable, Sendable {
        public var users: [String: UserPresence]
    }

    public var endpoints: [Endpoint] {
        [
            Endpoint(service: name, method: "Publish", summary: "Send a message to everyone subscribed to a topic.",
                     access: .signedIn, handler: publish),
            Endpoint(service: name, method: "Token",
                     summary: "A single-use token for 60 s: for `streams/Subscribe` to a topic, or without one for `/v1/events`.",
                     access: .signedIn, handler: token),
            Endpoint(service: name, method: "Presence", summary: "Who of these users (the caller and co-members) is online.",
                     access: .signedIn, handler: presenceEndpoint),
        ]
    }

    func publish(_ req: PublishRequest, _ ctx: CallContext) async throws -> Empty {
        let topic = try Self.validTopic(req.topic)
        guard req.message.utf8.count <= Self.maxMessageLength else {
            throw ServiceError.invalidField("message", "must be at most \(Self.maxMessageLength) bytes")
        }
        try await requireTopic(topic, ctx.caller)
        let message = StreamMessage(topic: topic, message: req.message, sentAt: .now())
        try await db.write { tx in
            try await EventLog.append(tx, message)
        }
        return Empty()
    }

    func token(_ req: TokenRequest, _ ctx: CallContext) async throws -> TokenResponse {
        var topic = ""
        if let t = req.topic, !t.isEmpty {
            topic = try Self.validTopic(t)
            try await requireTopic(topic, ctx.caller)
        } else if ctx.caller.userID == nil {
            throw ServiceError.invalidField("topic", "is required for a service key")
        }
        let token = Secrets.token()
        let tokenTopic = topic
        let expires = Timestamp.now().adding(tokenLifetime)
        try await db.write { tx in
            try await tx.query("DELETE FROM realtime_tokens WHERE expires_at < $1", Timestamp.now())
            try await tx.query(
                "INSERT INTO realtime_tokens (token_hash, user_id, session_id, topic, expires_at) VALUES ($1, $2, $3, $4, $5)",
                Secrets.sha256(token), ctx.caller.userID, ctx.caller.sessionID, tokenTopic, expires)
        }
        return TokenResponse(token: token, expiresAt: expires)
    }

    func presenceEndpoint(_ req: PresenceRequest, _ ctx: CallContext) async throws -> PresenceResponse {
        var ids = Set(try Validate.ids(req.userIds, field: "user_ids"))
        if let me = ctx.caller.userID {
            // Only the caller and people who share a group with them: presence is not public.
            let visible = try await groups.coMembers(of: me, among: Array(ids.subtracting([me])))
            ids = ids.filter { $0 == me || visible.contains($0) }
        }
        let online = try await presence.online(Array(ids))
        return PresenceResponse(users: ids.reduce(into: [:]) { $0[$1] = UserPresence(online: online.contains($1)) })
    }

    /// Who made a token: a user session, or a service key (both nil).
    public struct TokenOwner: Sendable {
        public var user: String?
        public var session: String?
    }

    /// Uses a token once. Returns who made it, or nil when it is unknown, expired, used, or for
    /// another topic.
    public func redeem(_ token: String, topic: String) async throws -> TokenOwner? {
        guard !token.isEmpty, token.utf8.count <= 256 else { return nil }
        let row = try await db.write { tx in
            try await tx.first(
                "DELETE FROM realtime_tokens WHERE token_hash = $1 RETURNING user_id, session_id, topic, expires_at",
                Secrets.sha256(token))
        }
        guard let row, try row.string("topic") == topic, try row.timestamp("expires_at") > .now() else { return nil }
        return TokenOwner(user: try row.optionalString("user_id"), session: try row.optionalString("session_id"))
    }

    static func validTopic(_ raw: String) throws -> String {
        guard !raw.isEmpty, raw.utf8.count <= 200,
              !raw.unicodeScalars.contains(where: { $0.properties.isWhitespace || $0.properties.generalCategory == .control })
        else { throw ServiceError.invalidField("topic", "must be 1 to 200 characters without spaces") }
        return raw
    }

    /// 403 unless the caller may use the topic (see the type's comment).
    func requireTopic(_ topic: String, _ caller: Caller) async throws {
        guard case .user(let me, _, _) = caller else { return }
        let root = String(topic.split(separator: "/", maxSplits: 1).first ?? "")
        if root == me { return }
        if try await groups.role(of: me, in: root) != nil { return }
        if let chat = try await chats.chats(ids: [root])[root], chat.userIds.contains(me) { return }
        throw ServiceError.forbidden("topic: not one of yours (your user id, your groups and chats, and their sub-topics)")
    }
}
