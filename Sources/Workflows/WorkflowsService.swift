import Foundation
import ServiceKit
import Storage

/// Any JSON value, to show stored payloads and step outputs as JSON rather than as strings.
public enum JSONValue: Codable, Sendable, Equatable {
    case null, bool(Bool), number(Double), string(String), array([JSONValue]), object([String: JSONValue])

    init(text: String?) {
        guard let text, let v = try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)) else {
            self = text.map { .string($0) } ?? .null
            return
        }
        self = v
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let n = try? c.decode(Double.self) { self = .number(n) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .number(let n): try c.encode(n)
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }
}

/// A run as the admin endpoints show it.
public struct WorkflowRun: Codable, Sendable {
    public var id: String
    public var functionId: String
    public var eventType: String
    public var eventSeq: Int64
    /// The triggering event's payload.
    public var event: JSONValue?
    public var status: String
    public var attempts: Int
    public var error: String?
    public var idempotencyKey: String
    public var concurrencyKey: String?
    public var runAt: Timestamp
    public var createdAt: Timestamp
    public var startedAt: Timestamp?
    public var finishedAt: Timestamp?
}

public struct WorkflowStep: Codable, Sendable {
    public var name: String
    public var status: String
    public var output: JSONValue?
    public var error: String?
    public var failures: Int
    public var wakeAt: Timestamp?
    public var startedAt: Timestamp
    public var finishedAt: Timestamp?
}

public struct WorkflowAttempt: Codable, Sendable {
    public var number: Int
    public var worker: String
    public var outcome: String?
    public var step: String?
    public var error: String?
    public var startedAt: Timestamp
    public var finishedAt: Timestamp?
}

public struct ListRunsRequest: Codable, Sendable {
    public var status: String?
    public var functionId: String?
    /// The next page: runs after the previous page's last one, given by its `created_at` and `id`
    /// (runs made in the same millisecond are told apart by id).
    public var createdBefore: Timestamp?
    public var beforeId: String?
    public var limit: Int?
}

public struct RunsResponse: Codable, Sendable { public var runs: [WorkflowRun] }
public struct RunIDRequest: Codable, Sendable { public var id: String }
public struct RunResponse: Codable, Sendable { public var run: WorkflowRun }
public struct ReadRunResponse: Codable, Sendable {
    public var run: WorkflowRun
    public var steps: [WorkflowStep]
    public var attempts: [WorkflowAttempt]
}

/// Inspection and repair of runs (`/v1/workflows/*`), for administrators and service keys.
public struct WorkflowsService: ServiceDefinition {
    public let name = "workflows"
    let store: RunStore
    let clock: any WorkflowClock

    public init(db: any Database, clock: any WorkflowClock = SystemClock()) {
        self.store = RunStore(db: db)
        self.clock = clock
    }

    public var endpoints: [Endpoint] {
        [
            Endpoint(service: name, method: "ListRuns", summary: "Runs, newest first; filter by status or function.",
                     access: .administrator, handler: list),
            Endpoint(service: name, method: "ReadRun", summary: "A run with its steps, attempts and errors.",
                     access: .administrator, handler: read),
            Endpoint(service: name, method: "RetryRun",
                     summary: "Run a failed or cancelled run again; its finished steps are not repeated.",
                     access: .administrator, handler: retry),
            Endpoint(service: name, method: "CancelRun", summary: "Stop a run that has not finished.",
                     access: .administrator, handler: cancel),
        ]
    }

    static let columns = """
        id, function_id, event_type, event_seq, event_payload, status, attempts, error, idempotency_key, concurrency_key,
        run_at, created_at, started_at, finished_at
        """

    static func run(_ r: Row) throws -> WorkflowRun {
        WorkflowRun(
            id: try r.string("id"), functionId: try r.string("function_id"), eventType: try r.string("event_type"),
            eventSeq: try r.int("event_seq"), event: JSONValue(text: try r.string("event_payload")),
            status: try r.string("status"), attempts: Int(try r.int("attempts")), error: try r.optionalString("error"),
            idempotencyKey: try r.string("idempotency_key"), concurrencyKey: try r.optionalString("concurrency_key"),
            runAt: try r.timestamp("run_at"), createdAt: try r.timestamp("created_at"),
            startedAt: try r.optionalTimestamp("started_at"), finishedAt: try r.optionalTimestamp("finished_at"))
    }

    func list(_ req: ListRunsRequest, _ ctx: CallContext) async throws -> RunsResponse {
        let limit = req.limit ?? 50
        guard (1...500).contains(limit) else { throw ServiceError.invalidField("limit", "must be between 1 and 500") }
        var conditions: [String] = []
        var binds: [any SQLBindable] = []
        if let s = req.status, !s.isEmpty {
            guard RunStatus(rawValue: s) != nil else {
                throw ServiceError.invalidField("status", "must be one of \(RunStatus.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            binds.append(s)
            conditions.append("status = $\(binds.count)")
        }
        if let f = req.functionId, !f.isEmpty {
            binds.append(f)
            conditions.append("function_id = $\(binds.count)")
        }
        if let before = req.createdBefore {
            binds.append(before)
            if let id = req.beforeId, !id.isEmpty {
                binds.append(try Validate.id(id, field: "before_id"))
                conditions.append("(created_at < $\(binds.count - 1) OR (created_at = $\(binds.count - 1) AND id > $\(binds.count)))")
            } else {
                conditions.append("created_at < $\(binds.count)")
            }
        }
        binds.append(limit)
        let whereClause = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
        let sql = "SELECT \(Self.columns) FROM workflow_runs \(whereClause) ORDER BY created_at DESC, id LIMIT $\(binds.count)"
        let bound = binds
        let runs = try await store.db.read { try await $0.query(sql, bound).map(Self.run) }
        return RunsResponse(runs: runs)
    }

    func find(_ id: String) async throws -> WorkflowRun {
        let id = try Validate.id(id, field: "id")
        let row = try await store.db.read { try await $0.first("SELECT \(Self.columns) FROM workflow_runs WHERE id = $1", id) }
        guard let row else { throw ServiceError.notFound("run not found") }
        return try Self.run(row)
    }

    func read(_ req: RunIDRequest, _ ctx: CallContext) async throws -> ReadRunResponse {
        let run = try await find(req.id)
        let (steps, attempts) = try await store.db.read { conn in
            let steps = try await conn.query(
                "SELECT name, status, output, error, failures, wake_at, started_at, finished_at FROM workflow_steps WHERE run_id = $1 ORDER BY position, started_at",
                run.id
            ).map { s in
                WorkflowStep(
                    name: try s.string("name"), status: try s.string("status"),
                    output: try s.optionalString("output").map { JSONValue(text: $0) }, error: try s.optionalString("error"),
                    failures: Int(try s.int("failures")), wakeAt: try s.optionalTimestamp("wake_at"),
                    startedAt: try s.timestamp("started_at"), finishedAt: try s.optionalTimestamp("finished_at"))
            }
            let attempts = try await conn.query(
                "SELECT number, worker, outcome, step, error, started_at, finished_at FROM workflow_attempts WHERE run_id = $1 ORDER BY number",
                run.id
            ).map { a in
                WorkflowAttempt(
                    number: Int(try a.int("number")), worker: try a.string("worker"), outcome: try a.optionalString("outcome"),
                    step: try a.optionalString("step"), error: try a.optionalString("error"),
                    startedAt: try a.timestamp("started_at"), finishedAt: try a.optionalTimestamp("finished_at"))
            }
            return (steps, attempts)
        }
        return ReadRunResponse(run: run, steps: steps, attempts: attempts)
    }

    func retry(_ req: RunIDRequest, _ ctx: CallContext) async throws -> RunResponse {
        let run = try await find(req.id)
        guard try await store.retry(run: run.id, now: clock.now()) else {
            throw ServiceError.conflict("only a failed or cancelled run can be retried (this one is \(run.status))")
        }
        // Wake the workers of every node.
        try? await store.db.notify(WorkflowEngine.channel, payload: "")
        return RunResponse(run: try await find(run.id))
    }

    func cancel(_ req: RunIDRequest, _ ctx: CallContext) async throws -> RunResponse {
        let run = try await find(req.id)
        guard try await store.cancel(run: run.id, now: clock.now()) else {
            throw ServiceError.conflict("the run has already finished (\(run.status))")
        }
        return RunResponse(run: try await find(run.id))
    }
}
