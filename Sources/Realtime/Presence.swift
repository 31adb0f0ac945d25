import Foundation
import Groups
import Logging
import NIOConcurrencyHelpers
import ServiceKit
import ServiceLifecycle
import Storage

/// Who is online: a user is while any of their connections on any node is open, and for a short
/// grace period after the last one closes (a page reload is not a goodbye). Each node keeps its
/// rows in the `presence` table fresh with a heartbeat; rows of a node that stopped beating are
/// ignored after `staleAfter`.
public final class Presence: Service, Sendable {
    let db: any Database
    let bus: EventBus
    let groups: any GroupsClient
    let grace: Duration
    let heartbeat: Duration
    let staleAfter: Double
    let logger: Logger
    /// This node's open connections per user, and the users it has a `presence` row for.
    private let local = NIOLockedValueBox<(counts: [String: Int], rowed: Set<String>)>(([:], []))
    /// Each user's latest row change on this node: the next waits for it (a reconnect's insert
    /// must not race the grace period's delete).
    private let transitions = NIOLockedValueBox<[String: Task<Void, Never>]>([:])
    /// The users this node announced since the last heartbeat, and in the period before it.
    private let announced = NIOLockedValueBox<(current: Set<String>, previous: Set<String>)>(([], []))

    static let migration = Migration(service: "realtime", version: 1, [
        """
        CREATE TABLE presence (
            node_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            updated_at BIGINT NOT NULL,
            PRIMARY KEY (node_id, user_id))
        """,
        "CREATE INDEX presence_user ON presence (user_id)",
    ])

    public init(db: any Database, bus: EventBus, groups: any GroupsClient, grace: Duration = .seconds(5),
                heartbeat: Duration = .seconds(10), logger: Logger) {
        self.db = db
        self.bus = bus
        self.groups = groups
        self.grace = grace
        self.heartbeat = heartbeat
        self.staleAfter = heartbeat.seconds * 3 + 1
        self.logger = logger
    }

    func connected(_ user: String) async {
        let first = local.withLockedValue { s -> Bool in
            s.counts[user, default: 0] += 1
            return s.counts[user] == 1
        }
        guard first else { return }
        await serially(user) {
            let hadRow = self.local.withLockedValue { !$0.rowed.insert(user).inserted }
            _ = try? await self.db.write { tx in
                try await tx.query(
                    """
                    INSERT INTO presence (node_id, user_id, updated_at) VALUES ($1, $2, $3)
                    ON CONFLICT (node_id, user_id) DO UPDATE SET updated_at = excluded.updated_at
                    """, self.bus.nodeID, user, Timestamp.now())
            }
            // Written before looking: of two nodes changing one user's rows at once, the one
            // that looks last sees the other's change, so co-members are never left with
            // "offline" for a user who is connected.
            if !hadRow, (try? await self.onOtherNodes(user)) == false { await self.announce(user, online: true) }
        }
    }

    func disconnected(_ user: String) {
        let last = local.withLockedValue { s -> Bool in
            s.counts[user, default: 1] -= 1
            if s.counts[user]! <= 0 { s.counts[user] = nil; return true }
            return false
        }
        guard last else { return }
        Task {
            try? await Task.sleep(for: grace)
            await serially(user) {
                // Back within the grace period: still online, nothing to say.
                let gone = self.local.withLockedValue { s -> Bool in
                    guard s.counts[user] == nil else { return false }
                    s.rowed.remove(user)
                    return true
                }
                guard gone else { return }
                _ = try? await self.db.write { tx in
                    try await tx.query("DELETE FROM presence WHERE node_id = $1 AND user_id = $2", self.bus.nodeID, user)
                }
                if (try? await self.onOtherNodes(user)) == false { await self.announce(user, online: false) }
            }
        }
    }

    /// Runs `body` after the user's previous transition on this node has finished.
    private func serially(_ user: String, _ body: @escaping @Sendable () async -> Void) async {
        let task = transitions.withLockedValue { t -> Task<Void, Never> in
            let previous = t[user]
            let next = Task {
                await previous?.value
                await body()
            }
            t[user] = next
            return next
        }
        await task.value
        transitions.withLockedValue { t in if t[user] == task { t[user] = nil } }
    }

    /// Whether another node has a fresh row for the user.
    private func onOtherNodes(_ user: String) async throws -> Bool {
        let fresh = Timestamp.now().adding(seconds: -staleAfter)
        return try await db.read { conn in
            try await conn.first(
                "SELECT 1 FROM presence WHERE user_id = $1 AND node_id <> $2 AND updated_at > $3", user, bus.nodeID, fresh) != nil
        }
    }

    /// Which of `users` are online on any node.
    public func online(_ users: [String]) async throws -> Set<String> {
        let unique = Array(Set(users))
        let fresh = Timestamp.now().adding(seconds: -staleAfter)
        var online: Set<String> = []
        for batch in SQL.batches(unique, of: 1000) {
            online.formUnion(try await db.read { conn in
                try await conn.query(
                    "SELECT DISTINCT user_id FROM presence WHERE updated_at > $1 AND user_id IN (\(SQL.list(batch.count, from: 2)))",
                    [fresh] + batch
                ).map { try $0.string("user_id") }
            })
        }
        return online
    }

    /// Drops rows no node has kept fresh (a node that was killed, or lost its database) and
    /// tells co-members of their users who are now offline everywhere. Whichever node deletes a
    /// row announces it, once.
    func sweep() async throws {
        let stale = Timestamp.now().adding(seconds: -staleAfter)
        let users = try await db.write { tx in
            try await tx.query("DELETE FROM presence WHERE updated_at <= $1 RETURNING user_id", stale).map { try $0.string("user_id") }
        }
        for user in try await Set(users).subtracting(online(users)) {
            await announce(user, online: false)
        }
    }

    /// Tells the user's co-members (and the user's other devices).
    func announce(_ user: String, online: Bool) async {
        announced.withLockedValue { _ = $0.current.insert(user) }
        await publish(user, online: online)
    }

    /// Says again what the table now says of the users announced a heartbeat or two ago. Two
    /// nodes' announcements for one user (one node's last connection closed as another's
    /// opened) travel separately and can reach a third node in either order, leaving
    /// co-members with "offline" for a user who is connected; the repeat, read after both,
    /// settles it.
    func reannounce() async throws {
        let users = announced.withLockedValue { a -> Set<String> in
            defer { a = ([], a.current) }
            return a.previous
        }
        guard !users.isEmpty else { return }
        let on = try await online(Array(users))
        for user in users { await publish(user, online: on.contains(user)) }
    }

    private func publish(_ user: String, online: Bool) async {
        let frame = #"{"type":"presence","user_id":"\#(user)","online":\#(online)}"#
        await bus.publish(audience: "user:\(user)", frame: frame, except: nil)
        for g in (try? await groups.groupIDs(of: user)) ?? [] {
            await bus.publish(audience: "group:\(g)", frame: frame, except: nil)
        }
    }

    public func run() async throws {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: self.heartbeat)
                    _ = try? await self.db.write { tx in
                        try await tx.query("UPDATE presence SET updated_at = $2 WHERE node_id = $1", self.bus.nodeID, Timestamp.now())
                    }
                    try? await self.sweep()
                }
            }
            group.addTask {
                // Beside the heartbeat, not in its loop: however many users it repeats, this
                // node's rows stay fresh.
                while !Task.isCancelled {
                    try? await Task.sleep(for: self.heartbeat)
                    try? await self.reannounce()
                }
            }
            try? await gracefulShutdown()
            group.cancelAll()
        }
        // This node's users are no longer here.
        _ = try? await db.write { tx in try await tx.query("DELETE FROM presence WHERE node_id = $1", bus.nodeID) }
    }
}
