import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SQLiteNIO
import ServiceLifecycle

/// The embedded database: one SQLite file in WAL mode, one writer connection (SQLite allows one
/// writer at a time) and a few reader connections that read concurrently with it.
public final class SQLiteDatabase: Database {
    public let dialect: SQLDialect = .sqlite
    public let commits = CommitSignal()
    private let writer: Connection
    private let readers: [Connection]
    private let writeLock = AsyncSemaphore(permits: 1)
    private let readerPool: ReaderPool
    private let threadPool: NIOThreadPool
    private let closed = NIOLockedValueBox(false)

    private init(writer: Connection, readers: [Connection], threadPool: NIOThreadPool) {
        self.writer = writer
        self.readers = readers
        self.threadPool = threadPool
        self.readerPool = ReaderPool(readers)
    }

    public static func open(path: String, logger: Logger, readers readerCount: Int = 4) async throws -> SQLiteDatabase {
        let memory = path == ":memory:"
        if !memory {
            let dir = URL(fileURLWithPath: path).deletingLastPathComponent().path
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        }
        // SQLite calls block: they get threads of their own so they never starve other pools.
        let pool = NIOThreadPool(numberOfThreads: memory ? 1 : readerCount + 1)
        pool.start()
        let storage: SQLiteConnection.Storage = memory ? .memory : .file(path: path)
        let eventLoop = MultiThreadedEventLoopGroup.singleton.any()
        func connect() async throws -> Connection {
            let c = try await SQLiteConnection.open(storage: storage, threadPool: pool, logger: logger, on: eventLoop)
            let conn = Connection(c)
            _ = try await conn.query("PRAGMA busy_timeout = 10000", [])
            _ = try await conn.query("PRAGMA foreign_keys = ON", [])
            return conn
        }
        let writer = try await connect()
        if !memory {
            _ = try await writer.query("PRAGMA journal_mode = WAL", [])
            _ = try await writer.query("PRAGMA synchronous = NORMAL", [])
            // No checkpoint inside a commit (the WAL's contents copied back and the file synced,
            // milliseconds that a message send would wait for): `checkpoints()` does it beside.
            _ = try await writer.query("PRAGMA wal_autocheckpoint = 0", [])
        }
        var readers: [Connection] = []
        if !memory {
            for _ in 0..<readerCount { readers.append(try await connect()) }
        }
        return SQLiteDatabase(writer: writer, readers: readers, threadPool: pool)
    }

    public func read<T: Sendable>(_ body: @Sendable (any SQLExecutor) async throws -> T) async throws -> T {
        guard !closed.withLockedValue({ $0 }) else { throw StorageError.closed }
        if readers.isEmpty {
            return try await writeLock.withPermit { try await body(writer) }
        }
        let conn = await readerPool.acquire()
        defer { readerPool.release(conn) }
        return try await body(conn)
    }

    public func write<T: Sendable>(_ body: @Sendable (Transaction) async throws -> T) async throws -> T {
        // A request past its deadline is cancelled: it must not start writing after its caller
        // was told it failed.
        guard !closed.withLockedValue({ $0 }) else { throw StorageError.closed }
        return try await writeLock.withPermit {
            try Task.checkCancellation()
            _ = try await writer.query("BEGIN IMMEDIATE", [])
            do {
                let tx = Transaction(writer)
                let result = try await body(tx)
                _ = try await writer.query("COMMIT", [])
                if tx.state.hasEvents { commits.signal() }
                return result
            } catch {
                _ = try? await writer.query("ROLLBACK", [])
                throw error
            }
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
            // Wait for the writer so no transaction is cut in half.
            await writeLock.wait()
            for r in readers { try? await r.connection.close() }
            try? await writer.query("PRAGMA wal_checkpoint(TRUNCATE)", [])
            try await writer.connection.close()
            writeLock.signal()
            try await threadPool.shutdownGracefully()
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

    /// One SQLite connection speaking our placeholder style.
    final class Connection: SQLExecutor {
        let connection: SQLiteConnection
        var dialect: SQLDialect { .sqlite }
        init(_ connection: SQLiteConnection) { self.connection = connection }

        func query(_ sql: String, _ binds: [any SQLBindable]) async throws -> [Row] {
            let rows = NIOLockedValueBox<[Row]>([])
            do {
                try await connection.query(Self.rewrite(sql), binds.map { Self.data($0.sqlValue) }) { row in
                    var values: [String: SQLValue] = [:]
                    for column in row.columns { values[column.name] = Self.value(column.data) }
                    rows.withLockedValue { $0.append(Row(values)) }
                }
            } catch let error as SQLiteError {
                if error.message.contains("UNIQUE constraint failed") {
                    throw StorageError.uniqueViolation(error.message)
                }
                throw error
            }
            return rows.withLockedValue { $0 }
        }

        /// `$1` -> `?1`: the same positional parameters, in SQLite's spelling.
        static func rewrite(_ sql: String) -> String {
            var out = ""
            out.reserveCapacity(sql.utf8.count)
            var inString = false
            for ch in sql {
                if ch == "'" { inString.toggle() }
                out.append(!inString && ch == "$" ? "?" : ch)
            }
            return out
        }

        static func data(_ v: SQLValue) -> SQLiteData {
            switch v {
            case .null: return .null
            case .int(let i): return .integer(Int(i))
            case .double(let d): return .float(d)
            case .text(let s): return .text(s)
            case .blob(let b): return .blob(ByteBuffer(bytes: b))
            }
        }

        static func value(_ d: SQLiteData) -> SQLValue {
            switch d {
            case .null: return .null
            case .integer(let i): return .int(Int64(i))
            case .float(let f): return .double(f)
            case .text(let s): return .text(s)
            case .blob(var b): return .blob(b.readBytes(length: b.readableBytes) ?? [])
            }
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
