import Foundation
import ServiceKit

/// An event as a Swift type: its name is the log's `type`, its JSON is the payload. Appending one
/// through `EventLog.append(_:_:)` makes the compiler check the shape the workflows decode.
public protocol DomainEvent: Codable, Sendable {
    /// The event type in the log, e.g. `invite.created`.
    static var name: String { get }
    /// Who may hear of it on the realtime feed (`user:<id>`, `group:<id>`, ...). Internal events
    /// use `system`, which no client subscribes to.
    var audience: String { get }
}

extension DomainEvent {
    public var audience: String { "system" }
}

extension EventLog {
    /// Appends a typed event inside `tx` and returns its sequence number.
    @discardableResult
    public static func append<E: DomainEvent>(_ tx: Transaction, _ event: E) async throws -> Int64 {
        try await append(tx, type: E.name, audience: event.audience, payload: event)
    }

    /// Calls `wake` when events commit in this process, when another node announces a commit
    /// (PostgreSQL NOTIFY), and every `poll` in case a notification was lost. Returns when the
    /// calling task is cancelled. The event bus and the workflow engine both tail the log this way.
    public static func watch(_ db: any Database, poll: Duration, _ wake: @escaping @Sendable () -> Void) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { for await _ in db.commits.stream() { wake() } }
            group.addTask { try? await db.listen(notifyChannel) { _ in wake() } }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: poll)
                    wake()
                }
            }
        }
    }
}
