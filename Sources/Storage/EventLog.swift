import Foundation
import ServiceKit

/// One stored event: what changed, who may hear of it, and where it sits in the log.
public struct Event: Sendable, Equatable {
    public let seq: Int64
    public let type: String
    /// Who may see it: `user:<id>`, `group:<id>`, `chat:<id>`.
    public let audience: String
    /// The event's JSON body.
    public let payload: String
    public let createdAt: Timestamp
}

/// The append-only event log. Events are written in the same transaction as the change they
/// describe, so a committed change always has its event and a rolled-back one never does.
public enum EventLog {
    static let migration = Migration(service: "events", version: 1, [
        """
        CREATE TABLE events (
            seq {{serial}},
            type TEXT NOT NULL,
            audience TEXT NOT NULL,
            payload TEXT NOT NULL,
            created_at BIGINT NOT NULL)
        """,
        "CREATE INDEX events_audience ON events (audience, seq)",
    ])

    /// The events a filtered read takes whatever their audience (`read(_:after:audiences:limit:)`),
    /// indexed by themselves: a partial index that other events' inserts do not touch.
    static let wideningMigration = Migration(service: "events", version: 2, [
        "CREATE INDEX events_widening ON events (seq) WHERE \(wideningFilter)",
    ])

    /// The types of the events that can give a user new audiences (a join goes to the group, a
    /// new chat to the chat, where the user was not yet). Spelled out, not bound: a query uses
    /// the partial index only when its condition is the index's own, word for word.
    public static let wideningTypes = ["member.joined", "chat.created"]
    static let wideningFilter = "type IN (\(wideningTypes.map { "'\($0)'" }.joined(separator: ", ")))"

    /// Appends an event inside `tx` and returns its sequence number. Services log typed events
    /// (`append(_:_:)` with a `DomainEvent`), so the compiler checks every event's shape.
    @discardableResult
    static func append(
        _ tx: Transaction, type: String, audience: String, payload: some Encodable
    ) async throws -> Int64 {
        try await serialize(tx)
        if !tx.state.hasEvents, tx.dialect == .postgres {
            // Once per transaction, with its first event; delivered at commit to every node
            // listening, this one included.
            try await tx.query("SELECT pg_notify('\(notifyChannel)', '')")
        }
        let json = String(decoding: try JSON.encode(payload), as: UTF8.self)
        let now = Timestamp.now()
        let row = try await tx.first(
            "INSERT INTO events (type, audience, payload, created_at) VALUES ($1, $2, $3, $4) RETURNING seq",
            type, audience, json, now)
        guard let row else { throw StorageError.missingColumn("seq") }
        let seq = try row.int("seq")
        tx.state.record(Event(seq: seq, type: type, audience: audience, payload: json, createdAt: now))
        return seq
    }

    /// Makes `tx` the only appender until it ends. A sequence hands out numbers at insert, not at
    /// commit; serialising appenders makes commit order equal sequence order, so a reader never
    /// sees seq 11 before seq 10. SQLite has one writer anyway. Calling it again is free.
    public static func serialize(_ tx: Transaction) async throws {
        if tx.dialect == .postgres { try await tx.query("SELECT pg_advisory_xact_lock(7201)") }
    }

    /// The PostgreSQL channel that announces committed events to every node.
    public static let notifyChannel = "verteilt_events"

    /// The oldest retained sequence number, nil for an empty log.
    public static func oldest(_ db: any Database) async throws -> Int64? {
        try await db.read { conn in
            try await conn.first("SELECT MIN(seq) AS oldest FROM events")?.optionalInt("oldest")
        }
    }

    /// Drops events older than `before`, always keeping the newest so the head stays known.
    @discardableResult
    public static func prune(_ db: any Database, before: Timestamp) async throws -> Int {
        try await db.write { tx in
            try await tx.query(
                "DELETE FROM events WHERE created_at < $1 AND seq < (SELECT MAX(seq) FROM events) RETURNING seq", before
            ).count
        }
    }

    /// Events after `seq`, oldest first.
    public static func read(_ db: any Database, after seq: Int64, limit: Int = 1000) async throws -> [Event] {
        try await db.read { conn in
            try await conn.query(
                "SELECT seq, type, audience, payload, created_at FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
                seq, limit
            ).map(Self.event)
        }
    }

    /// Events after `seq` that go to one of `audiences` or could widen them (`wideningTypes`),
    /// oldest first, at most `limit` of each. `through` is how far the log was read: the last event's seq
    /// when a page is full, else the end of the span read or the head the read saw (appenders are
    /// serialised, so nothing at or before it can commit later). Both parts are read through an
    /// index: a reader catching up after a day reads its own events, not the day's.
    public static func read(
        _ db: any Database, after seq: Int64, audiences: [String], limit: Int, span: Int64 = filteredSpan
    ) async throws -> (events: [Event], through: Int64) {
        let limit = max(1, limit)
        return try await db.read { conn in
            let head = try await head(in: conn)
            guard head > seq else { return ([], seq) }
            // A span of the log at a time: each part's rows are sorted before the limit applies,
            // which must not mean all of a busy group's events since a week-old cursor.
            let upper = min(head, seq + max(1, span))
            var parts: [(filter: String, binds: [any SQLBindable])] = [(wideningFilter, [])]
            if !audiences.isEmpty { parts.append(("audience IN (\(SQL.list(audiences.count, from: 4)))", audiences)) }
            var through = upper
            var events: [Int64: Event] = [:]
            for part in parts {
                let page = try await conn.query(
                    """
                    SELECT seq, type, audience, payload, created_at FROM events
                    WHERE \(part.filter) AND seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3
                    """,
                    [seq, upper, limit] + part.binds
                ).map(Self.event)
                // A full page says nothing past its last event.
                if page.count == limit { through = min(through, page[limit - 1].seq) }
                // A join to one of the audiences is in both parts.
                for e in page { events[e.seq] = e }
            }
            return (events.values.filter { $0.seq <= through }.sorted { $0.seq < $1.seq }, through)
        }
    }

    /// How much of the log one filtered read looks at.
    public static let filteredSpan: Int64 = 20_000

    /// The newest sequence number, 0 for an empty log.
    public static func head(_ db: any Database) async throws -> Int64 {
        try await db.read { try await head(in: $0) }
    }

    /// The newest sequence number as `conn` sees it (inside a transaction or a read).
    public static func head(in conn: any SQLExecutor) async throws -> Int64 {
        try await conn.first("SELECT COALESCE(MAX(seq), 0) AS head FROM events")?.int("head") ?? 0
    }

    static func event(_ row: Row) throws -> Event {
        Event(
            seq: try row.int("seq"), type: try row.string("type"), audience: try row.string("audience"),
            payload: try row.string("payload"), createdAt: try row.timestamp("created_at"))
    }
}
