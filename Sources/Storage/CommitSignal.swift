import Foundation
import NIOConcurrencyHelpers

/// Tells listeners in this process that a transaction holding events committed. Listeners get a
/// stream that keeps at most one pending signal: a burst of commits wakes them once.
public final class CommitSignal: Sendable {
    private let listeners = NIOLockedValueBox<[UUID: AsyncStream<Void>.Continuation]>([:])

    public init() {}

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
}

/// What a transaction did that matters after it commits.
final class TransactionState: Sendable {
    private let appended = NIOLockedValueBox(false)

    /// Marks that the transaction appended an event; true the first time.
    func markAppended() -> Bool {
        appended.withLockedValue { a in
            defer { a = true }
            return !a
        }
    }

    var hasEvents: Bool { appended.withLockedValue { $0 } }
}
