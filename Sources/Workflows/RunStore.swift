import Foundation
import ServiceKit
import Storage

enum RunStatus: String, Codable, Sendable, CaseIterable {
    case queued, running, sleeping, waiting, completed, failed, cancelled

    /// Not finished: a worker will (again) pick it up.
    static let active: [RunStatus] = [.queued, .running, .sleeping, .waiting]
}

enum StepStatus: String, Codable, Sendable {
    /// Finished; its output is replayed to later executions.
    case completed
    /// Failed and waiting for a retry (or the run was dead-lettered).
    case failed
    case sleeping
    case waiting
}

struct StoredStep: Sendable {
    var name: String
    var status: StepStatus
    var output: String?
    var wakeAt: Timestamp?
}

struct ClaimedRun: Sendable {
    var id: String
    var functionID: String
    var payload: String
    var eventSeq: Int64
    var attempt: Int
    var startedAt: Timestamp
    var steps: [String: StoredStep]
}

/// The workflows' tables: runs, their steps (memoised results, sleeps and waits), attempts,
/// event waits, and the dispatcher's position in the event log. Owned by the Workflows module.
struct RunStore: Sendable {
    let db: any Database

    static let migrations = [
        Migration(service: "workflows", version: 1, [
            """
            CREATE TABLE workflow_runs (
                id TEXT PRIMARY KEY,
                function_id TEXT NOT NULL,
                event_type TEXT NOT NULL,
                event_payload TEXT NOT NULL,
                event_seq BIGINT NOT NULL,
                idempotency_key TEXT NOT NULL,
                concurrency_key TEXT,
                concurrency_limit BIGINT NOT NULL DEFAULT 0,
                cancel_event TEXT,
                cancel_match TEXT,
                status TEXT NOT NULL,
                run_at BIGINT NOT NULL,
                attempts BIGINT NOT NULL DEFAULT 0,
                failures BIGINT NOT NULL DEFAULT 0,
                locked_by TEXT,
                locked_until BIGINT,
                error TEXT,
                created_at BIGINT NOT NULL,
                started_at BIGINT,
                finished_at BIGINT,
                UNIQUE (function_id, idempotency_key))
            """,
            "CREATE INDEX workflow_runs_due ON workflow_runs (status, run_at)",
            "CREATE INDEX workflow_runs_concurrency ON workflow_runs (function_id, concurrency_key, status)",
            "CREATE INDEX workflow_runs_cancel ON workflow_runs (cancel_event, status)",
            "CREATE INDEX workflow_runs_created ON workflow_runs (created_at)",
            """
            CREATE TABLE workflow_steps (
                run_id TEXT NOT NULL,
                name TEXT NOT NULL,
                position BIGINT NOT NULL,
                status TEXT NOT NULL,
                output TEXT,
                error TEXT,
                failures BIGINT NOT NULL DEFAULT 0,
                wake_at BIGINT,
                started_at BIGINT NOT NULL,
                finished_at BIGINT,
                PRIMARY KEY (run_id, name))
            """,
            """
            CREATE TABLE workflow_attempts (
                run_id TEXT NOT NULL,
                number BIGINT NOT NULL,
                worker TEXT NOT NULL,
                started_at BIGINT NOT NULL,
                finished_at BIGINT,
                outcome TEXT,
                step TEXT,
                error TEXT,
                PRIMARY KEY (run_id, number))
            """,
            """
            CREATE TABLE workflow_waits (
                run_id TEXT NOT NULL,
                step TEXT NOT NULL,
                event_type TEXT NOT NULL,
                match TEXT NOT NULL,
                after_seq BIGINT NOT NULL,
                expires_at BIGINT NOT NULL,
                PRIMARY KEY (run_id, step))
            """,
            "CREATE INDEX workflow_waits_type ON workflow_waits (event_type)",
            "CREATE TABLE workflow_cursor (name TEXT PRIMARY KEY, seq BIGINT NOT NULL)",
            // Events from before the engine existed do not start runs.
            "INSERT INTO workflow_cursor (name, seq) SELECT 'events', COALESCE(MAX(seq), 0) FROM events",
        ]),
        Migration(service: "workflows", version: 2, [
            "CREATE TABLE workflow_schedules (function_id TEXT PRIMARY KEY, last_at BIGINT NOT NULL)"
        ]),
        // Where each function's runs were last started from: a node starts runs only for the
        // functions it has, so a function new in a version must not depend on older nodes
        // (which pass events on the shared cursor) having started its runs.
        Migration(service: "workflows", version: 3, [
            "CREATE TABLE workflow_start_cursors (function_id TEXT PRIMARY KEY, seq BIGINT NOT NULL, moved_at BIGINT NOT NULL)"
        ]),
    ]

    // MARK: Dispatching events to runs

    /// Events one dispatch transaction handles at most; fewer means it caught up.
    static let dispatchBatch = 500

    /// A start cursor left behind this long had no node with its function (one that has it
    /// moves it with every dispatch).
    static let abandonedAfter: Duration = .seconds(3600)

    /// Gives each event-triggered function of this node a start cursor at the shared cursor: a
    /// function new in this version starts runs for the events from the moment its first node
    /// started, whichever nodes dispatch them meanwhile. A cursor no node has moved for
    /// `abandonedAfter` (the function was switched off, or a version rolled back) starts
    /// afresh too, rather than replaying the log since.
    func register(functions: [WorkflowFunction], now: Timestamp = .now()) async throws {
        // Sorted: nodes of two versions starting at once take the rows in the same order.
        let ids = functions.filter { $0.schedule == nil }.map(\.id).sorted()
        guard !ids.isEmpty else { return }
        try await db.write { tx in
            for id in ids {
                try await tx.query(
                    """
                    INSERT INTO workflow_start_cursors (function_id, seq, moved_at)
                    SELECT $1, seq, $2 FROM workflow_cursor WHERE name = 'events'
                    ON CONFLICT (function_id) DO UPDATE SET moved_at = excluded.moved_at,
                        seq = CASE WHEN workflow_start_cursors.moved_at < $3 THEN excluded.seq ELSE workflow_start_cursors.seq END
                    """, id, now, now.adding(seconds: -Self.abandonedAfter.seconds))
            }
        }
    }

    /// Starts runs for new events, completes the waits they match and cancels the runs they
    /// cancel; moves the cursors past them. Waits and cancellations follow the shared cursor
    /// (they are rows, whichever version wrote them); starting runs follows each function's own
    /// cursor, which may lag behind the shared one where an older node, without the function,
    /// dispatched. Returns how many events it read (0: caught up, or another node is
    /// dispatching) and whether anything became runnable.
    func dispatch(functions: [WorkflowFunction], now: Timestamp, batch: Int = dispatchBatch) async throws -> (events: Int, runnable: Bool) {
        try await db.write { tx in
            // Every dispatcher, of any version, takes the shared cursor first: one at a time.
            guard let cursor = try await lockCursor(tx, wait: false) else { return (0, false) }
            let triggered = functions.filter { $0.schedule == nil }
            let starts = try await Self.startCursors(tx, of: triggered, default: cursor)
            let from = min(cursor, starts.values.min() ?? cursor)
            let events = try await tx.query(
                "SELECT seq, type, payload FROM events WHERE seq > $1 ORDER BY seq LIMIT $2", from, batch)
            guard !events.isEmpty else { return (0, false) }
            var runnable = false
            let cancelTypes = Set(functions.compactMap(\.cancelEvent))
            for e in events {
                let seq = try e.int("seq"), type = try e.string("type"), payload = try e.string("payload")
                for f in triggered where f.trigger == type && seq > starts[f.id]! {
                    let admission: WorkflowFunction.Admission?
                    do {
                        admission = try f.admit(payload, seq)
                    } catch {
                        // An event that does not decode can never run: skip it rather than block the log.
                        continue
                    }
                    guard let a = admission else { continue }
                    let cancelMatch = try a.cancelMatch.map { String(decoding: try JSON.encode($0), as: UTF8.self) }
                    let inserted = try await tx.query(
                        """
                        INSERT INTO workflow_runs (id, function_id, event_type, event_payload, event_seq, idempotency_key,
                            concurrency_key, concurrency_limit, cancel_event, cancel_match, status, run_at, created_at)
                        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'queued', $11, $12)
                        ON CONFLICT (function_id, idempotency_key) DO NOTHING RETURNING id
                        """,
                        Secrets.uuid(), f.id, type, payload, seq, a.idempotencyKey,
                        a.concurrencyKey, a.concurrencyLimit, f.cancelEvent, cancelMatch, now,
                        // Whole milliseconds, as the API writes them: a page cursor read back is exact.
                        Timestamp(microseconds: now.microseconds / 1000 * 1000))
                    if !inserted.isEmpty { runnable = true }
                }
                guard seq > cursor else {
                    // Passed by a node without these functions: it cancelled none of their runs
                    // (those it started just now included).
                    for f in triggered where f.cancelEvent == type && seq > starts[f.id]! {
                        try await cancelRuns(tx, by: type, seq: seq, payload: payload, of: f.id, now: now)
                    }
                    continue
                }
                // Waits and cancellations: once per event, on the shared cursor.
                for w in try await tx.query(
                    "SELECT run_id, step, match FROM workflow_waits WHERE event_type = $1 AND after_seq < $2", type, seq) {
                    let match = try JSON.decoder().decode([String: String].self, from: Data(try w.string("match").utf8))
                    guard EventMatch.matches(payload, match) else { continue }
                    let run = try w.string("run_id"), step = try w.string("step")
                    try await tx.query(
                        "UPDATE workflow_steps SET status = 'completed', output = $3, finished_at = $4 WHERE run_id = $1 AND name = $2 AND status = 'waiting'",
                        run, step, payload, now)
                    try await tx.query("DELETE FROM workflow_waits WHERE run_id = $1 AND step = $2", run, step)
                    try await tx.query("UPDATE workflow_runs SET status = 'queued', run_at = $2 WHERE id = $1 AND status = 'waiting'", run, now)
                    runnable = true
                }
                if cancelTypes.contains(type) {
                    try await cancelRuns(tx, by: type, seq: seq, payload: payload, of: nil, now: now)
                }
            }
            let last = try events.last!.int("seq")
            if last > cursor { try await tx.query("UPDATE workflow_cursor SET seq = $1 WHERE name = 'events'", last) }
            // One statement for all (rows exist from `register`; one that does not follows the
            // shared cursor).
            let behind = triggered.map(\.id).filter { starts[$0]! < last }
            if !behind.isEmpty {
                try await tx.query(
                    "UPDATE workflow_start_cursors SET seq = $1, moved_at = $2 WHERE function_id IN (\(SQL.list(behind.count, from: 3)))",
                    // The real time (`now` is the engine's clock): `register` compares it with its own.
                    [last, Timestamp.now()] as [any SQLBindable] + behind)
            }
            return (events.count, runnable)
        }
    }

    /// Where `functions` start runs from; one without a cursor yet (its node has not registered
    /// it) from `cursor`.
    private static func startCursors(_ conn: any SQLExecutor, of functions: [WorkflowFunction], default cursor: Int64) async throws -> [String: Int64] {
        var starts = Dictionary(uniqueKeysWithValues: functions.map { ($0.id, cursor) })
        guard !functions.isEmpty else { return starts }
        for row in try await conn.query("SELECT function_id, seq FROM workflow_start_cursors") {
            let id = try row.string("function_id")
            if starts[id] != nil { starts[id] = try row.int("seq") }
        }
        return starts
    }

    /// Cancels the active runs (of `function`, or of any) that the event `type` #`seq` cancels:
    /// started by an earlier event, with a matching cancel filter.
    private func cancelRuns(_ tx: Transaction, by type: String, seq: Int64, payload: String, of function: String?, now: Timestamp) async throws {
        let only = function == nil ? "" : " AND function_id = $2"
        for r in try await tx.query(
            "SELECT id, cancel_match, event_seq FROM workflow_runs WHERE cancel_event = $1\(only) AND status IN \(Self.activeList)",
            [type] + (function.map { [$0] } ?? [])) {
            guard try r.int("event_seq") < seq, let m = try r.optionalString("cancel_match"),
                  let match = try? JSON.decoder().decode([String: String].self, from: Data(m.utf8)),
                  EventMatch.matches(payload, match)
            else { continue }
            try await cancel(tx, run: try r.string("id"), reason: "cancelled by \(type) #\(seq)", now: now)
        }
    }

    static let activeList = "('queued', 'running', 'sleeping', 'waiting')"

    /// The dispatcher's position, locked for this transaction. With `wait: false` PostgreSQL
    /// skips it when another node holds it (nil): that node is dispatching.
    private func lockCursor(_ tx: Transaction, wait: Bool) async throws -> Int64? {
        let lock = tx.dialect == .postgres ? (wait ? " FOR UPDATE" : " FOR UPDATE SKIP LOCKED") : ""
        return try await tx.first("SELECT seq FROM workflow_cursor WHERE name = 'events'\(lock)")?.int("seq")
    }

    private func cancel(_ tx: Transaction, run: String, reason: String, now: Timestamp) async throws {
        try await tx.query(
            """
            UPDATE workflow_runs SET status = 'cancelled', error = $2, finished_at = $3, locked_by = NULL, locked_until = NULL
            WHERE id = $1 AND status IN \(Self.activeList)
            """, run, reason, now)
        try await tx.query("DELETE FROM workflow_waits WHERE run_id = $1", run)
    }

    // MARK: Claiming

    /// On SQLite one process runs the workers: whatever was running when it stopped was cut off.
    func releaseOrphans() async throws {
        guard db.dialect == .sqlite else { return }
        _ = try await db.write { tx in
            try await tx.query("UPDATE workflow_runs SET status = 'queued', locked_by = NULL, locked_until = NULL WHERE status = 'running'")
        }
    }

    /// Takes one due run of `functions` for `worker`, honouring concurrency limits. Runs whose
    /// lease expired (their worker died) are due again. Only this node's functions: while nodes
    /// of two versions run, an older one leaves a newer function's runs to the nodes that know it.
    func claim(worker: String, functions: Set<String>, now: Timestamp, lease: Duration) async throws -> ClaimedRun? {
        guard !functions.isEmpty else { return nil }
        return try await db.write { tx in
            let real = Timestamp.now()
            let skip = tx.dialect == .postgres ? " FOR UPDATE SKIP LOCKED" : ""
            let candidates = try await tx.query(
                """
                SELECT id, function_id, concurrency_key, concurrency_limit FROM workflow_runs
                WHERE ((status IN ('queued', 'sleeping', 'waiting') AND run_at <= $1) OR (status = 'running' AND locked_until < $2))
                AND function_id IN (\(SQL.list(functions.count, from: 3)))
                ORDER BY run_at LIMIT 8\(skip)
                """, [now, real] as [any SQLBindable] + functions.sorted())
            for c in candidates {
                let id = try c.string("id"), function = try c.string("function_id")
                if let key = try c.optionalString("concurrency_key") {
                    if tx.dialect == .postgres {
                        // One claimer per key at a time, so the count below sees every claim. A
                        // key another node is claiming right now is skipped, never waited for:
                        // waiting on several keys in different orders would deadlock.
                        let got = try await tx.first(
                            "SELECT pg_try_advisory_xact_lock(7300, hashtext($1)) AS got", function + "\u{1f}" + key)
                        guard try got?.bool("got") == true else { continue }
                    }
                    let running = try await tx.first(
                        """
                        SELECT COUNT(*) AS n FROM workflow_runs WHERE function_id = $1 AND concurrency_key = $2
                        AND status = 'running' AND locked_until >= $3 AND id <> $4
                        """, function, key, real, id)?.int("n") ?? 0
                    if running >= (try c.int("concurrency_limit")) { continue }
                }
                let rows = try await tx.query(
                    """
                    UPDATE workflow_runs SET status = 'running', locked_by = $2, locked_until = $3,
                        attempts = attempts + 1, started_at = COALESCE(started_at, $4)
                    WHERE id = $1 RETURNING event_payload, event_seq, attempts, started_at
                    """, id, worker, real.adding(lease), now)
                guard let row = rows.first else { continue }
                let attempt = Int(try row.int("attempts"))
                try await tx.query(
                    "INSERT INTO workflow_attempts (run_id, number, worker, started_at) VALUES ($1, $2, $3, $4)",
                    id, attempt, worker, now)
                var steps: [String: StoredStep] = [:]
                for s in try await tx.query("SELECT name, status, output, wake_at FROM workflow_steps WHERE run_id = $1", id) {
                    let step = StoredStep(
                        name: try s.string("name"), status: StepStatus(rawValue: try s.string("status")) ?? .failed,
                        output: try s.optionalString("output"), wakeAt: try s.optionalTimestamp("wake_at"))
                    steps[step.name] = step
                }
                return ClaimedRun(
                    id: id, functionID: function, payload: try row.string("event_payload"), eventSeq: try row.int("event_seq"),
                    attempt: attempt, startedAt: try row.timestamp("started_at"), steps: steps)
            }
            return nil
        }
    }

    /// What a wake-up has to do: dispatch events the cursor has not passed, claim runs that are
    /// due (or whose lease ran out).
    struct Work: Equatable {
        var events: Bool
        var runs: Bool
        static let all = Work(events: true, runs: true)
    }

    /// Whether the log has events not yet dispatched (for waits and cancellations, or to start
    /// runs of `functions`), and whether a run of `functions` is due (or its worker died).
    func work(now: Timestamp, functions: Set<String>) async throws -> Work {
        try await db.read { conn in
            let row = try await conn.first(
                """
                SELECT (SELECT seq FROM workflow_cursor WHERE name = 'events') AS cursor,
                       (SELECT COALESCE(MAX(seq), 0) FROM events) AS head
                """)
            guard let row else { return .all }
            var from = try row.int("cursor")
            for start in try await conn.query("SELECT function_id, seq FROM workflow_start_cursors")
            where functions.contains(try start.string("function_id")) {
                from = min(from, try start.int("seq"))
            }
            let (due, lease) = try await Self.schedule(conn, of: functions)
            let expired = lease.map { $0 < Timestamp.now() } ?? false
            return Work(events: try row.int("head") > from, runs: (due.map { $0 <= now } ?? false) || expired)
        }
    }

    /// When `functions`' first run falls due, and when their first lease runs out. Another
    /// version's functions' runs are not this node's work: counting them, a due one it cannot
    /// claim would wake the engine again at once, for ever.
    private static func schedule(
        _ conn: any SQLExecutor, of functions: Set<String>
    ) async throws -> (due: Timestamp?, lease: Timestamp?) {
        let rows = try await conn.query(
            """
            SELECT function_id,
                   MIN(CASE WHEN status = 'running' THEN NULL ELSE run_at END) AS due,
                   MIN(CASE WHEN status = 'running' THEN locked_until END) AS lease
            FROM workflow_runs WHERE status IN ('queued', 'sleeping', 'waiting', 'running') GROUP BY function_id
            """)
        var due: Timestamp?, lease: Timestamp?
        for row in rows where functions.contains(try row.string("function_id")) {
            if let t = try row.optionalTimestamp("due") { due = min(due ?? t, t) }
            if let t = try row.optionalTimestamp("lease") { lease = min(lease ?? t, t) }
        }
        return (due, lease)
    }

    /// Extends the lease; false when the run is no longer this worker's.
    func heartbeat(run: String, worker: String, lease: Duration) async throws -> Bool {
        try await db.write { tx in
            try await !tx.query(
                "UPDATE workflow_runs SET locked_until = $3 WHERE id = $1 AND locked_by = $2 AND status = 'running' RETURNING id",
                run, worker, Timestamp.now().adding(lease)
            ).isEmpty
        }
    }

    /// The earliest time a sleeping, waiting or retrying run of `functions` is due, for the timer.
    func nextDue(functions: Set<String>) async throws -> Timestamp? {
        try await db.read { conn in
            try await Self.schedule(conn, of: functions).due
        }
    }

    // MARK: A worker's writes (each checks the run is still the worker's)

    private func requireOwned(_ tx: Transaction, run: String, worker: String) async throws {
        let lock = tx.dialect == .postgres ? " FOR UPDATE" : ""
        let owned = try await tx.first(
            "SELECT id FROM workflow_runs WHERE id = $1 AND locked_by = $2 AND status = 'running'\(lock)", run, worker)
        guard owned != nil else { throw RunLost() }
    }

    private func upsertStep(
        _ tx: Transaction, run: String, name: String, position: Int, status: StepStatus, output: String?,
        error: String?, failures: Int, wakeAt: Timestamp?, now: Timestamp, finished: Bool
    ) async throws {
        try await tx.query(
            """
            INSERT INTO workflow_steps (run_id, name, position, status, output, error, failures, wake_at, started_at, finished_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
            ON CONFLICT (run_id, name) DO UPDATE SET status = excluded.status, output = excluded.output,
                error = COALESCE(excluded.error, workflow_steps.error), failures = excluded.failures,
                wake_at = excluded.wake_at, finished_at = excluded.finished_at
            """,
            run, name, position, status.rawValue, output, error, failures, wakeAt, now, finished ? now : nil)
    }

    private func failures(_ tx: Transaction, run: String, step: String) async throws -> Int {
        Int(try await tx.first("SELECT failures FROM workflow_steps WHERE run_id = $1 AND name = $2", run, step)?.int("failures") ?? 0)
    }

    func completeStep(run: String, worker: String, name: String, position: Int, output: String, at now: Timestamp,
                      also: (@Sendable (Transaction) async throws -> Void)? = nil) async throws {
        try await db.write { tx in
            // Events first: the log's advisory lock before the run row, as every appender takes them.
            if let also { try await also(tx) }
            try await requireOwned(tx, run: run, worker: worker)
            let failed = try await failures(tx, run: run, step: name)
            try await upsertStep(tx, run: run, name: name, position: position, status: .completed, output: output,
                                 error: nil, failures: failed, wakeAt: nil, now: now, finished: true)
        }
    }

    /// Parks the run until `until` (a sleep, or a wait's timeout). For a wait, first looks for a
    /// matching event the dispatcher already passed: returns its payload instead of parking.
    @discardableResult
    func suspend(run: String, worker: String, step: String, position: Int, status: StepStatus, until: Timestamp,
                 wait: Wait?) async throws -> String? {
        try await db.write { tx in
            // The cursor before the run row, in the dispatcher's order: no deadlock.
            let cursor = wait == nil ? nil : try await lockCursor(tx, wait: true)
            try await requireOwned(tx, run: run, worker: worker)
            let now = Timestamp.now()
            if let wait, let cursor {
                for e in try await tx.query(
                    "SELECT payload FROM events WHERE type = $1 AND seq > $2 AND seq <= $3 ORDER BY seq",
                    wait.eventType, wait.afterSeq, cursor) {
                    let payload = try e.string("payload")
                    if EventMatch.matches(payload, wait.match) {
                        try await upsertStep(tx, run: run, name: step, position: position, status: .completed, output: payload,
                                             error: nil, failures: 0, wakeAt: nil, now: now, finished: true)
                        return payload
                    }
                }
                try await tx.query(
                    """
                    INSERT INTO workflow_waits (run_id, step, event_type, match, after_seq, expires_at) VALUES ($1, $2, $3, $4, $5, $6)
                    ON CONFLICT (run_id, step) DO NOTHING
                    """,
                    run, step, wait.eventType, String(decoding: try JSON.encode(wait.match), as: UTF8.self), wait.afterSeq, until)
            }
            try await upsertStep(tx, run: run, name: step, position: position, status: status, output: nil,
                                 error: nil, failures: 0, wakeAt: until, now: now, finished: false)
            try await tx.query(
                "UPDATE workflow_runs SET status = $2, run_at = $3, locked_by = NULL, locked_until = NULL WHERE id = $1",
                run, status == .waiting ? RunStatus.waiting.rawValue : RunStatus.sleeping.rawValue, until)
            try await endAttempt(tx, run: run, outcome: status == .waiting ? "waiting" : "sleeping", step: step, error: nil)
            return nil
        }
    }

    /// A wait's timeout passed: completes the step with no event, unless one arrived meanwhile.
    func expireWait(run: String, worker: String, step: String, at now: Timestamp) async throws -> String {
        try await db.write { tx in
            try await requireOwned(tx, run: run, worker: worker)
            let row = try await tx.first("SELECT status, output FROM workflow_steps WHERE run_id = $1 AND name = $2", run, step)
            if try row?.string("status") == StepStatus.completed.rawValue { return try row?.optionalString("output") ?? "null" }
            try await tx.query(
                "UPDATE workflow_steps SET status = 'completed', output = 'null', finished_at = $3 WHERE run_id = $1 AND name = $2",
                run, step, now)
            try await tx.query("DELETE FROM workflow_waits WHERE run_id = $1 AND step = $2", run, step)
            return "null"
        }
    }

    private func endAttempt(_ tx: Transaction, run: String, outcome: String, step: String?, error: String?) async throws {
        try await tx.query(
            """
            UPDATE workflow_attempts SET finished_at = $2, outcome = $3, step = $4, error = $5
            WHERE run_id = $1 AND number = (SELECT attempts FROM workflow_runs WHERE id = $1)
            """, run, Timestamp.now(), outcome, step, error)
    }

    func complete(run: String, worker: String, now: Timestamp) async throws {
        try await db.write { tx in
            try await requireOwned(tx, run: run, worker: worker)
            try await tx.query(
                """
                UPDATE workflow_runs SET status = 'completed', finished_at = $2, locked_by = NULL, locked_until = NULL
                WHERE id = $1
                """, run, now)
            try await endAttempt(tx, run: run, outcome: "completed", step: nil, error: nil)
        }
    }

    /// Records a failure and either schedules the retry or dead-letters the run. Returns true
    /// when the run failed for good.
    func fail(run: String, worker: String, step: String?, position: Int, error: String, retryable: Bool,
              retries: Int, backoff: Backoff, now: Timestamp) async throws -> Bool {
        try await db.write { tx in
            try await requireOwned(tx, run: run, worker: worker)
            let count: Int
            if let step {
                count = try await failures(tx, run: run, step: step) + 1
                try await upsertStep(tx, run: run, name: step, position: position, status: .failed, output: nil,
                                     error: error, failures: count, wakeAt: nil, now: now, finished: false)
            } else {
                count = Int(try await tx.first(
                    "UPDATE workflow_runs SET failures = failures + 1 WHERE id = $1 RETURNING failures", run)?.int("failures") ?? 1)
            }
            let where_ = step.map { "step \($0): " } ?? ""
            let dead = !retryable || count > retries
            if dead {
                try await tx.query(
                    """
                    UPDATE workflow_runs SET status = 'failed', error = $2, finished_at = $3, locked_by = NULL, locked_until = NULL
                    WHERE id = $1
                    """, run, where_ + error, now)
            } else {
                try await tx.query(
                    "UPDATE workflow_runs SET status = 'queued', error = $2, run_at = $3, locked_by = NULL, locked_until = NULL WHERE id = $1",
                    run, where_ + error, now.adding(seconds: backoff.delay(count)))
            }
            try await endAttempt(tx, run: run, outcome: dead ? "failed" : "retry", step: step, error: error)
            return dead
        }
    }

    // MARK: Administration

    func retry(run: String, now: Timestamp) async throws -> Bool {
        try await db.write { tx in
            let rows = try await tx.query(
                """
                UPDATE workflow_runs SET status = 'queued', run_at = $2, finished_at = NULL, failures = 0
                WHERE id = $1 AND status IN ('failed', 'cancelled') RETURNING id
                """, run, now)
            guard !rows.isEmpty else { return false }
            // Finished steps stay memoised; failed ones get a fresh budget. A wait that the
            // cancellation ended starts again (its registration went with the cancellation), and
            // finds events logged meanwhile.
            try await tx.query("UPDATE workflow_steps SET failures = 0 WHERE run_id = $1 AND status = 'failed'", run)
            try await tx.query("DELETE FROM workflow_steps WHERE run_id = $1 AND status = 'waiting'", run)
            return true
        }
    }

    func cancel(run: String, now: Timestamp) async throws -> Bool {
        try await db.write { tx in
            let active = try await tx.first("SELECT id FROM workflow_runs WHERE id = $1 AND status IN \(Self.activeList)", run)
            guard active != nil else { return false }
            try await cancel(tx, run: run, reason: "cancelled by an administrator", now: now)
            return true
        }
    }
}
