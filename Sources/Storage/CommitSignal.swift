import Foundation
import NIOConcurrencyHelpers

/// Tells listeners in this process that a transaction holding events committed. Listeners get a
/// stream that keeps at most one pending signal: a burst of commits wakes them once.
public final class CommitSignal: Sendable {
    private let listeners = NIOLockedValueBox<[UUID: AsyncStream<Void>.Continuation]>([:])

    /// Whether this database hands each commit's events to `observe`rs (SQLite). Then a reader
    /// that observes need not be woken to read its own process's commits back from the log.
    public let handsOverEvents: Bool

    public init(handsOverEvents: Bool = false) { self.handsOverEvents = handsOverEvents }

    public func stream() -> AsyncStream<Void> {
        let (stream, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let id = UUID()
        listeners.withLockedValue { $0[id] = continuation }
        continuation.onTermination = { [weak self] _ in
            _ = self?.listeners.withLockedValue { $0.removeValue(forKey: id) }
        }
        return stream
    }

    public func signal() {
        for c in listeners.withLockedValue({ Array($0.values) }) { c.yield() }
    }

    private let observers = NIOLockedValueBox<[@Sendable ([Event]) -> Void]>([])

    /// Hands `observer` the events of each commit in this process, in commit order, on the
    /// committing thread, before the commit's waiters resume: the event bus takes new events
    /// from here instead of reading them back from the log. Only databases whose commits here
    /// are the whole log in order do (`handsOverEvents`); a reader must still treat the log as the
    /// source of truth and fall back to it on any gap.
    public func observe(_ observer: @escaping @Sendable ([Event]) -> Void) {
        observers.withLockedValue { $0.append(observer) }
    }

    func committed(_ events: [Event]) {
        guard !events.isEmpty else { return }
        for o in observers.withLockedValue({ $0 }) { o(events) }
    }
}

/// What a transaction did that matters after it commits: the events it appended, in order.
final class TransactionState: Sendable {
    private let logged = NIOLockedValueBox<[Event]>([])

    func record(_ event: Event) { logged.withLockedValue { $0.append(event) } }
    var events: [Event] { logged.withLockedValue { $0 } }
    var hasEvents: Bool { logged.withLockedValue { !$0.isEmpty } }
}
