import NIOConcurrencyHelpers
import ServiceLifecycle

/// Set once a service's `prepare()` has run. Services start with the service group, before the
/// migrations their `prepare()` needs (those run in `beforeServerStarts`), so their `run()` waits
/// here first.
public final class Readiness: Sendable {
    private let ready = NIOLockedValueBox(false)

    public init() {}

    public func markReady() { ready.withLockedValue { $0 = true } }

    /// Waits until ready; false when the task is cancelled or the service group shuts down first.
    public func wait() async -> Bool {
        while !ready.withLockedValue({ $0 }) {
            if Task.isCancelled || Task.isShuttingDownGracefully { return false }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return true
    }
}
