import Foundation
import NIOConcurrencyHelpers
import ServiceKit

/// The time workflows are scheduled by. Production uses the wall clock; tests inject a
/// `ManualClock` so a ten-minute sleep takes no time. Leases (crash detection) always use real time.
public protocol WorkflowClock: Sendable {
    func now() -> Timestamp
    /// Returns once `deadline` has passed on this clock; throws when the task is cancelled.
    func sleep(until deadline: Timestamp) async throws
}

public struct SystemClock: WorkflowClock {
    public init() {}
    public func now() -> Timestamp { .now() }
    public func sleep(until deadline: Timestamp) async throws {
        let micros = deadline.microseconds - Timestamp.now().microseconds
        if micros > 0 { try await Task.sleep(for: .microseconds(micros)) }
    }
}

/// A clock that moves only when told to.
public final class ManualClock: WorkflowClock {
    private struct State {
        var now: Timestamp
        var sleepers: [UUID: (Timestamp, CheckedContinuation<Void, any Error>)] = [:]
    }
    private let state: NIOLockedValueBox<State>

    public init(start: Timestamp = .now()) { state = NIOLockedValueBox(State(now: start)) }

    public func now() -> Timestamp { state.withLockedValue { $0.now } }

    public func advance(by duration: Duration) {
        let due = state.withLockedValue { s -> [CheckedContinuation<Void, any Error>] in
            s.now = s.now.adding(duration)
            let ready = s.sleepers.filter { $0.value.0 <= s.now }
            for id in ready.keys { s.sleepers.removeValue(forKey: id) }
            return ready.values.map(\.1)
        }
        for c in due { c.resume() }
    }

    public func sleep(until deadline: Timestamp) async throws {
        let id = UUID()
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
                let resumeNow = state.withLockedValue { s -> Bool in
                    if deadline <= s.now || Task.isCancelled { return true }
                    s.sleepers[id] = (deadline, c)
                    return false
                }
                if resumeNow { c.resume() }
            }
        } onCancel: {
            state.withLockedValue { $0.sleepers.removeValue(forKey: id) }?.1.resume(throwing: CancellationError())
        }
        try Task.checkCancellation()
    }
}
