import Foundation
import Logging
import NIOConcurrencyHelpers
import ServiceKit
import ServiceLifecycle
import Storage

/// Runs durable functions: turns log events into runs, claims due runs and executes them, with
/// `workers` runs at a time in this process. Several engines (nodes) may share one PostgreSQL
/// database; on SQLite run one.
public final class WorkflowEngine: Service, Sendable {
    public struct Configuration: Sendable {
        /// Runs executed at once by this process.
        public var workers = 4
        /// A missed wake-up delays work by at most this long.
        public var pollInterval: Duration = .seconds(1)
        /// A run whose worker stops renewing this lease (a crashed node) is taken over.
        public var lease: Duration = .seconds(30)
        /// After a dispatch that made nothing runnable (most commits are messages no function
        /// waits for), wake-ups gather this long before the next look: a busy conversation then
        /// costs one dispatch transaction per interval, not one per message. An event that does
        /// start a function in that interval starts at most this much later.
        public var settle: Duration = .milliseconds(50)
        public init() {}
    }

    public static let migrations = RunStore.migrations
    var hasSchedules: Bool { ordered.contains { $0.schedule != nil } }
    /// Announces runs that became due (an admin retry, a resolved wait) to every node: the event
    /// log's channel, which every node already listens to (one connection, not two).
    static let channel = EventLog.notifyChannel

    let store: RunStore
    let db: any Database
    let functions: [String: WorkflowFunction]
    /// Their ids: a node claims and waits for runs of these only.
    let functionIDs: Set<String>
    let ordered: [WorkflowFunction]
    let clock: any WorkflowClock
    let configuration: Configuration
    let logger: Logger
    public let workerID: String
    private let wakeStream: AsyncStream<Void>
    private let wakeContinuation: AsyncStream<Void>.Continuation
    private struct State {
        var busy = 0
        var timer: Task<Void, Never>?
    }
    private let state = NIOLockedValueBox(State())
    private let readiness = Readiness()

    public init(db: any Database, functions: [WorkflowFunction], clock: any WorkflowClock = SystemClock(),
                configuration: Configuration = Configuration(), logger: Logger) {
        var byID: [String: WorkflowFunction] = [:]
        for f in functions {
            precondition(byID[f.id] == nil, "workflow function \(f.id) defined twice")
            byID[f.id] = f
        }
        self.db = db
        self.store = RunStore(db: db)
        self.functions = byID
        self.functionIDs = Set(byID.keys)
        self.ordered = functions
        self.clock = clock
        self.configuration = configuration
        self.logger = logger
        self.workerID = Secrets.uuid().prefix(8) + "@" + ProcessInfo.processInfo.hostName
        (wakeStream, wakeContinuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    /// Call once the schema exists (migrations ran); `run()` waits for it.
    public func prepare() async throws {
        try await store.releaseOrphans()
        try await store.register(functions: ordered)
        readiness.markReady()
    }

    /// Appends a typed event to the log in its own transaction (functions it triggers run soon).
    @discardableResult
    public func send<E: DomainEvent>(_ event: E) async throws -> Int64 {
        try await db.write { tx in try await EventLog.append(tx, event) }
    }

    func wake() {
        wakeContinuation.yield()
    }

    public func run() async throws {
        guard await readiness.wait() else { return }
        let db = self.db
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await EventLog.watch(db, poll: self.configuration.pollInterval) { self.wake() } }
            group.addTask { await self.timer() }
            group.addTask { await self.loop() }
            wake()
            try? await gracefulShutdown()
            // Cancelling interrupts runs between writes; what they finished is stored, the rest
            // is done again by the next worker.
            wakeContinuation.finish()
            group.cancelAll()
        }
    }

    /// Wakes the loop when the earliest sleeping, waiting or retrying run falls due (by `clock`).
    /// Re-reads the schedule at least every poll interval, and at once when this node changed it.
    private func timer() async {
        while !Task.isCancelled {
            let due = (try? await store.nextDue(functions: functionIDs)) ?? nil
            let cap = clock.now().adding(configuration.pollInterval)
            let target = min(due ?? cap, cap)
            let clock = self.clock
            let sleeper = Task<Void, Never> { _ = try? await clock.sleep(until: target) }
            state.withLockedValue { $0.timer = sleeper }
            await withTaskCancellationHandler { await sleeper.value } onCancel: { sleeper.cancel() }
            if Task.isCancelled { return }
            if clock.now() >= target { wake() }
        }
    }

    /// The schedule changed here: the timer looks again.
    func reschedule() {
        state.withLockedValue { $0.timer }?.cancel()
    }

    private func loop() async {
        await withDiscardingTaskGroup { runs in
            for await _ in wakeStream {
                // Most wake-ups (polls, commits of unrelated writes) find nothing to do: one cheap
                // read decides, so idle workers do not take the write lock every second.
                var work = (try? await store.work(now: clock.now(), functions: functionIDs)) ?? .all
                if hasSchedules { work = .all }
                guard work.events || work.runs else { continue }
                var dispatched = 0
                do {
                    if try await store.fireSchedules(ordered, now: clock.now()) { try? await db.notify(Self.channel, payload: "") }
                    while work.events {
                        let (count, runnable) = try await store.dispatch(functions: ordered, now: clock.now())
                        dispatched += count
                        if runnable {
                            work.runs = true
                            try? await db.notify(Self.channel, payload: "")
                        }
                        // Fewer than a batch: it read up to the head. A commit since wakes it again.
                        if count < RunStore.dispatchBatch { break }
                    }
                } catch {
                    if !Task.isCancelled { logger.warning("workflow dispatch failed", metadata: ["error": .string(String(reflecting: error))]) }
                }
                // Most commits (a message nobody's workflow waits for) make nothing runnable: no
                // claim transaction for them.
                while work.runs, state.withLockedValue({ $0.busy < configuration.workers }) {
                    let claimed: ClaimedRun?
                    do {
                        claimed = try await store.claim(
                            worker: workerID, functions: functionIDs, now: clock.now(), lease: configuration.lease)
                    } catch {
                        if !Task.isCancelled { logger.warning("claiming a workflow run failed", metadata: ["error": .string(String(reflecting: error))]) }
                        break
                    }
                    guard let run = claimed else { break }
                    state.withLockedValue { $0.busy += 1 }
                    runs.addTask {
                        await self.execute(run)
                        self.state.withLockedValue { $0.busy -= 1 }
                        self.reschedule()
                        self.wake()
                    }
                }
                if dispatched > 0, !work.runs {
                    // Wake-ups that arrive meanwhile wait in the stream (one, however many came).
                    try? await Task.sleep(for: configuration.settle)
                }
            }
            runs.cancelAll()
        }
    }

    /// Executes one claimed run until it completes, parks, fails or is lost.
    func execute(_ run: ClaimedRun) async {
        var log = logger
        log[metadataKey: "run_id"] = .string(run.id)
        log[metadataKey: "function"] = .string(run.functionID)
        guard let function = functions[run.functionID] else {
            // `claim` hands out runs of this node's functions only; were it not so, the lease
            // runs out and a node that has the function takes the run.
            log.error("claimed a run of a function this node does not have")
            return
        }
        let step = Step(runID: run.id, attempt: run.attempt, store: store, worker: workerID, clock: clock,
                        eventSeq: run.eventSeq, memo: run.steps)
        let deadline = function.timeout.map { run.startedAt.adding($0) }
        enum Outcome: Sendable { case done, timedOut, lost, error(any Error) }
        let outcome: Outcome = await withTaskGroup(of: Outcome?.self) { group in
            group.addTask {
                if let deadline, self.clock.now() >= deadline { return .timedOut }
                do {
                    try await function.body(run.payload, step)
                    return .done
                } catch {
                    return .error(error)
                }
            }
            if let deadline {
                group.addTask {
                    do { try await self.clock.sleep(until: deadline) } catch { return nil }
                    return .timedOut
                }
            }
            group.addTask {
                // Keeps the lease while the body works; a lost lease (cancelled run) stops it.
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(max(self.configuration.lease.seconds / 3, 0.05)))
                    if Task.isCancelled { return nil }
                    if let mine = try? await self.store.heartbeat(run: run.id, worker: self.workerID, lease: self.configuration.lease), !mine {
                        return .lost
                    }
                }
                return nil
            }
            var result: Outcome = .lost
            while let next = await group.next() {
                if let next {
                    result = next
                    break
                }
            }
            group.cancelAll()
            return result
        }
        let now = clock.now()
        do {
            switch outcome {
            case .done:
                try await store.complete(run: run.id, worker: workerID, now: now)
            case .timedOut:
                log.warning("workflow run timed out")
                _ = try await store.fail(run: run.id, worker: workerID, step: nil, position: 0,
                                         error: "timed out after \(function.timeout?.seconds ?? 0) s", retryable: false,
                                         retries: function.retries, backoff: function.backoff, now: now)
            case .lost:
                log.info("workflow run is no longer this worker's")
            case .error(let error):
                switch error {
                case is Suspended, is RunLost:
                    break
                case is CancellationError:
                    // Shutting down: the lease runs out and another worker (or this one after a restart) resumes it.
                    break
                case let failed as StepFailed:
                    let retryable = !(failed.error is NonRetryableError)
                    let dead = try await store.fail(run: run.id, worker: workerID, step: failed.step, position: failed.position,
                                                    error: "\(failed.error)", retryable: retryable, retries: function.retries, backoff: function.backoff, now: now)
                    if dead { log.warning("workflow run failed", metadata: ["step": .string(failed.step), "error": .string("\(failed.error)")]) }
                default:
                    let retryable = !(error is NonRetryableError)
                    let dead = try await store.fail(run: run.id, worker: workerID, step: nil, position: 0,
                                                    error: "\(error)", retryable: retryable, retries: function.retries, backoff: function.backoff, now: now)
                    if dead { log.warning("workflow run failed", metadata: ["error": .string("\(error)")]) }
                }
            }
        } catch is RunLost {
            log.info("workflow run is no longer this worker's")
        } catch {
            // Cancelled while shutting down: the lease runs out and the run is resumed.
            if !Task.isCancelled { log.warning("recording a workflow outcome failed", metadata: ["error": .string("\(error)")]) }
        }
    }
}

