import Foundation
import VaporCSQLite

/// One SQLite connection (the SQLite that sqlite-nio vendors, called directly) and the thread it
/// runs on. Statements are prepared once and kept; a statement called from the connection's own
/// thread (inside a transaction or read that runs there) runs at once, from anywhere else it is
/// handed to that thread. The handle and the statement cache are touched by one thread at a
/// time: that thread, or the task that holds a reader for a lookup (`Held`; the reader pool
/// gives a connection to one holder at a time, and closing waits for each). That is what makes
/// the unchecked `Sendable` sound (the connection is opened without SQLite's own mutex).
final class SQLiteConnection: SQLExecutor, @unchecked Sendable {
    let thread: SQLiteThread
    private var handle: OpaquePointer?
    private var statements: [String: Statement] = [:]
    var dialect: SQLDialect { .sqlite }

    struct Statement {
        let handle: OpaquePointer
        var columns: [String]
        /// How often SQLite had re-prepared it when `columns` was read (a schema change may
        /// change a statement's columns under it).
        var reprepared: Int32
    }

    /// Statements kept per connection; past it the cache starts over (SQL built with a varying
    /// number of placeholders would otherwise grow it without end).
    static let cacheLimit = 512

    private init(thread: SQLiteThread) { self.thread = thread }

    static func open(path: String, name: String) async throws -> SQLiteConnection {
        let c = SQLiteConnection(thread: SQLiteThread(name: name))
        do {
            try await c.thread.run {
                let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
                var handle: OpaquePointer?
                let rc = sqlite_nio_sqlite3_open_v2(path, &handle, flags, nil)
                guard rc == SQLITE_OK, let handle else {
                    let message = handle.flatMap { sqlite_nio_sqlite3_errmsg($0) }.map { String(cString: $0) } ?? "cannot open"
                    sqlite_nio_sqlite3_close(handle)
                    throw SQLiteError(code: rc, message: "\(message): \(path)")
                }
                sqlite_nio_sqlite3_busy_timeout(handle, 10_000)
                c.handle = handle
            }
        } catch {
            c.thread.stop()
            throw error
        }
        return c
    }

    func query(_ sql: String, _ binds: [any SQLBindable]) async throws -> [Row] {
        if thread.isCurrent { return try execute(sql, binds.map(\.sqlValue)) }
        let values = binds.map(\.sqlValue)
        return try await thread.run { try self.execute(sql, values) }
    }

    /// The connection used where its holder runs, not on its thread (`Database.lookup`).
    struct Held: SQLExecutor {
        let connection: SQLiteConnection
        var dialect: SQLDialect { .sqlite }

        func query(_ sql: String, _ binds: [any SQLBindable]) async throws -> [Row] {
            try connection.execute(sql, binds.map(\.sqlValue))
        }
    }

    /// Finalizes the statements, closes the handle and ends the thread.
    func close() async {
        _ = try? await thread.run {
            for s in self.statements.values { sqlite_nio_sqlite3_finalize(s.handle) }
            self.statements = [:]
            sqlite_nio_sqlite3_close(self.handle)
            self.handle = nil
        }
        thread.stop()
    }

    fileprivate func execute(_ sql: String, _ binds: [SQLValue]) throws -> [Row] {
        guard let handle else { throw StorageError.closed }
        var statement = try prepared(sql, on: handle)
        let stmt = statement.handle
        // Not sqlite3_clear_bindings: it makes SQLite re-prepare, on every execution, each
        // statement whose plan looked at a bound value. Every parameter is bound here instead,
        // those without a value to NULL, so nothing of the previous call is left.
        defer { sqlite_nio_sqlite3_reset(stmt) }
        let parameters = Int(sqlite_nio_sqlite3_bind_parameter_count(stmt))
        guard binds.count <= parameters else {
            throw SQLiteError(code: SQLITE_RANGE, message: "\(binds.count) values for \(parameters) parameters")
        }
        for i in 0..<parameters {
            let rc = Self.bind(i < binds.count ? binds[i] : .null, at: Int32(i + 1), to: stmt)
            guard rc == SQLITE_OK else { throw error(rc, handle) }
        }
        var rows: [Row] = []
        while true {
            let rc = sqlite_nio_sqlite3_step(stmt)
            if rc == SQLITE_DONE { return rows }
            guard rc == SQLITE_ROW else { throw error(rc, handle) }
            if rows.isEmpty {
                let reprepared = sqlite_nio_sqlite3_stmt_status(stmt, SQLITE_STMTSTATUS_REPREPARE, 0)
                if reprepared != statement.reprepared {
                    statement.columns = Self.columns(of: stmt)
                    statement.reprepared = reprepared
                    statements[sql] = statement
                }
            }
            var values: [String: SQLValue] = [:]
            values.reserveCapacity(statement.columns.count)
            for (i, name) in statement.columns.enumerated() {
                values[name] = Self.value(at: Int32(i), of: stmt)
            }
            rows.append(Row(values))
        }
    }

    private func prepared(_ sql: String, on handle: OpaquePointer) throws -> Statement {
        if let s = statements[sql] { return s }
        if statements.count >= Self.cacheLimit {
            for s in statements.values { sqlite_nio_sqlite3_finalize(s.handle) }
            statements = [:]
        }
        var stmt: OpaquePointer?
        let rc = sqlite_nio_sqlite3_prepare_v3(handle, Self.rewrite(sql), -1, UInt32(SQLITE_PREPARE_PERSISTENT), &stmt, nil)
        guard rc == SQLITE_OK, let stmt else { throw error(rc, handle) }
        let statement = Statement(handle: stmt, columns: Self.columns(of: stmt), reprepared: 0)
        statements[sql] = statement
        return statement
    }

    private static func columns(of stmt: OpaquePointer) -> [String] {
        (0..<sqlite_nio_sqlite3_column_count(stmt)).map { i in
            sqlite_nio_sqlite3_column_name(stmt, i).map { String(cString: $0) } ?? ""
        }
    }

    private func error(_ rc: Int32, _ handle: OpaquePointer) -> any Error {
        let message = String(cString: sqlite_nio_sqlite3_errmsg(handle))
        if rc & 0xff == SQLITE_CONSTRAINT {
            if message.contains("UNIQUE constraint failed") { return StorageError.uniqueViolation(message) }
            if message.contains("FOREIGN KEY constraint failed") { return StorageError.foreignKeyViolation(message) }
        }
        return SQLiteError(code: rc, message: message)
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

    private static func bind(_ value: SQLValue, at i: Int32, to stmt: OpaquePointer) -> Int32 {
        switch value {
        case .null:
            return sqlite_nio_sqlite3_bind_null(stmt, i)
        case .int(let v):
            return sqlite_nio_sqlite3_bind_int64(stmt, i, v)
        case .double(let v):
            return sqlite_nio_sqlite3_bind_double(stmt, i, v)
        case .text(let v):
            return v.withCString { p in
                sqlite_nio_sqlite3_bind_text64(stmt, i, p, UInt64(v.utf8.count), transient, UInt8(SQLITE_UTF8))
            }
        case .blob(let v):
            // A zero-length blob is a blob, not NULL.
            if v.isEmpty { return sqlite_nio_sqlite3_bind_zeroblob(stmt, i, 0) }
            return v.withUnsafeBytes { p in
                sqlite_nio_sqlite3_bind_blob64(stmt, i, p.baseAddress, UInt64(p.count), transient)
            }
        }
    }

    private static func value(at i: Int32, of stmt: OpaquePointer) -> SQLValue {
        switch sqlite_nio_sqlite3_column_type(stmt, i) {
        case SQLITE_INTEGER:
            return .int(sqlite_nio_sqlite3_column_int64(stmt, i))
        case SQLITE_FLOAT:
            return .double(sqlite_nio_sqlite3_column_double(stmt, i))
        case SQLITE_TEXT:
            guard let p = sqlite_nio_sqlite3_column_text(stmt, i) else { return .text("") }
            let n = Int(sqlite_nio_sqlite3_column_bytes(stmt, i))
            return .text(String(decoding: UnsafeBufferPointer(start: p, count: n), as: UTF8.self))
        case SQLITE_BLOB:
            let n = Int(sqlite_nio_sqlite3_column_bytes(stmt, i))
            guard let p = sqlite_nio_sqlite3_column_blob(stmt, i), n > 0 else { return .blob([]) }
            return .blob(Array(UnsafeRawBufferPointer(start: p, count: n)))
        default:
            return .null
        }
    }

    /// SQLite copies bound values at once (they are Swift temporaries).
    private static let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
}

/// An error SQLite reported, with its result code.
public struct SQLiteError: Error, CustomStringConvertible {
    public let code: Int32
    public let message: String
    public var description: String { "SQLite error \(code): \(message)" }
}
