import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle

/// The embedded database: one SQLite file in WAL mode, one writer connection (SQLite allows one
/// writer at a time) and a few reader connections that read concurrently with it. A transaction
/// or a read runs whole on its connection's thread, so its statements cost no thread hand-offs.
public final class SQLiteDatabase: Database {
    public let dialect: SQLDialect = .sqlite
    public let commits = CommitSignal(handsOverEvents: true)
    private let writer: Connection
    private let readers: [Connection]
    private let writeLock = AsyncSemaphore(permits: 1)
    private let readerPool: ReaderPool
    private let closed = NIOLockedValueBox(false)
    typealias Connection = SQLiteConnection

    private init(writer: Connection, readers: [Connection]) {
        self.writer = writer
        self.readers = readers
        self.readerPool = ReaderPool(readers)
    }

    public static func open(path: String, logger: Logger, readers readerCount: Int = 4) async throws -> SQLiteDatabase {
        let memory = path == ":memory:"
        if !memory {
            let dir = URL(fileURLWithPath: path).deletingLastPathComponent().path
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        }
        // Connections opened before a failure are closed again: each holds a thread and a file.
        var opened: [Connection] = []
        func connect(_ name: String) async throws -> Connection {
            let conn = try await Connection.open(path: path, name: name)
            opened.append(conn)
            _ = try await conn.query("PRAGMA foreign_keys = ON", [])
            return conn
        }
        do {
            let writer = try await connect("SQLite writer")
            if !memory {
                _ = try await writer.query("PRAGMA journal_mode = WAL", [])
                _ = try await writer.query("PRAGMA synchronous = NORMAL", [])
                // No checkpoint inside a commit (the WAL's contents copied back and the file synced,
                // milliseconds that a message send would wait for): `checkpoints()` does it beside.
                _ = try await writer.query("PRAGMA wal_autocheckpoint = 0", [])
            }
            var readers: [Connection] = []
            if !memory {
                for i in 0..<readerCount { readers.append(try await connect("SQLite reader \(i)")) }
            }
            return SQLiteDatabase(writer: writer, readers: readers)
        } catch {
            for c in opened { await c.close() }
            throw error
        }
    }

    public func read<T: Sendable>(_ body: @Sendable (any SQLExecutor) async throws -> T) async throws -> T {
        guard !closed.withLockedValue({ $0 }) else { throw StorageError.closed }
        if readers.isEmpty {
            return try await writeLock.withPermit { try await Self.run(body, on: writer) }
        }
        let conn = await readerPool.acquire()
        defer { readerPool.release(conn) }
        return try await Self.run(body, on: conn)
    }

    public func lookup<T: Sendable>(_ body: @Sendable (any SQLExecutor) async throws -> T) async throws -> T {
        guard !closed.withLockedValue({ $0 }) else { throw StorageError.closed }
        guard !readers.isEmpty else { return try await read(body) }
        // The pool hands a connection to one holder at a time: its statements run right here.
        let conn = await readerPool.acquire()
        defer { readerPool.release(conn) }
        return try await body(SQLiteConnection.Held(connection: conn))
    }

    /// Runs `body` on `conn`'s thread: its statements then run without leaving it.
    private static func run<T: Sendable>(
        _ body: @Sendable (Connection) async throws -> T, on conn: Connection
    ) async throws -> T {
        try await withTaskExecutorPreference(conn.thread) { try await body(conn) }
    }

    public func write<T: Sendable>(_ body: @Sendable (Transaction) async throws -> T) async throws -> T {
        // A request past its deadline is cancelled: it must not start writing after its caller
        // was told it failed.
        guard !closed.withLockedValue({ $0 }) else { throw StorageError.closed }
        return try await writeLock.withPermit {
            try Task.checkCancellation()
            let commits = self.commits
            let (result, hasEvents) = try await Self.run({ writer in
                _ = try await writer.query("BEGIN IMMEDIATE", [])
                do {
                    let tx = Transaction(writer)
                    let result = try await body(tx)
                    _ = try await writer.query("COMMIT", [])
                    // Still on the writer's thread and holding the write lock: in commit order.
                    commits.committed(tx.state.events)
                    return (result, tx.state.hasEvents)
                } catch {
                    _ = try? await writer.query("ROLLBACK", [])
                    throw error
                }
            }, on: writer)
            if hasEvents { commits.signal() }
            return result
        }
    }

    public var lifecycle: any ServiceLifecycle.Service { Lifecycle(database: self) }

    public func listen(_ channel: String, _ body: @escaping @Sendable (String) async -> Void) async throws {
        // One process is the only node: nothing ever arrives from elsewhere.
        try await Task.sleep(for: .seconds(Double(Int32.max)))
    }

    public func notify(_ channel: String, payload: String) async throws {}

    public func close() async throws {
        let wasClosed = closed.withLockedValue { c in
            defer { c = true }
            return c
        }
        if wasClosed { return }
        // Closing must finish even when the caller is being cancelled (a cancelled shutdown):
        // an unclosed connection leaks its file handle and WAL.
        try await Task {
            // Wait for the writer so no transaction is cut in half, and for every reader: a
            // lookup uses its connection on the caller's thread.
            await writeLock.wait()
            for _ in readers { _ = await readerPool.acquire() }
            for r in readers { await r.close() }
            try? await writer.query("PRAGMA wal_checkpoint(TRUNCATE)", [])
            await writer.close()
            writeLock.signal()
        }.value
    }

    /// Copies the WAL back into the database file every `interval`, on a reader connection and
    /// without waiting for the writer (PASSIVE), until cancelled. The database's lifecycle
    /// service runs it every second.
    public func checkpoints(every interval: Duration) async {
        guard !readers.isEmpty else { return }
        while !Task.isCancelled {
            try? await Task.sleep(for: interval)
            if closed.withLockedValue({ $0 }) || Task.isCancelled { return }
            let conn = await readerPool.acquire()
            _ = try? await conn.query("PRAGMA wal_checkpoint(PASSIVE)", [])
            readerPool.release(conn)
        }
    }

    struct Lifecycle: ServiceLifecycle.Service {
        let database: SQLiteDatabase
        func run() async throws {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await database.checkpoints(every: .seconds(1)) }
                try? await gracefulShutdown()
                group.cancelAll()
            }
            try await database.close()
        }
    }

    /// Free reader connections and the tasks waiting for one.
    final class ReaderPool: Sendable {
        private let free: NIOLockedValueBox<[Connection]>
        private let available: AsyncSemaphore

        init(_ connections: [Connection]) {
            free = NIOLockedValueBox(connections)
            available = AsyncSemaphore(permits: connections.count)
        }

        func acquire() async -> Connection {
            await available.wait()
            return free.withLockedValue { $0.removeLast() }
        }

        func release(_ c: Connection) {
            free.withLockedValue { $0.append(c) }
            available.signal()
        }
    }
}
