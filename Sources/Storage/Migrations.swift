import Foundation
import ServiceKit

/// A schema change owned by one service. SQL is written once; the few words that differ between
/// engines are spelled as macros that Storage expands:
/// `{{serial}}` an auto-incrementing integer primary key, `{{blob}}` a byte string.
public struct Migration: Sendable {
    public let service: String
    public let version: Int
    let statements: [SQLDialect: [String]]

    public init(service: String, version: Int, _ statements: [String]) {
        self.service = service
        self.version = version
        self.statements = [.sqlite: statements, .postgres: statements]
    }

    /// A change that each engine spells its own way (only Storage's own helpers need this).
    init(service: String, version: Int, sqlite: [String], postgres: [String]) {
        self.service = service
        self.version = version
        self.statements = [.sqlite: sqlite, .postgres: postgres]
    }

    func expanded(for dialect: SQLDialect) -> [String] {
        (statements[dialect] ?? []).map { sql in
            switch dialect {
            case .sqlite:
                return sql.replacingOccurrences(of: "{{serial}}", with: "INTEGER PRIMARY KEY AUTOINCREMENT")
                    .replacingOccurrences(of: "{{blob}}", with: "BLOB")
            case .postgres:
                return sql.replacingOccurrences(of: "{{serial}}", with: "BIGSERIAL PRIMARY KEY")
                    .replacingOccurrences(of: "{{blob}}", with: "BYTEA")
            }
        }
    }
}

public enum Migrator {
    /// Applies every migration not yet applied, each in its own transaction. Safe to run from
    /// several nodes at once: on PostgreSQL they queue on an advisory lock.
    @discardableResult
    public static func migrate(_ db: any Database, _ migrations: [Migration]) async throws -> [String] {
        let all = [EventLog.migration, EventLog.wideningMigration] + migrations
        try await db.write { tx in
            try await tx.query("""
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    service TEXT NOT NULL, version BIGINT NOT NULL, applied_at BIGINT NOT NULL,
                    PRIMARY KEY (service, version))
                """)
        }
        var applied: [String] = []
        for m in all {
            let done = try await db.write { tx -> Bool in
                if tx.dialect == .postgres { try await tx.query("SELECT pg_advisory_xact_lock(7200)") }
                let exists = try await tx.first(
                    "SELECT 1 AS one FROM schema_migrations WHERE service = $1 AND version = $2", m.service, m.version)
                if exists != nil { return false }
                for sql in m.expanded(for: tx.dialect) { try await tx.query(sql) }
                try await tx.query(
                    "INSERT INTO schema_migrations (service, version, applied_at) VALUES ($1, $2, $3)",
                    m.service, m.version, Timestamp.now())
                return true
            }
            if done { applied.append("\(m.service) v\(m.version)") }
        }
        return applied
    }
}
