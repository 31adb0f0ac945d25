import Foundation
import Logging
import NIOConcurrencyHelpers
import ServiceKit
import Storage
import TestSupport
import Workflows

struct Ping: DomainEvent {
    static let name = "test.ping"
    var id: String
    var user: String = "u1"
    var fail: Bool = false
}

struct Pong: DomainEvent {
    static let name = "test.pong"
    var user: String
    var note: String = ""
}

/// Counts what function bodies did, across runs and engines.
final class Probe: Sendable {
    private let state = NIOLockedValueBox<(counts: [String: Int], running: [String: Int], maxRunning: [String: Int], log: [String])>(
        ([:], [:], [:], []))

    @discardableResult
    func hit(_ key: String) -> Int {
        state.withLockedValue { s in
            s.counts[key, default: 0] += 1
            return s.counts[key]!
        }
    }

    func count(_ key: String) -> Int { state.withLockedValue { $0.counts[key] ?? 0 } }

    func note(_ line: String) { state.withLockedValue { $0.log.append(line) } }
    var log: [String] { state.withLockedValue { $0.log } }

    /// Marks `key` as running for the duration of `body` and remembers the most at once.
    func running<T>(_ key: String, _ body: () async throws -> T) async rethrows -> T {
        state.withLockedValue { s in
            s.running[key, default: 0] += 1
            s.maxRunning[key] = max(s.maxRunning[key] ?? 0, s.running[key]!)
        }
        defer { state.withLockedValue { $0.running[key, default: 0] -= 1 } }
        return try await body()
    }

    func maxRunning(_ key: String) -> Int { state.withLockedValue { $0.maxRunning[key] ?? 0 } }
}

struct Timeout: Error, CustomStringConvertible { let description: String }


extension WorkflowEngine.Configuration {
    static var fast: Self {
        var c = Self()
        c.pollInterval = .milliseconds(50)
        c.lease = .seconds(5)
        return c
    }
}

/// Runs engines on a fresh database of `backend` while `body` runs.
func withEngines<T: Sendable>(
    _ backend: Backend, count: Int = 1, clock: any WorkflowClock = SystemClock(),
    configuration: WorkflowEngine.Configuration = .fast,
    _ functions: [WorkflowFunction],
    _ body: @Sendable @escaping (any Database, [WorkflowEngine]) async throws -> T
) async throws -> T {
    try await TestDatabase.with(backend, migrations: WorkflowEngine.migrations) { db in
        let engines = (0..<count).map { _ in
            WorkflowEngine(db: db, functions: functions, clock: clock, configuration: configuration, logger: TestDatabase.logger)
        }
        for e in engines { try await e.prepare() }
        return try await withThrowingTaskGroup(of: T?.self) { group in
            for e in engines { group.addTask { try await e.run(); return nil } }
            group.addTask { try await body(db, engines) }
            defer { group.cancelAll() }
            while let r = try await group.next() {
                if let r { return r }
            }
            throw Timeout(description: "engines stopped")
        }
    }
}

struct RunState: Sendable {
    var id: String
    var status: String
    var attempts: Int
    var error: String?
    var runAt: Timestamp
}

func runs(_ db: any Database, function: String) async throws -> [RunState] {
    try await db.read { conn in
        try await conn.query(
            "SELECT id, status, attempts, error, run_at FROM workflow_runs WHERE function_id = $1 ORDER BY event_seq, created_at, id", function
        ).map {
            RunState(id: try $0.string("id"), status: try $0.string("status"), attempts: Int(try $0.int("attempts")),
                     error: try $0.optionalString("error"), runAt: try $0.timestamp("run_at"))
        }
    }
}

func send<E: DomainEvent>(_ db: any Database, _ event: E) async throws {
    _ = try await db.write { tx in try await EventLog.append(tx, event) }
}
