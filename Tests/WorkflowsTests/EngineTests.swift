import Foundation
import ServiceKit
import Storage
import Testing
import TestSupport
@testable import Workflows

struct Boom: Error, CustomStringConvertible {
    let description: String
}

@Suite("workflows: steps, retries, sleeps, waits, flow control")
struct EngineTests {
    @Test(arguments: Backend.all)
    func finishedStepsAreNotRepeatedWhenARetryRuns(_ backend: Backend) async throws {
        let probe = Probe()
        let clock = ManualClock()
        let backoff = Backoff(base: .seconds(10), max: .seconds(60))
        let f = WorkflowFunction("memo", on: Ping.self, retries: 3, backoff: backoff) { event, step in
            let token = try await step.run("first") { () -> String in
                probe.hit("first")
                return "token-\(event.id)"
            }
            try await step.run("second") {
                // Fails twice, then works; sees the first step's stored result every time.
                probe.note(token)
                if probe.hit("second") < 3 { throw Boom(description: "flaky \(probe.count("second"))") }
            }
        }
        try await withEngines(backend, clock: clock, [f]) { db, _ in
            try await send(db, Ping(id: "a"))
            for n in 1...2 {
                try await eventually("failure \(n)") { probe.count("second") == n }
                try await eventually("retry \(n) scheduled") { try await runs(db, function: "memo").first?.status == "queued" }
                let run = try #require(try await runs(db, function: "memo").first)
                // Exponential backoff with jitter: within the upper half of base * 2^(n-1).
                let delay = Double(run.runAt.microseconds - clock.now().microseconds) / 1e6
                let ceiling = backoff.ceiling(n)
                #expect(delay >= ceiling / 2 - 0.01 && delay <= ceiling + 0.01, "retry \(n) after \(delay) s")
                #expect(run.error == "step second: flaky \(n)")
                // Not before its time.
                try await Task.sleep(for: .milliseconds(150))
                #expect(probe.count("second") == n)
                clock.advance(by: .seconds(ceiling))
            }
            try await eventually("completed") { try await runs(db, function: "memo").first?.status == "completed" }
            #expect(probe.count("first") == 1)
            #expect(probe.count("second") == 3)
            #expect(probe.log == ["token-a", "token-a", "token-a"])
            #expect(try await runs(db, function: "memo").first?.attempts == 3)
        }
    }

    @Test(arguments: Backend.all)
    func aRunThatKeepsFailingIsKeptAsFailed(_ backend: Backend) async throws {
        let probe = Probe()
        let retrying = WorkflowFunction("always-fails", on: Ping.self, retries: 2, backoff: Backoff(base: .milliseconds(1), max: .milliseconds(1))) { _, step in
            try await step.run("send") {
                probe.hit("send")
                throw Boom(description: "mail server down")
            }
        }
        let fatal = WorkflowFunction("bad-input", on: Ping.self, retries: 5) { _, step in
            try await step.run("validate") {
                probe.hit("validate")
                throw NonRetryableError("no such address")
            }
        }
        try await withEngines(backend, [retrying, fatal]) { db, _ in
            try await send(db, Ping(id: "x"))
            try await eventually("dead letter") { try await runs(db, function: "always-fails").first?.status == "failed" }
            try await eventually("non-retryable failure") { try await runs(db, function: "bad-input").first?.status == "failed" }
            #expect(probe.count("send") == 3)
            #expect(probe.count("validate") == 1)
            let dead = try #require(try await runs(db, function: "always-fails").first)
            #expect(dead.attempts == 3)
            #expect(dead.error == "step send: mail server down")
            let attempts = try await db.read { conn in
                try await conn.query("SELECT outcome, error FROM workflow_attempts WHERE run_id = $1 ORDER BY number", dead.id)
                    .map { "\(try $0.string("outcome")): \(try $0.string("error"))" }
            }
            #expect(attempts == ["retry: mail server down", "retry: mail server down", "failed: mail server down"])
            // Failed runs stay until someone retries them; nothing else runs them.
            try await Task.sleep(for: .milliseconds(200))
            #expect(probe.count("send") == 3)
        }
    }

    /// While nodes of two versions share the database, an older node leaves the runs of a
    /// function it does not have to the nodes that do (it used to fail them for good).
    @Test(arguments: Backend.all)
    func aNodeLeavesRunsOfFunctionsItDoesNotHave(_ backend: Backend) async throws {
        let probe = Probe()
        let known = WorkflowFunction("known", on: Ping.self) { _, step in try await step.run("hit") { probe.hit("known") } }
        try await withEngines(backend, [known]) { db, _ in
            try await db.write { tx in
                try await tx.query(
                    """
                    INSERT INTO workflow_runs (id, function_id, event_type, event_payload, event_seq, idempotency_key,
                        concurrency_limit, status, run_at, created_at)
                    VALUES ('newer-run', 'newer', 'test.ping', '{"id":"n"}', 0, 'n', 0, 'queued', $1, $1)
                    """, Timestamp(microseconds: 0))
            }
            try await send(db, Ping(id: "after"))
            try await eventually("the known run done") { try await runs(db, function: "known").first?.status == "completed" }
            try await Task.sleep(for: .milliseconds(300))
            let newer = try #require(try await runs(db, function: "newer").first)
            #expect(newer.status == "queued" && newer.attempts == 0, "\(newer)")
            // Nor is it this node's work: a due run it cannot claim would wake it again at once.
            let store = RunStore(db: db)
            #expect(try await store.work(now: Timestamp.now(), functions: ["known"]).runs == false)
            #expect(try await store.nextDue(functions: ["known"]) == nil)
            #expect(try await store.nextDue(functions: ["known", "newer"]) == Timestamp(microseconds: 0))
        }
    }

    /// A rolling upgrade: a node of the new version, with a function the old one lacks, has
    /// started (and registered it); an old node goes on dispatching. The new function still
    /// gets every event from its node's start, each run starts once, and a cancelling event
    /// the old node passed before the run existed cancels it.
    @Test(arguments: Backend.all)
    func aFunctionNewInAVersionGetsTheEventsOlderNodesDispatched(_ backend: Backend) async throws {
        let old = WorkflowFunction("old", on: Ping.self) { _, _ in }
        let new = WorkflowFunction("new", on: Ping.self, cancelOn: CancelOn(Pong.self) { ["user": $0.user] }) { _, _ in }
        try await TestDatabase.with(backend, migrations: WorkflowEngine.migrations) { db in
            let store = RunStore(db: db)
            @Sendable func startCursor(_ id: String) async throws -> Int64? {
                try await db.read { try await $0.first("SELECT seq FROM workflow_start_cursors WHERE function_id = $1", id)?.int("seq") }
            }
            // Before the new version: the old node alone.
            try await store.register(functions: [old])
            try await send(db, Ping(id: "before"))
            _ = try await store.dispatch(functions: [old], now: .now())
            let oldCursor = try #require(try await startCursor("old"))
            // The new version's first node starts; an old node dispatches the next events (old
            // code moves only the shared cursor, so its start cursor is put back).
            try await store.register(functions: [old, new])
            try await send(db, Ping(id: "a", user: "ada"))
            try await send(db, Ping(id: "b", user: "bob"))
            try await send(db, Pong(user: "bob"))
            _ = try await store.dispatch(functions: [old], now: .now())
            try await db.write { tx in try await tx.query("UPDATE workflow_start_cursors SET seq = $1 WHERE function_id = 'old'", oldCursor) }
            #expect(try await store.work(now: .now(), functions: ["old", "new"]).events)
            #expect(try await runs(db, function: "new").isEmpty)
            // The new node's dispatch catches up.
            _ = try await store.dispatch(functions: [old, new], now: .now())
            let newRuns = try await runs(db, function: "new")
            #expect(newRuns.map(\.status) == ["queued", "cancelled"], "\(newRuns)")
            #expect(try await runs(db, function: "old").count == 3)
            let head = try await EventLog.head(db)
            #expect(try await startCursor("new") == head)
            #expect(try await startCursor("old") == head)
            #expect(try await store.work(now: .now(), functions: ["old", "new"]).events == false)

            // A run the new node started on time, cancelled by an event only an old node passed,
            // caught up over several batches.
            try await send(db, Ping(id: "c", user: "cy"))
            _ = try await store.dispatch(functions: [old, new], now: .now())
            let caughtUp = try #require(try await startCursor("old"))
            for n in 0..<3 { try await send(db, Pong(user: "u\(n)")) }
            try await send(db, Pong(user: "cy"))
            _ = try await store.dispatch(functions: [old], now: .now())
            try await db.write { tx in try await tx.query("UPDATE workflow_start_cursors SET seq = $1 WHERE function_id = 'old'", caughtUp) }
            while try await store.dispatch(functions: [old, new], now: .now(), batch: 2).events > 0 {}
            #expect(try await runs(db, function: "new").map(\.status) == ["queued", "cancelled", "cancelled"])
            #expect(try await runs(db, function: "old").count == 4)

            // A function no node has had for an hour (switched off, or a version rolled back)
            // starts afresh when it comes back, instead of replaying the log since.
            let gone = WorkflowFunction("gone", on: Ping.self) { _, _ in }
            try await store.register(functions: [gone])
            let left = try #require(try await startCursor("gone"))
            try await send(db, Ping(id: "d"))
            _ = try await store.dispatch(functions: [old, new], now: .now())
            try await store.register(functions: [gone], now: Timestamp.now().adding(seconds: 1800))
            #expect(try await startCursor("gone") == left, "back within the hour: the events since are its")
            try await store.register(functions: [gone], now: Timestamp.now().adding(seconds: 1800 + 3700))
            #expect(try await startCursor("gone") == (try await EventLog.head(db)))
        }
    }

    @Test(arguments: Backend.all)
    func sleepsWakeOnTimeAndSurviveTheirWorker(_ backend: Backend) async throws {
        let probe = Probe()
        let clock = ManualClock()
        let f = WorkflowFunction("napper", on: Ping.self) { _, step in
            try await step.run("before") { probe.hit("before") }
            try await step.sleep("nap", for: .seconds(600))
            try await step.run("after") { probe.hit("after") }
        }
        let start = clock.now()
        try await withEngines(backend, clock: clock, [f]) { db, _ in
            try await send(db, Ping(id: "s"))
            try await eventually("asleep") { try await runs(db, function: "napper").first?.status == "sleeping" }
            let run = try #require(try await runs(db, function: "napper").first)
            #expect(run.runAt == start.adding(seconds: 600))
            clock.advance(by: .seconds(599))
            try await Task.sleep(for: .milliseconds(200))
            #expect(probe.count("after") == 0)
            clock.advance(by: .seconds(1))
            try await eventually("woke") { probe.count("after") == 1 }
            try await eventually("completed") { try await runs(db, function: "napper").first?.status == "completed" }
            #expect(probe.count("before") == 1)
        }
    }

    @Test(arguments: Backend.all)
    func waitForEventGetsTheMatchingEventOrTimesOut(_ backend: Backend) async throws {
        let probe = Probe()
        let clock = ManualClock()
        let f = WorkflowFunction("waiter", on: Ping.self) { ping, step in
            let pong = try await step.waitForEvent("pong", Pong.self, match: ["user": ping.user], timeout: .seconds(600))
            try await step.run("record") { probe.note("\(ping.id): \(pong?.note ?? "timed out")") }
        }
        try await withEngines(backend, clock: clock, [f]) { db, _ in
            try await send(db, Ping(id: "p1", user: "ada"))
            try await send(db, Ping(id: "p2", user: "bob"))
            try await eventually("both waiting") {
                try await runs(db, function: "waiter").map(\.status) == ["waiting", "waiting"]
            }
            // Another user's event does not match.
            try await send(db, Pong(user: "carl", note: "wrong"))
            try await send(db, Pong(user: "ada", note: "hi ada"))
            try await eventually("ada's run got its event") { probe.log == ["p1: hi ada"] }
            clock.advance(by: .seconds(601))
            try await eventually("bob's run timed out") { probe.log.count == 2 }
            #expect(probe.log == ["p1: hi ada", "p2: timed out"])
            try await eventually("both completed") {
                try await runs(db, function: "waiter").map(\.status) == ["completed", "completed"]
            }
        }
    }

    @Test(arguments: Backend.all)
    func aCancelledWaitingRunRetriedWaitsAgain(_ backend: Backend) async throws {
        let probe = Probe()
        let f = WorkflowFunction("retried-waiter", on: Ping.self) { ping, step in
            let pong = try await step.waitForEvent("pong", Pong.self, match: ["user": ping.user], timeout: .seconds(600))
            probe.note(pong?.note ?? "timed out")
        }
        try await withEngines(backend, [f]) { db, _ in
            try await send(db, Ping(id: "p", user: "ada"))
            try await eventually("waiting") { try await runs(db, function: "retried-waiter").first?.status == "waiting" }
            let run = try #require(try await runs(db, function: "retried-waiter").first)
            let store = RunStore(db: db)
            #expect(try await store.cancel(run: run.id, now: .now()))
            try await send(db, Pong(user: "ada", note: "while cancelled"))
            #expect(try await store.retry(run: run.id, now: .now()))
            try await eventually("the retried run got the event") { probe.log == ["while cancelled"] }
            try await eventually("completed") { try await runs(db, function: "retried-waiter").first?.status == "completed" }
        }
    }

    @Test(arguments: Backend.all)
    func anEventAppendedBeforeTheWaitStartsStillCounts(_ backend: Backend) async throws {
        // The run reaches its wait only after the awaited event was logged (and dispatched).
        let probe = Probe()
        let f = WorkflowFunction("late-waiter", on: Ping.self) { ping, step in
            try await step.run("slow") { try await Task.sleep(for: .milliseconds(300)) }
            let pong = try await step.waitForEvent("pong", Pong.self, match: ["user": ping.user], timeout: .seconds(600))
            probe.note(pong?.note ?? "nothing")
        }
        try await withEngines(backend, [f]) { db, _ in
            try await send(db, Pong(user: "ada", note: "before the run"))
            try await send(db, Ping(id: "p", user: "ada"))
            try await send(db, Pong(user: "ada", note: "while it works"))
            try await eventually("completed") { try await runs(db, function: "late-waiter").first?.status == "completed" }
            #expect(probe.log == ["while it works"])
        }
    }

    @Test(arguments: Backend.all)
    func aMatchingEventCancelsTheRun(_ backend: Backend) async throws {
        let probe = Probe()
        let clock = ManualClock()
        let f = WorkflowFunction(
            "cancellable", on: Ping.self, cancelOn: CancelOn(Pong.self) { ["user": $0.user] }
        ) { _, step in
            try await step.sleep("wait", for: .seconds(60))
            try await step.run("act") { probe.hit("act") }
        }
        try await withEngines(backend, clock: clock, [f]) { db, _ in
            try await send(db, Ping(id: "1", user: "ada"))
            try await send(db, Ping(id: "2", user: "bob"))
            try await eventually("sleeping") { try await runs(db, function: "cancellable").map(\.status) == ["sleeping", "sleeping"] }
            try await send(db, Pong(user: "ada"))
            try await eventually("ada's cancelled") { try await runs(db, function: "cancellable").first?.status == "cancelled" }
            clock.advance(by: .seconds(61))
            try await eventually("bob's done") { try await runs(db, function: "cancellable").last?.status == "completed" }
            #expect(probe.count("act") == 1)
        }
    }

    @Test(arguments: Backend.all)
    func aRunPastItsTimeoutFails(_ backend: Backend) async throws {
        let clock = ManualClock()
        let f = WorkflowFunction("slowpoke", on: Ping.self, timeout: .seconds(30)) { _, step in
            try await step.run("forever") { try await Task.sleep(for: .seconds(3600)) }
        }
        try await withEngines(backend, clock: clock, [f]) { db, _ in
            try await send(db, Ping(id: "t"))
            try await eventually("running") { try await runs(db, function: "slowpoke").first?.status == "running" }
            clock.advance(by: .seconds(31))
            try await eventually("timed out") { try await runs(db, function: "slowpoke").first?.status == "failed" }
            #expect(try await runs(db, function: "slowpoke").first?.error == "timed out after 30.0 s")
        }
    }

    @Test(arguments: Backend.all)
    func filtersDecideWhichEventsStartRuns(_ backend: Backend) async throws {
        let probe = Probe()
        let f = WorkflowFunction("filtered", on: Ping.self, filter: { $0.user == "ada" }) { ping, step in
            try await step.run("go") { probe.note(ping.id) }
        }
        try await withEngines(backend, [f]) { db, _ in
            try await send(db, Ping(id: "1", user: "bob"))
            try await send(db, Ping(id: "2", user: "ada"))
            try await eventually("ran") { probe.log == ["2"] }
            #expect(try await runs(db, function: "filtered").count == 1)
        }
    }

    /// Several engines (nodes) on one database; events delivered many times over, in parallel.
    @Test(arguments: Backend.all)
    func idempotencyAndConcurrencyKeysHoldUnderParallelDelivery(_ backend: Backend) async throws {
        let probe = Probe()
        let once = WorkflowFunction("once-per-id", on: Ping.self, idempotencyKey: { $0.id }) { ping, step in
            try await step.run("effect") { probe.hit("effect:\(ping.id)") }
        }
        let serial = WorkflowFunction(
            "one-per-user", on: Ping.self, concurrency: Concurrency(limit: 1) { $0.user }
        ) { ping, step in
            try await step.run("work") {
                try await probe.running(ping.user) {
                    probe.hit("serial:\(ping.user)")
                    try await Task.sleep(for: .milliseconds(30))
                }
            }
        }
        var config = WorkflowEngine.Configuration.fast
        config.workers = 4
        let engines = backend == .postgres ? 3 : 1
        try await withEngines(backend, count: engines, configuration: config, [once, serial]) { db, _ in
            // 8 ids, each sent 5 times by 40 concurrent producers; 2 users.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for copy in 0..<5 {
                    for id in 0..<8 {
                        group.addTask { try await send(db, Ping(id: "id\(id)", user: id % 2 == 0 ? "ada" : "bob")) }
                        _ = copy
                    }
                }
                try await group.waitForAll()
            }
            try await eventually("all ran", seconds: 60) {
                probe.count("serial:ada") + probe.count("serial:bob") == 40
                    && (0..<8).allSatisfy { probe.count("effect:id\($0)") == 1 }
            }
            try await Task.sleep(for: .milliseconds(200))
            for id in 0..<8 { #expect(probe.count("effect:id\(id)") == 1) }
            #expect(try await runs(db, function: "once-per-id").count == 8)
            #expect(probe.maxRunning("ada") == 1)
            #expect(probe.maxRunning("bob") == 1)
            try await eventually("all completed") {
                try await runs(db, function: "one-per-user").allSatisfy { $0.status == "completed" }
            }
        }
    }

    @Test(arguments: Backend.all)
    func eventsNoFunctionTakesAreDispatchedInBatches(_ backend: Backend) async throws {
        let probe = Probe()
        let f = WorkflowFunction("pinged", on: Ping.self) { event, _ in probe.note(event.id) }
        var config = WorkflowEngine.Configuration.fast
        config.settle = .seconds(3)
        try await withEngines(backend, configuration: config, [f]) { db, _ in
            @Sendable func cursor() async throws -> Int64 {
                try await db.read { try await $0.first("SELECT seq FROM workflow_cursor WHERE name = 'events'")?.int("seq") ?? -1 }
            }
            // The first event after a quiet spell is dispatched at once...
            try await send(db, Pong(user: "ada"))
            let first = try await EventLog.head(db)
            try await eventually("the first dispatched", seconds: 2) { try await cursor() == first }
            let settling = ContinuousClock.now
            // ...the ones right behind it wait for the settle and then go in one transaction.
            for n in 0..<5 { try await send(db, Pong(user: "u\(n)")) }
            try await Task.sleep(for: .milliseconds(200))
            let seen = try await cursor()
            // (A host too busy to send five events in 2.5 s says nothing about the settle.)
            if ContinuousClock.now - settling < .milliseconds(2500) { #expect(seen == first) }
            // An event that starts a function, sent meanwhile, starts once the settle is over.
            try await send(db, Ping(id: "late"))
            let head = try await EventLog.head(db)
            try await eventually("the rest dispatched", seconds: 10) { try await cursor() == head }
            try await eventually("the function ran") { probe.log == ["late"] }
        }
    }
}
