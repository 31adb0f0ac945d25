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
    private let local = NIOLockedValueBox<[String: Int]>([:])

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
        self.staleAfter = Double(heartbeat.components.seconds) * 3 + 1
        self.logger = logger
    }

    func connected(_ user: String) async {
        let first = local.withLockedValue { counts -> Bool in
            counts[user, default: 0] += 1
            return counts[user] == 1
        }
        guard first else { return }
        let wasOnline = (try? await online([user]).contains(user)) ?? false
        _ = try? await db.write { tx in
            try await tx.query(
                """
                INSERT INTO presence (node_id, user_id, updated_at) VALUES ($1, $2, $3)
                ON CONFLICT (node_id, user_id) DO UPDATE SET updated_at = excluded.updated_at
                """, bus.nodeID, user, Timestamp.now())
        }
        if !wasOnline { await announce(user, online: true) }
    }

    func disconnected(_ user: String) {
        let last = local.withLockedValue { counts -> Bool in
            counts[user, default: 1] -= 1
            if counts[user]! <= 0 { counts[user] = nil; return true }
            return false
        }
        guard last else { return }
        Task {
            try? await Task.sleep(for: grace)
            // Back within the grace period: still online, nothing to say.
            guard local.withLockedValue({ $0[user] == nil }) else { return }
            _ = try? await db.write { tx in
                try await tx.query("DELETE FROM presence WHERE node_id = $1 AND user_id = $2", bus.nodeID, user)
            }
            if let others = try? await online([user]), others.isEmpty {
                await announce(user, online: false)
            }
        }
    }

    /// Which of `users` are online on any node.
    public func online(_ users: [String]) async throws -> Set<String> {
        let unique = Array(Set(users))
        guard !unique.isEmpty else { return [] }
        let fresh = Timestamp.now().adding(seconds: -staleAfter)
        return try await db.read { conn in
            Set(try await conn.query(
                "SELECT DISTINCT user_id FROM presence WHERE updated_at > $1 AND user_id IN (\(SQL.list(unique.count, from: 2)))",
                [fresh] + unique
            ).map { try $0.string("user_id") })
        }
    }

    /// Tells the user's co-members (and the user's other devices).
    func announce(_ user: String, online: Bool) async {
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
                }
            }
            try? await gracefulShutdown()
            group.cancelAll()
        }
        // This node's users are no longer here.
        _ = try? await db.write { tx in try await tx.query("DELETE FROM presence WHERE node_id = $1", bus.nodeID) }
    }
}
