import Foundation
import Logging
import Storage

/// The engines a suite runs against. SQLite always; PostgreSQL when `TEST_POSTGRES_URL` names a
/// server (scripts/test starts one and sets `VERTEILT_TEST_REQUIRE_POSTGRES=1`, which turns a
/// missing server into a failure rather than a skip).
public enum Backend: String, Sendable, CaseIterable, CustomStringConvertible {
    case sqlite
    case postgres

    public var description: String { rawValue }

    public static var all: [Backend] {
        let env = ProcessInfo.processInfo.environment
        if env["TEST_POSTGRES_URL"] != nil || env["VERTEILT_TEST_REQUIRE_POSTGRES"] == "1" {
            return [.sqlite, .postgres]
        }
        return [.sqlite]
    }
}

public struct TestDatabaseError: Error, CustomStringConvertible {
    public let description: String
}

/// A fresh, empty database for one test: a SQLite file in a temporary folder, or a new
/// PostgreSQL database on the test server.
public struct TestDatabase: Sendable {
    public let url: String
    let cleanup: @Sendable () async throws -> Void

    public static let logger: Logger = {
        var l = Logger(label: "test")
        l.logLevel = .warning
        return l
    }()

    public static func make(_ backend: Backend) async throws -> TestDatabase {
        switch backend {
        case .sqlite:
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("verteilt-test-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            return TestDatabase(url: dir.appendingPathComponent("test.sqlite").path) {
                try? FileManager.default.removeItem(at: dir)
            }
        case .postgres:
            guard let admin = ProcessInfo.processInfo.environment["TEST_POSTGRES_URL"] else {
                throw TestDatabaseError(description: "TEST_POSTGRES_URL is not set: run ./scripts/test, which starts PostgreSQL")
            }
            let name = "t_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
            try await withDatabase(url: admin, logger: logger) { db in
                try await db.read { try await $0.query("CREATE DATABASE \(name)") }
            }
            var components = URLComponents(string: admin)!
            components.path = "/" + name
            return TestDatabase(url: components.string!) {
                try await withDatabase(url: admin, logger: logger) { db in
                    try await db.read { try await $0.query("DROP DATABASE IF EXISTS \(name) WITH (FORCE)") }
                }
            }
        }
    }

    public func drop() async throws { try await cleanup() }

    /// Runs `body` with an open, migrated database, then drops it.
    public static func with<T: Sendable>(
        _ backend: Backend, migrations: [Migration] = [], _ body: @Sendable (any Database) async throws -> T
    ) async throws -> T {
        let test = try await make(backend)
        do {
            let result = try await withDatabase(url: test.url, logger: logger) { db in
                try await Migrator.migrate(db, migrations)
                return try await body(db)
            }
            try await test.drop()
            return result
        } catch {
            try? await test.drop()
            throw error
        }
    }
}
