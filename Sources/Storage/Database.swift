import Foundation
import Logging
import ServiceKit
import ServiceLifecycle

public enum SQLDialect: String, Sendable {
    case sqlite
    case postgres
}

/// Runs statements. SQL is written once with `$1, $2, ...` placeholders for both engines.
public protocol SQLExecutor: Sendable {
    var dialect: SQLDialect { get }
    @discardableResult
    func query(_ sql: String, _ binds: [any SQLBindable]) async throws -> [Row]
}

extension SQLExecutor {
    @discardableResult
    public func query(_ sql: String, _ binds: any SQLBindable...) async throws -> [Row] {
        try await query(sql, binds)
    }

    public func first(_ sql: String, _ binds: any SQLBindable...) async throws -> Row? {
        try await query(sql, binds).first
    }
}

/// The store every service uses. Reads may run concurrently; writes run in transactions that
/// either commit whole (with their events) or leave nothing behind.
public protocol Database: Sendable {
    var dialect: SQLDialect { get }
    /// Runs `body` on a connection for reading.
    func read<T: Sendable>(_ body: @Sendable (any SQLExecutor) async throws -> T) async throws -> T
    /// A read of a few rows by key (a session by its token, a membership, a conversation by id),
    /// as every request makes before it does anything. On SQLite it runs on the calling thread:
    /// handing it to a reader's thread and back costs more than the read itself. A read that may
    /// scan, or take long for any reason, is a `read`.
    func lookup<T: Sendable>(_ body: @Sendable (any SQLExecutor) async throws -> T) async throws -> T
    /// Runs `body` in one transaction; commits when it returns, rolls back when it throws.
    func write<T: Sendable>(_ body: @Sendable (Transaction) async throws -> T) async throws -> T
    /// Keeps the database open while the service group runs; closes it on shutdown.
    var lifecycle: any ServiceLifecycle.Service { get }
    /// Closes connections (for databases opened outside a service group).
    func close() async throws
    /// Signalled after every commit that appended events (in this process).
    var commits: CommitSignal { get }
    /// Hands every message sent to `channel` by any node to `body` until the task is cancelled.
    /// PostgreSQL's LISTEN; on SQLite, where one node is all there is, it only waits.
    func listen(_ channel: String, _ body: @escaping @Sendable (String) async -> Void) async throws
    /// Sends a message to every node listening on `channel` (PostgreSQL NOTIFY; a no-op on SQLite).
    func notify(_ channel: String, payload: String) async throws
}

extension Database {
    public func lookup<T: Sendable>(_ body: @Sendable (any SQLExecutor) async throws -> T) async throws -> T {
        try await read(body)
    }
}

/// A write transaction: its statements and its events commit together.
public struct Transaction: SQLExecutor {
    let executor: any SQLExecutor
    let state = TransactionState()
    public var dialect: SQLDialect { executor.dialect }

    init(_ executor: any SQLExecutor) { self.executor = executor }

    @discardableResult
    public func query(_ sql: String, _ binds: [any SQLBindable]) async throws -> [Row] {
        try await executor.query(sql, binds)
    }
}

/// Opens the database a URL names: `postgres://user:pass@host:port/db`, or else a SQLite file path
/// (`sqlite://path`, a plain path, or `:memory:`).
public enum DatabaseFactory {
    public static func open(url: String, logger: Logger) async throws -> any Database {
        if url.hasPrefix("postgres://") || url.hasPrefix("postgresql://") {
            return try PostgresDatabase(url: url, logger: logger)
        }
        var path = url
        if path.hasPrefix("sqlite://") { path.removeFirst("sqlite://".count) }
        if path.hasPrefix("file:") { path.removeFirst("file:".count) }
        guard !path.isEmpty else { throw StorageError.unsupportedURL(url) }
        return try await SQLiteDatabase.open(path: path, logger: logger)
    }
}

/// Runs `body` with a database whose background work (the PostgreSQL pool) is running,
/// then closes it. For commands and tests that run outside the server's service group.
public func withDatabase<T: Sendable>(
    url: String, logger: Logger, _ body: @Sendable (any Database) async throws -> T
) async throws -> T {
    let db = try await DatabaseFactory.open(url: url, logger: logger)
    return try await withThrowingTaskGroup(of: Void.self) { group in
        if let pg = db as? PostgresDatabase {
            let (started, signal) = AsyncStream<Void>.makeStream()
            group.addTask {
                signal.finish()
                await pg.runClient()
            }
            for await _ in started {}
            await Task.yield()
        }
        do {
            let result = try await body(db)
            try await db.close()
            group.cancelAll()
            return result
        } catch {
            try? await db.close()
            group.cancelAll()
            throw error
        }
    }
}

public enum SQL {
    /// `$from, $from+1, ...`: the placeholders of an IN list of `count` values.
    public static func list(_ count: Int, from: Int = 1) -> String {
        (from..<(from + count)).map { "$\($0)" }.joined(separator: ", ")
    }

    /// `values` cut into runs of at most `size`, one statement's IN list each: a statement's
    /// parameters are bounded (PostgreSQL 65,535, SQLite 32,766).
    public static func batches<T>(_ values: [T], of size: Int) -> [[T]] {
        stride(from: 0, to: values.count, by: size).map { Array(values[$0..<min(values.count, $0 + size)]) }
    }
}
