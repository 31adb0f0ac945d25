import Foundation
import NIOConcurrencyHelpers
import ServiceKit
import Storage

/// A step that failed; the engine decides between retry and dead letter.
struct StepFailed: Error {
    let step: String
    let position: Int
    let error: any Error
}

/// The run gave up its worker for now (sleeping, waiting for an event); it resumes later.
struct Suspended: Error {}

/// The run is no longer this worker's (cancelled, or its lease was taken over).
struct RunLost: Error {}

/// What a function's body uses to make its work durable. Each step has a name unique in its run
/// (a repeated name gets `#2`, `#3`, ... in the order the body reaches it).
public final class Step: Sendable {
    public let runID: String
    /// 1 for the first execution of the run, 2 after a retry or resume, ...
    public let attempt: Int
    let store: RunStore
    let worker: String
    let clock: any WorkflowClock
    let eventSeq: Int64
    private struct State {
        var memo: [String: StoredStep]
        var seen: [String: Int] = [:]
        var position = 0
    }
    private let state: NIOLockedValueBox<State>

    init(runID: String, attempt: Int, store: RunStore, worker: String, clock: any WorkflowClock, eventSeq: Int64,
         memo: [String: StoredStep]) {
        self.runID = runID
        self.attempt = attempt
        self.store = store
        self.worker = worker
        self.clock = clock
        self.eventSeq = eventSeq
        self.state = NIOLockedValueBox(State(memo: memo))
    }

    private func next(_ name: String) -> (key: String, position: Int, stored: StoredStep?) {
        state.withLockedValue { s in
            let n = (s.seen[name] ?? 0) + 1
            s.seen[name] = n
            s.position += 1
            let key = n == 1 ? name : "\(name)#\(n)"
            return (key, s.position, s.memo[key])
        }
    }

    private func remember(_ step: StoredStep) {
        state.withLockedValue { $0.memo[step.name] = step }
    }

    /// Runs `body` once per run: its result is stored and returned, without running it, to every
    /// later execution of this run.
    @discardableResult
    public func run<T: Codable & Sendable>(_ name: String, _ body: @Sendable () async throws -> T) async throws -> T {
        let (key, position, stored) = next(name)
        if let stored, stored.status == .completed {
            return try JSON.decoder().decode(T.self, from: Data((stored.output ?? "null").utf8))
        }
        let value: T
        do {
            value = try await body()
        } catch let e as CancellationError {
            throw e
        } catch {
            throw StepFailed(step: key, position: position, error: error)
        }
        let output = String(decoding: try JSON.encode(value), as: UTF8.self)
        try await store.completeStep(run: runID, worker: worker, name: key, position: position, output: output, at: clock.now())
        remember(StoredStep(name: key, status: .completed, output: output, wakeAt: nil))
        return value
    }

    /// A step with no result.
    public func run(_ name: String, _ body: @Sendable () async throws -> Void) async throws {
        _ = try await run(name) { () async throws -> Empty in
            try await body()
            return Empty()
        }
    }

    /// Appends `event` to the log once per run: with the step's result, in one transaction, so a
    /// retried or resumed run never sends it twice. How a function fans out into other runs.
    public func sendEvent<E: DomainEvent>(_ name: String, _ event: E) async throws {
        let (key, position, stored) = next(name)
        if let stored, stored.status == .completed { return }
        try await store.completeStep(run: runID, worker: worker, name: key, position: position, output: "null", at: clock.now()) { tx in
            try await EventLog.append(tx, event)
        }
        remember(StoredStep(name: key, status: .completed, output: "null", wakeAt: nil))
    }

    /// Pauses the run for `duration`; the worker is free meanwhile, and a restart does not reset it.
    public func sleep(_ name: String, for duration: Duration) async throws {
        try await sleep(name, until: clock.now().adding(duration), relative: true)
    }

    /// Pauses the run until `time`.
    public func sleep(_ name: String, until time: Timestamp) async throws {
        try await sleep(name, until: time, relative: false)
    }

    private func sleep(_ name: String, until time: Timestamp, relative: Bool) async throws {
        let (key, position, stored) = next(name)
        if let stored {
            switch stored.status {
            case .completed: return
            case .sleeping:
                // The first execution fixed the wake-up time: a relative sleep is not restarted.
                let wake = stored.wakeAt ?? time
                if clock.now() >= wake {
                    try await store.completeStep(run: runID, worker: worker, name: key, position: position, output: "null", at: clock.now())
                    remember(StoredStep(name: key, status: .completed, output: "null", wakeAt: nil))
                    return
                }
                try await store.suspend(run: runID, worker: worker, step: key, position: position, status: .sleeping, until: wake, wait: nil)
                throw Suspended()
            default: break
            }
        }
        if clock.now() >= time && !relative {
            try await store.completeStep(run: runID, worker: worker, name: key, position: position, output: "null", at: clock.now())
            return
        }
        try await store.suspend(run: runID, worker: worker, step: key, position: position, status: .sleeping, until: time, wait: nil)
        throw Suspended()
    }

    /// Waits for an event of type `E` whose JSON fields equal `match`, appended after the event
    /// that started this run; nil when `timeout` passes first.
    public func waitForEvent<E: DomainEvent>(
        _ name: String, _ type: E.Type, match: [String: String], timeout: Duration
    ) async throws -> E? {
        let (key, position, stored) = next(name)
        func decode(_ output: String?) throws -> E? {
            guard let output, output != "null" else { return nil }
            return try JSON.decoder().decode(E.self, from: Data(output.utf8))
        }
        if let stored {
            switch stored.status {
            case .completed: return try decode(stored.output)
            case .waiting:
                let expires = stored.wakeAt ?? clock.now()
                if clock.now() >= expires {
                    // Timed out. The dispatcher may complete the step at the same moment: the
                    // store keeps whichever came first.
                    let output = try await store.expireWait(run: runID, worker: worker, step: key, at: clock.now())
                    remember(StoredStep(name: key, status: .completed, output: output, wakeAt: nil))
                    return try decode(output)
                }
                try await store.suspend(run: runID, worker: worker, step: key, position: position, status: .waiting, until: expires, wait: nil)
                throw Suspended()
            default: break
            }
        }
        let expires = clock.now().adding(timeout)
        let wait = Wait(eventType: E.name, match: match, afterSeq: eventSeq)
        if let found = try await store.suspend(
            run: runID, worker: worker, step: key, position: position, status: .waiting, until: expires, wait: wait) {
            remember(StoredStep(name: key, status: .completed, output: found, wakeAt: nil))
            return try decode(found)
        }
        throw Suspended()
    }
}

struct Wait: Sendable {
    var eventType: String
    var match: [String: String]
    var afterSeq: Int64
}
