import Foundation
import ServiceKit
import Storage

/// Messages, edits, tombstones and reactions for one service's containers (the threads
/// service's conversations, the chats service's chats). Each service owns its own tables; this is
/// the one piece of code that runs them. Authorization is the owning service's job: it calls in
/// here only after deciding the caller may.
public struct MessageBoard: Sendable {
    public enum Kind: Sendable {
        case conversation
        case chat
    }

    let db: any Database
    let kind: Kind
    let messages: String
    let reactions: String
    let maxTextLength: Int
    /// Set for containers whose messages mention people (with `mentionsMigration`).
    let mentionsTable: String?
    let findMentions: MentionFinder?
    /// The owning service's table of containers (an `id` column), for containers that can be
    /// deleted: a message is stored only while its container is.
    let containers: String?

    /// The users a text mentions, for a message by `author` in `container`, in the text's order.
    /// Called only for a text with an `@`: a text without one costs no lookups.
    public typealias MentionFinder = @Sendable (_ text: String, _ container: String, _ author: String) async throws -> [String]

    public init(db: any Database, kind: Kind, tablePrefix: String, maxTextLength: Int, mentions: MentionFinder? = nil,
                containers: String? = nil) {
        self.db = db
        self.containers = containers
        self.kind = kind
        self.messages = tablePrefix + "_messages"
        self.reactions = tablePrefix + "_reactions"
        self.maxTextLength = maxTextLength
        self.mentionsTable = mentions == nil ? nil : tablePrefix + "_mentions"
        self.findMentions = mentions
    }

    public static func migrations(service: String, tablePrefix: String, version: Int) -> Migration {
        let m = tablePrefix + "_messages", r = tablePrefix + "_reactions"
        return Migration(service: service, version: version, [
            """
            CREATE TABLE \(m) (
                seq {{serial}},
                id TEXT NOT NULL UNIQUE,
                container_id TEXT NOT NULL,
                author_id TEXT NOT NULL,
                text TEXT NOT NULL,
                sent_at BIGINT NOT NULL,
                edited_at BIGINT,
                deleted BIGINT NOT NULL DEFAULT 0,
                reply_to TEXT)
            """,
            // Unique per container: `sent_before`/`sent_after` pages never split or repeat a message.
            "CREATE UNIQUE INDEX \(m)_container_sent ON \(m) (container_id, sent_at)",
            // Covers unread counting: the count never has to visit the table.
            "CREATE INDEX \(m)_unread ON \(m) (container_id, sent_at, author_id, deleted)",
            """
            CREATE TABLE \(r) (
                message_id TEXT NOT NULL,
                user_id TEXT NOT NULL,
                emoji TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                PRIMARY KEY (message_id, user_id, emoji))
            """,
        ])
    }

    /// Who each message mentions, `position` keeping the text's order. `sent_at` is the message's:
    /// the digest asks for one user's mentions after a time without visiting the messages.
    public static func mentionsMigration(service: String, tablePrefix: String, version: Int) -> Migration {
        let t = tablePrefix + "_mentions"
        return Migration(service: service, version: version, [
            """
            CREATE TABLE \(t) (
                message_id TEXT NOT NULL,
                user_id TEXT NOT NULL,
                container_id TEXT NOT NULL,
                sent_at BIGINT NOT NULL,
                position INTEGER NOT NULL,
                PRIMARY KEY (message_id, user_id))
            """,
            "CREATE INDEX \(t)_user ON \(t) (user_id, sent_at)",
        ])
    }

    var containerField: String { kind == .conversation ? "conversation_id" : "chat_id" }

    // MARK: Writing

    /// Stores a message, or returns the stored one when `id` was used before by the same author in
    /// the same container (a retried send). `audience` receives the `message.created` event.
    public func create(
        id: String?, container: String, author: String, text: String, replyTo: String?, audience: String
    ) async throws -> Message {
        let text = try Validate.text(text, field: "text", maxLength: maxTextLength)
        let id = try id.map { try Validate.id($0, field: "id") } ?? Secrets.uuid()
        let replyTo = try replyTo.map { try Validate.id($0, field: "reply_to") }
        let mentioned = try await mentions(in: text, container: container, author: author)
        do {
            return try await db.write { tx in
                // Looked at again in the transaction, and (PostgreSQL) held: the container may
                // have been deleted since the caller's access was checked, and a deletion that
                // starts now waits for this message and takes it with it. Before the appenders'
                // lock: the deletion takes the row first and that lock last.
                if let containers {
                    let hold = tx.dialect == .postgres ? " FOR KEY SHARE" : ""
                    guard try await tx.first("SELECT id FROM \(containers) WHERE id = $1\(hold)", container) != nil else {
                        throw ServiceError.notFound("\(kindName) not found")
                    }
                }
                if let existing = try await fetch(id, in: tx) {
                    return try retried(existing, container: container, author: author)
                }
                if let replyTo, try await tx.first(
                    "SELECT id FROM \(messages) WHERE id = $1 AND container_id = $2", replyTo, container) == nil {
                    throw ServiceError.invalidField("reply_to", "no such message in this \(kindName)")
                }
                // Serialise appenders first, then take a send time strictly after the last one.
                try await EventLog.serialize(tx)
                let last = try await tx.first(
                    "SELECT MAX(sent_at) AS last FROM \(messages) WHERE container_id = $1", container)?.optionalInt("last")
                // Whole milliseconds, as the API writes them: a `sent_at` read back from JSON is exact.
                let now = Timestamp.now().microseconds / 1000 * 1000
                let sentAt = Timestamp(microseconds: max(now, (last ?? 0) + 1000))
                try await tx.query(
                    "INSERT INTO \(messages) (id, container_id, author_id, text, sent_at, reply_to) VALUES ($1, $2, $3, $4, $5, $6)",
                    id, container, author, text, sentAt, replyTo)
                var message = make(id: id, container: container, author: author, text: text, sentAt: sentAt,
                                   editedAt: nil, deleted: false, replyTo: replyTo)
                message.mentions = try await storeMentions(mentioned, of: message, container: container, in: tx)
                try await EventLog.append(tx, MessageCreated.event(message, audience: audience))
                return message
            }
        } catch StorageError.uniqueViolation {
            // Two sends with one id raced; the other committed first.
            guard let existing = try await message(id) else { throw ServiceError.conflict("id: already used") }
            return try retried(existing.message, container: container, author: author)
        }
    }

    func retried(_ existing: Message, container: String, author: String) throws -> Message {
        guard existing.authorId == author, (existing.conversationId ?? existing.chatId) == container else {
            throw ServiceError.conflict("id: already used by another message")
        }
        return existing
    }

    var kindName: String { kind == .conversation ? "conversation" : "chat" }

    /// Changes the text of a message; only its author may.
    func edit(_ id: String, in container: String, by author: String, text: String, audience: String) async throws -> Message {
        let text = try Validate.text(text, field: "text", maxLength: maxTextLength)
        // Edits re-evaluate mentions: the new text decides who is mentioned.
        let mentioned = try await mentions(in: text, container: container, author: author)
        return try await db.write { tx in
            guard let m = try await fetch(id, in: tx, forUpdate: true) else { throw ServiceError.notFound("message not found") }
            guard m.authorId == author else { throw ServiceError.forbidden("only the author may edit a message") }
            guard m.deleted != true else { throw ServiceError.conflict("the message was deleted") }
            try await tx.query("UPDATE \(messages) SET text = $2, edited_at = $3 WHERE id = $1", id, text, Timestamp.now())
            try await dropMentions(of: m, in: tx)
            _ = try await storeMentions(mentioned, of: m, container: container, in: tx)
            guard let updated = try await fetch(id, in: tx) else { throw ServiceError.notFound("message not found") }
            try await EventLog.append(tx, MessageUpdated.event(updated, audience: audience))
            return updated
        }
    }

    /// Replaces a message with a tombstone: it keeps its place, loses its text and reactions.
    func delete(_ id: String, audience: String) async throws -> Message {
        try await db.write { tx in
            guard let m = try await fetch(id, in: tx, forUpdate: true) else { throw ServiceError.notFound("message not found") }
            try await tx.query("UPDATE \(messages) SET text = '', deleted = 1, edited_at = $2 WHERE id = $1", id, Timestamp.now())
            try await dropMentions(of: m, in: tx)
            try await tx.query("DELETE FROM \(reactions) WHERE message_id = $1", id)
            guard let tombstone = try await fetch(id, in: tx) else { throw ServiceError.notFound("message not found") }
            try await EventLog.append(tx, MessageDeleted.event(tombstone, audience: audience))
            return tombstone
        }
    }

    func react(_ id: String, user: String, emoji: String, add: Bool, audience: String) async throws -> Message {
        let emoji = try Self.validEmoji(emoji)
        return try await db.write { tx in
            guard let m = try await fetch(id, in: tx, forUpdate: true) else { throw ServiceError.notFound("message not found") }
            guard m.deleted != true else { throw ServiceError.conflict("the message was deleted") }
            let changed: [Row]
            if add {
                changed = try await tx.query(
                    """
                    INSERT INTO \(reactions) (message_id, user_id, emoji, created_at) VALUES ($1, $2, $3, $4)
                    ON CONFLICT (message_id, user_id, emoji) DO NOTHING RETURNING emoji
                    """, id, user, emoji, Timestamp.now())
            } else {
                changed = try await tx.query(
                    "DELETE FROM \(reactions) WHERE message_id = $1 AND user_id = $2 AND emoji = $3 RETURNING emoji",
                    id, user, emoji)
            }
            guard let updated = try await fetch(id, in: tx) else { throw ServiceError.notFound("message not found") }
            if !changed.isEmpty {
                let reaction = ReactionChange(messageId: id, conversationId: updated.conversationId, chatId: updated.chatId,
                                        userId: user, emoji: emoji)
                if add {
                    try await EventLog.append(tx, ReactionAdded.event(reaction, audience: audience))
                } else {
                    try await EventLog.append(tx, ReactionRemoved.event(reaction, audience: audience))
                }
            }
            return updated
        }
    }

    static func validEmoji(_ raw: String) throws -> String {
        guard !raw.isEmpty, raw.count <= 8, raw.utf8.count <= 64,
              !raw.unicodeScalars.contains(where: { $0.properties.isWhitespace || $0.properties.generalCategory == .control })
        else { throw ServiceError.invalidField("emoji", "must be one emoji or a short symbol without spaces") }
        return raw
    }

    /// Removes every message of a container (its conversation was deleted).
    public func deleteAll(in container: String, tx: Transaction) async throws {
        if tx.dialect == .postgres {
            // Wait for changes under way (a reaction, an edit's mentions) to commit first, so the
            // rows they add are seen and deleted below rather than left behind.
            try await tx.query(
                "SELECT COUNT(*) AS n FROM (SELECT id FROM \(messages) WHERE container_id = $1 FOR UPDATE) AS held", container)
        }
        if let mentionsTable { try await tx.query("DELETE FROM \(mentionsTable) WHERE container_id = $1", container) }
        try await tx.query(
            "DELETE FROM \(reactions) WHERE message_id IN (SELECT id FROM \(messages) WHERE container_id = $1)", container)
        try await tx.query("DELETE FROM \(messages) WHERE container_id = $1", container)
    }

    // MARK: Mentions

    /// Who `text` mentions; no lookup at all for a text without an `@` or a board without mentions.
    func mentions(in text: String, container: String, author: String) async throws -> [String] {
        guard let findMentions, text.contains("@") else { return [] }
        var seen = Set<String>()
        return try await findMentions(text, container, author).filter { $0 != author && seen.insert($0).inserted }
    }

    /// Stores who `message` mentions; returns the list as the message shows it (nil for none).
    func storeMentions(_ users: [String], of message: Message, container: String, in tx: Transaction) async throws -> [String]? {
        guard let mentionsTable, !users.isEmpty else { return nil }
        for (position, user) in users.enumerated() {
            try await tx.query(
                "INSERT INTO \(mentionsTable) (message_id, user_id, container_id, sent_at, position) VALUES ($1, $2, $3, $4, $5)",
                message.id, user, container, message.sentAt, position)
        }
        return users
    }

    /// Forgets who `message` mentioned; free when its text had no `@` (then it mentioned no one).
    func dropMentions(of message: Message, in tx: Transaction) async throws {
        guard let mentionsTable, message.text.contains("@") else { return }
        try await tx.query("DELETE FROM \(mentionsTable) WHERE message_id = $1", message.id)
    }

    /// The messages that mention `user`, sent after `after`, newest first; tombstones mention no one.
    public func mentioning(_ user: String, after: Timestamp?, limit: Int) async throws -> [Message] {
        guard let mentionsTable else { return [] }
        let columns = Self.columns.split(separator: ",").map { "m." + $0.trimmingCharacters(in: .whitespaces) }.joined(separator: ", ")
        let rows = try await db.read { conn in
            try await conn.query(
                """
                SELECT \(columns) FROM \(mentionsTable) x JOIN \(messages) m ON m.id = x.message_id
                WHERE x.user_id = $1 AND x.sent_at > $2 AND m.deleted = 0
                ORDER BY x.sent_at DESC LIMIT $3
                """, user, after?.microseconds ?? Int64.min, limit)
        }
        return try await decorated(rows)
    }

    /// Who each message mentions, asked only for messages whose text has an `@`.
    func mentions(for messages: [Message], in conn: any SQLExecutor) async throws -> [String: [String]] {
        guard let mentionsTable else { return [:] }
        let ids = messages.filter { $0.text.contains("@") }.map(\.id)
        guard !ids.isEmpty else { return [:] }
        return try await conn.query(
            "SELECT message_id, user_id FROM \(mentionsTable) WHERE message_id IN (\(SQL.list(ids.count))) ORDER BY position",
            ids
        ).reduce(into: [:]) { $0[try $1.string("message_id"), default: []].append(try $1.string("user_id")) }
    }

    // MARK: Message endpoints

    /// What the owning service decides about a caller and one of its containers.
    public struct ContainerAccess: Sendable {
        /// Who hears of changes (`group:<id>`, `chat:<id>`).
        public var audience: String
        /// May delete other people's messages.
        public var mayModerate: Bool

        public init(audience: String, mayModerate: Bool) {
            self.audience = audience
            self.mayModerate = mayModerate
        }
    }

    /// Decides access to a container; throws 404 for a caller who may not read it.
    public typealias Resolve = @Sendable (_ container: String, _ caller: Caller) async throws -> ContainerAccess

    /// The message and the caller's access to it; 404 alike for an unknown message and for one the
    /// caller may not read.
    func access(_ id: String, field: String, _ caller: Caller, _ resolve: Resolve) async throws -> (Message, ContainerAccess) {
        let id = try Validate.id(id, field: field)
        guard let (m, container) = try await message(id) else { throw ServiceError.notFound("message not found") }
        do {
            return (m, try await resolve(container, caller))
        } catch let e as ServiceError where e.status == .notFound {
            throw ServiceError.notFound("message not found")
        }
    }

    /// `UpdateMessage`: its author changes the text.
    public func update(_ req: UpdateMessageRequest, _ caller: Caller, _ resolve: Resolve) async throws -> MessageResponse {
        let (m, a) = try await access(req.id, field: "id", caller, resolve)
        guard let author = caller.userID else { throw ServiceError.forbidden("only the author may edit a message") }
        return MessageResponse(message: try await edit(m.id, in: m.conversationId ?? m.chatId ?? "", by: author, text: req.text, audience: a.audience))
    }

    /// `DeleteMessage`: its author, or a moderator, leaves a tombstone.
    public func delete(_ req: MessageIDRequest, _ caller: Caller, denied: String, _ resolve: Resolve) async throws -> MessageResponse {
        let (m, a) = try await access(req.id, field: "id", caller, resolve)
        guard m.authorId == caller.userID || a.mayModerate else { throw ServiceError.forbidden(denied) }
        return MessageResponse(message: try await delete(m.id, audience: a.audience))
    }

    /// `AddReaction` / `RemoveReaction`: reactions belong to users.
    public func react(_ req: ReactionRequest, _ caller: Caller, add: Bool, _ resolve: Resolve) async throws -> MessageResponse {
        guard let user = caller.userID else { throw ServiceError.forbidden("reactions belong to users") }
        let (m, a) = try await access(req.messageId, field: "message_id", caller, resolve)
        return MessageResponse(message: try await react(m.id, user: user, emoji: req.emoji, add: add, audience: a.audience))
    }

    // MARK: Reading

    /// A message and the container it belongs to.
    public func message(_ id: String) async throws -> (message: Message, container: String)? {
        try await db.read { conn in
            guard let m = try await fetch(id, in: conn) else { return nil }
            return (m, m.conversationId ?? m.chatId ?? "")
        }
    }

    /// One page of a container's messages, newest first. With only `sentAfter`, the page is the
    /// oldest messages after it (catching up), still newest first.
    public func list(container: String, sentBefore: Timestamp?, sentAfter: Timestamp?, limit: Int?) async throws -> [Message] {
        let limit = limit ?? 25
        guard (1...100).contains(limit) else { throw ServiceError.invalidField("limit", "must be between 1 and 100") }
        let forward = sentAfter != nil && sentBefore == nil
        let rows = try await db.read { conn in
            try await conn.query(
                """
                SELECT \(Self.columns) FROM \(messages)
                WHERE container_id = $1 AND sent_at < $2 AND sent_at > $3
                ORDER BY sent_at \(forward ? "ASC" : "DESC") LIMIT $4
                """,
                container, sentBefore?.microseconds ?? Int64.max, sentAfter?.microseconds ?? Int64.min, limit)
        }
        let page = try await decorated(rows)
        return forward ? page.reversed() : page
    }

    /// The newest `limit` messages of each container, newest first within each.
    public func recent(containers: [String], limit: Int) async throws -> [String: [Message]] {
        let unique = Array(Set(containers))
        guard !unique.isEmpty else { return [:] }
        // One indexed range scan per container beats one window over every message they hold.
        let rows = try await db.read { conn in
            var all: [Row] = []
            for c in unique {
                all += try await conn.query(
                    "SELECT \(Self.columns) FROM \(messages) WHERE container_id = $1 ORDER BY sent_at DESC LIMIT $2", c, limit)
            }
            return all
        }
        return Dictionary(grouping: try await decorated(rows)) { $0.conversationId ?? $0.chatId ?? "" }
    }

    /// Messages by others after each container's `since` time, not counting deleted ones.
    public func unreadCounts(for user: String, since: [String: Timestamp?]) async throws -> [String: Int] {
        guard !since.isEmpty else { return [:] }
        return try await db.read { conn in
            var counts: [String: Int] = [:]
            for (container, ts) in since {
                let n = try await conn.first(
                    """
                    SELECT COUNT(*) AS n FROM \(messages)
                    WHERE container_id = $1 AND sent_at > $2 AND author_id <> $3 AND deleted = 0
                    """, container, ts?.microseconds ?? Int64.min, user)?.int("n") ?? 0
                counts[container] = Int(n)
            }
            return counts
        }
    }

    /// Messages in `containers` holding every word of `query`, newest first; tombstones never match.
    public func search(containers: [String], query: String, limit: Int?) async throws -> [Message] {
        let limit = limit ?? 25
        guard (1...100).contains(limit) else { throw ServiceError.invalidField("limit", "must be between 1 and 100") }
        guard query.count <= 200 else { throw ServiceError.invalidField("query", "must be at most 200 characters") }
        let unique = Array(Set(containers))
        guard !unique.isEmpty,
              let match = FullText.condition(dialect: db.dialect, table: messages, query: query, placeholder: unique.count + 1)
        else { return [] }
        var binds: [any SQLBindable] = unique
        binds.append(match.bind)
        binds.append(limit)
        let rows = try await db.read { [binds] conn in
            try await conn.query(
                """
                SELECT \(Self.columns) FROM \(messages)
                WHERE container_id IN (\(SQL.list(unique.count))) AND deleted = 0 AND \(match.sql)
                ORDER BY sent_at DESC LIMIT $\(unique.count + 2)
                """, binds)
        }
        return try await decorated(rows)
    }

    /// The newest send time per container.
    public func lastSent(containers: [String]) async throws -> [String: Timestamp] {
        let unique = Array(Set(containers))
        guard !unique.isEmpty else { return [:] }
        return try await db.read { conn in
            try await conn.query(
                "SELECT container_id, MAX(sent_at) AS last FROM \(messages) WHERE container_id IN (\(SQL.list(unique.count))) GROUP BY container_id",
                unique
            ).reduce(into: [:]) { $0[try $1.string("container_id")] = try $1.timestamp("last") }
        }
    }

    // MARK: Rows

    static let columns = "id, container_id, author_id, text, sent_at, edited_at, deleted, reply_to"

    /// With `forUpdate`, the row stays locked until the transaction ends (PostgreSQL; SQLite's
    /// writers take turns anyway): a change checked against what was read cannot race a delete.
    func fetch(_ id: String, in conn: any SQLExecutor, forUpdate: Bool = false) async throws -> Message? {
        let lock = forUpdate && conn.dialect == .postgres ? " FOR UPDATE" : ""
        guard let row = try await conn.first("SELECT \(Self.columns) FROM \(messages) WHERE id = $1\(lock)", id) else { return nil }
        var m = try message(row)
        m.reactions = try await reactions(for: [id], in: conn)[id]
        m.mentions = try await mentions(for: [m], in: conn)[id]
        return m
    }

    /// Messages with their reactions and mentions.
    func decorated(_ rows: [Row]) async throws -> [Message] {
        var list = try rows.map(message)
        guard !list.isEmpty else { return [] }
        let ids = list.map(\.id), page = list
        let (byMessage, mentioned) = try await db.read { conn in
            (try await reactions(for: ids, in: conn), try await mentions(for: page, in: conn))
        }
        for i in list.indices {
            list[i].reactions = byMessage[list[i].id]
            list[i].mentions = mentioned[list[i].id]
        }
        return list
    }

    func reactions(for ids: [String], in conn: any SQLExecutor) async throws -> [String: [Reaction]] {
        guard !ids.isEmpty else { return [:] }
        let rows = try await conn.query(
            "SELECT message_id, user_id, emoji FROM \(reactions) WHERE message_id IN (\(SQL.list(ids.count))) ORDER BY created_at, user_id",
            ids)
        var out: [String: [Reaction]] = [:]
        for row in rows {
            let mid = try row.string("message_id"), emoji = try row.string("emoji"), uid = try row.string("user_id")
            var list = out[mid] ?? []
            if let i = list.firstIndex(where: { $0.emoji == emoji }) {
                list[i].count += 1
                list[i].userIds.append(uid)
            } else {
                list.append(Reaction(emoji: emoji, count: 1, userIds: [uid]))
            }
            out[mid] = list
        }
        return out
    }

    func message(_ row: Row) throws -> Message {
        let container = try row.string("container_id")
        let deleted = try row.bool("deleted")
        return make(
            id: try row.string("id"), container: container, author: try row.string("author_id"),
            text: try row.string("text"), sentAt: try row.timestamp("sent_at"),
            editedAt: try row.optionalTimestamp("edited_at"), deleted: deleted, replyTo: try row.optionalString("reply_to"))
    }

    func make(
        id: String, container: String, author: String, text: String, sentAt: Timestamp, editedAt: Timestamp?,
        deleted: Bool, replyTo: String?
    ) -> Message {
        Message(
            id: id, authorId: author, conversationId: kind == .conversation ? container : nil,
            chatId: kind == .chat ? container : nil, text: text, sentAt: sentAt, editedAt: editedAt,
            deleted: deleted ? true : nil, replyTo: replyTo, reactions: nil)
    }
}
