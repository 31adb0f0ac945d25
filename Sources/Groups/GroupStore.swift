import Foundation
import ServiceKit
import Storage

/// The groups service's tables.
struct GroupStore: Sendable {
    let db: any Database

    static let migrations = [
        Migration(service: "groups", version: 1, [
            """
            CREATE TABLE chat_groups (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                description TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL)
            """,
            """
            CREATE TABLE group_members (
                group_id TEXT NOT NULL REFERENCES chat_groups (id) ON DELETE CASCADE,
                user_id TEXT NOT NULL,
                role TEXT NOT NULL,
                joined_at BIGINT NOT NULL,
                PRIMARY KEY (group_id, user_id))
            """,
            "CREATE INDEX group_members_user ON group_members (user_id)",
        ])
    ]

    func groups(ids: [String]) async throws -> [Group] {
        let unique = Array(Set(ids))
        guard !unique.isEmpty else { return [] }
        return try await db.read { conn in
            let list = SQL.list(unique.count)
            let groups = try await conn.query(
                "SELECT id, name, description, created_at FROM chat_groups WHERE id IN (\(list))", unique)
            let members = try await conn.query(
                "SELECT group_id, user_id, role FROM group_members WHERE group_id IN (\(list)) ORDER BY joined_at, user_id",
                unique)
            return try Self.assemble(groups, members)
        }
    }

    static func assemble(_ groups: [Row], _ members: [Row]) throws -> [Group] {
        var byGroup: [String: [(String, Role)]] = [:]
        for m in members {
            byGroup[try m.string("group_id"), default: []].append(
                (try m.string("user_id"), Role(rawValue: try m.string("role")) ?? .member))
        }
        return try groups.map { row in
            let id = try row.string("id")
            let ms = byGroup[id] ?? []
            return Group(
                id: id, name: try row.string("name"), memberIds: ms.map(\.0),
                description: try row.string("description"),
                ownerId: ms.first { $0.1 == .owner }?.0 ?? "",
                adminIds: ms.filter { $0.1 >= .admin }.map(\.0),
                createdAt: try row.timestamp("created_at"))
        }
    }

    func groupIDs(of userID: String) async throws -> [String] {
        try await db.read { conn in
            try await conn.query("SELECT group_id FROM group_members WHERE user_id = $1 ORDER BY joined_at", userID)
                .map { try $0.string("group_id") }
        }
    }

    func roles(of userID: String, in groupIDs: [String]) async throws -> [String: Role] {
        let unique = Array(Set(groupIDs))
        guard !unique.isEmpty else { return [:] }
        return try await db.lookup { conn in
            try await conn.query(
                "SELECT group_id, role FROM group_members WHERE user_id = $1 AND group_id IN (\(SQL.list(unique.count, from: 2)))",
                [userID] + unique
            ).reduce(into: [:]) { $0[try $1.string("group_id")] = Role(rawValue: try $1.string("role")) }
        }
    }

    func coMembers(of viewer: String, among others: [String]) async throws -> Set<String> {
        let unique = Array(Set(others))
        guard !unique.isEmpty else { return [] }
        return try await db.read { conn in
            Set(try await conn.query(
                """
                SELECT DISTINCT other.user_id AS uid FROM group_members mine
                JOIN group_members other ON other.group_id = mine.group_id
                WHERE mine.user_id = $1 AND other.user_id IN (\(SQL.list(unique.count, from: 2)))
                """, [viewer] + unique
            ).map { try $0.string("uid") })
        }
    }
}

