import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import PostgresNIO
import ServiceLifecycle

/// PostgreSQL through PostgresNIO's pool. The pool runs as a service in the server's group.
public final class PostgresDatabase: Database {
    public let dialect: SQLDialect = .postgres
    public let commits = CommitSignal()
    public let client: PostgresClient
    let logger: Logger
    let channels = NIOLockedValueBox<[String: Channel]>([:])

    public init(url: String, logger: Logger) throws {
        self.client = PostgresClient(configuration: try Self.configuration(url), backgroundLogger: logger)
        self.logger = logger
    }

    static func configuration(_ url: String) throws -> PostgresClient.Configuration {
        guard let components = URLComponents(string: url), let host = components.host else {
            throw StorageError.unsupportedURL(url)
        }
        let query = Dictionary(
            (components.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { $1 })
        let tls: PostgresClient.Configuration.TLS
        switch query["sslmode"] {
        case "disable": tls = .disable
        case "require", "verify-full", "verify-ca": tls = .require(.makeClientConfiguration())
        default: tls = .prefer(.makeClientConfiguration())
        }
        var path = components.path
        if path.hasPrefix("/") { path.removeFirst() }
        var config = PostgresClient.Configuration(
            host: host,
            port: components.port ?? 5432,
            username: components.user?.removingPercentEncoding ?? "postgres",
            password: components.password?.removingPercentEncoding,
            database: path.isEmpty ? nil : path,
            tls: tls)
        if let max = query["pool_max"].flatMap(Int.init) { config.options.maximumConnections = max }
        return config
    }

    public func read<T: Sendable>(_ body: @Sendable (any SQLExecutor) async throws -> T) async throws -> T {
        try await client.withConnection { conn in
            try await body(Connection(connection: conn, logger: logger))
        }
    }

    public func write<T: Sendable>(_ body: @Sendable (Transaction) async throws -> T) async throws -> T {
        // A request past its deadline is cancelled: it must not start writing after its caller
        // was told it failed.
        try await client.withConnection { conn in
            try Task.checkCancellation()
            let executor = Connection(connection: conn, logger: logger)
            _ = try await executor.query("BEGIN", [])
            do {
                let tx = Transaction(executor)
                let result = try await body(tx)
                // Nor commit once cut off: its caller was told it failed, and a removal that waits out
                // request deadlines before it looks again must not miss a late write.
                try Task.checkCancellation()
                _ = try await executor.query("COMMIT", [])
                if tx.state.hasEvents { commits.signal() }
                return result
            } catch {
                _ = try? await executor.query("ROLLBACK", [])
                throw error
            }
        }
    }

    public var lifecycle: any ServiceLifecycle.Service { client }

    public func listen(_ channel: String, _ body: @escaping @Sendable (String) async -> Void) async throws {
        // Every listener of a channel in this process shares one LISTEN connection.
        let id = UUID()
        channels.withLockedValue { c in
            c[channel, default: Channel()].listeners[id] = body
            if c[channel]?.pump == nil { c[channel]?.pump = Task { await self.pump(channel) } }
        }
        try? await Task.sleep(for: .seconds(Double(Int32.max)))
        let idle = channels.withLockedValue { c -> Task<Void, Never>? in
            c[channel]?.listeners.removeValue(forKey: id)
            guard c[channel]?.listeners.isEmpty == true else { return nil }
            defer { c[channel] = nil }
            return c[channel]?.pump
        }
        idle?.cancel()
    }

    struct Channel {
        var listeners: [UUID: @Sendable (String) async -> Void] = [:]
        var pump: Task<Void, Never>?
    }

    /// Holds one pooled connection while the channel has listeners; a lost connection is listened again.
    private func pump(_ channel: String) async {
        while !Task.isCancelled {
            do {
                try await client.withConnection { conn in
                    try await conn.listen(on: channel) { notifications in
                        for try await n in notifications {
                            let listeners = self.channels.withLockedValue { Array(($0[channel]?.listeners ?? [:]).values) }
                            for l in listeners { await l(n.payload) }
                        }
                    }
                }
            } catch is CancellationError {
                return
            } catch {
                if Task.isCancelled { return }
                logger.warning("listen failed, retrying", metadata: ["channel": .string(channel), "error": .string("\(error)")])
                try? await Task.sleep(for: .milliseconds(500))
            }
        }
    }

    public func notify(_ channel: String, payload: String) async throws {
        try await client.withConnection { conn in
            _ = try await Connection(connection: conn, logger: logger).query("SELECT pg_notify($1, $2)", [channel, payload])
        }
    }

    /// Runs the pool until the calling task is cancelled (outside a service group).
    public func runClient() async { await client.run() }

    public func close() async throws {}

    struct Connection: SQLExecutor {
        let connection: PostgresConnection
        let logger: Logger
        var dialect: SQLDialect { .postgres }

        func query(_ sql: String, _ binds: [any SQLBindable]) async throws -> [Row] {
            var bindings = PostgresBindings(capacity: binds.count)
            for b in binds {
                switch b.sqlValue {
                case .null: bindings.appendNull()
                case .int(let i): bindings.append(i)
                case .double(let d): bindings.append(d)
                case .text(let s): bindings.append(s)
                case .blob(let bytes): bindings.append(ByteBuffer(bytes: bytes))
                }
            }
            do {
                let sequence = try await connection.query(PostgresQuery(unsafeSQL: sql, binds: bindings), logger: logger)
                var rows: [Row] = []
                for try await row in sequence {
                    var values: [String: SQLValue] = [:]
                    for cell in row { values[cell.columnName] = try Self.value(cell) }
                    rows.append(Row(values))
                }
                return rows
            } catch let error as PSQLError {
                if error.serverInfo?[.sqlState] == PostgresError.Code.uniqueViolation.raw {
                    throw StorageError.uniqueViolation(error.serverInfo?[.message] ?? "unique violation")
                }
                if error.serverInfo?[.sqlState] == PostgresError.Code.foreignKeyViolation.raw {
                    throw StorageError.foreignKeyViolation(error.serverInfo?[.message] ?? "foreign key violation")
                }
                throw error
            }
        }

        static func value(_ cell: PostgresCell) throws -> SQLValue {
            guard cell.bytes != nil else { return .null }
            switch cell.dataType {
            case .int2, .int4, .int8: return .int(try cell.decode(Int64.self))
            case .float4, .float8: return .double(try cell.decode(Double.self))
            case .bool: return .int(try cell.decode(Bool.self) ? 1 : 0)
            case .bytea:
                var buffer = try cell.decode(ByteBuffer.self)
                return .blob(buffer.readBytes(length: buffer.readableBytes) ?? [])
            default: return .text(try cell.decode(String.self))
            }
        }
    }
}
