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
    private let readerPool: ReaderPool<Connection>
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
        guard let conn = await readerPool.acquire() else { throw StorageError.closed }
        defer { readerPool.release(conn) }
        return try await Self.run(body, on: conn)
    }

    public func lookup<T: Sendable>(_ body: @Sendable (any SQLExecutor) async throws -> T) async throws -> T {
        guard !closed.withLockedValue({ $0 }) else { throw StorageError.closed }
        guard !readers.isEmpty else { return try await read(body) }
        // The pool hands a connection to one holder at a time: its statements run right here.
        guard let conn = await readerPool.acquire() else { throw StorageError.closed }
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
                    // Nor commit once cut off: its caller was told it failed, and a removal that waits out
                    // request deadlines before it looks again must not miss a late write.
                    try Task.checkCancellation()
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
            // lookup uses its connection on the caller's thread. Reads still waiting for a
            // reader fail with `closed`; writes still waiting for the writer fail on its
            // closed handle.
            await writeLock.wait()
            await readerPool.close()
            for r in readers { await r.close() }
            _ = try? await writer.query("PRAGMA wal_checkpoint(TRUNCATE)", [])
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
            guard let conn = await readerPool.acquire() else { return }
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
}

/// Free reader connections and the tasks waiting for one, FIFO. A holder must give its
/// connection back before it waits for another reader or for the writer: `close()` waits for
/// every connection to come back.
final class ReaderPool<Connection: Sendable>: Sendable {
    private struct State {
        var free: [Connection]
        var waiters: [CheckedContinuation<Connection?, Never>] = []
        var closed = false
        var drained: CheckedContinuation<Void, Never>?
    }
    private let state: NIOLockedValueBox<State>
    private let count: Int

    /// How many tasks wait for a connection.
    var waiting: Int { state.withLockedValue { $0.waiters.count } }

    init(_ connections: [Connection]) {
        state = NIOLockedValueBox(State(free: connections))
        count = connections.count
    }

    /// A free connection, or nil once the pool is closed (also for those already waiting).
    func acquire() async -> Connection? {
        await withCheckedContinuation { (c: CheckedContinuation<Connection?, Never>) in
            let now = state.withLockedValue { s -> Connection?? in
                if s.closed { return .some(nil) }
                if let conn = s.free.popLast() { return .some(conn) }
                s.waiters.append(c)
                return .none
            }
            if let now { c.resume(returning: now) }
        }
    }

    func release(_ conn: Connection) {
        let (waiter, drained) = state.withLockedValue { s -> (CheckedContinuation<Connection?, Never>?, CheckedContinuation<Void, Never>?) in
            if !s.closed, !s.waiters.isEmpty { return (s.waiters.removeFirst(), nil) }
            s.free.append(conn)
            if s.closed, s.free.count == count, let d = s.drained {
                s.drained = nil
                return (nil, d)
            }
            return (nil, nil)
        }
        waiter?.resume(returning: conn)
        drained?.resume()
    }

    /// Refuses every waiting and later `acquire()`, then waits until each connection handed
    /// out has come back. Called once.
    func close() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let (waiters, done) = state.withLockedValue { s -> ([CheckedContinuation<Connection?, Never>], Bool) in
                s.closed = true
                defer { s.waiters = [] }
                if s.free.count == count { return (s.waiters, true) }
                s.drained = c
                return (s.waiters, false)
            }
            for w in waiters { w.resume(returning: nil) }
            if done { c.resume() }
        }
    }
}
