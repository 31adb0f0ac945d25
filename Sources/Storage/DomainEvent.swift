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

    /// Calls `wake` when events commit in this process (unless `ownCommits` is false: the caller
    /// observes them itself), when another node announces a commit (PostgreSQL NOTIFY), and
    /// every `poll` in case a notification was lost. Returns when the calling task is cancelled.
    /// The event bus and the workflow engine both tail the log this way.
    public static func watch(
        _ db: any Database, poll: Duration, ownCommits: Bool = true, _ wake: @escaping @Sendable () -> Void
    ) async {
        await withTaskGroup(of: Void.self) { group in
            if ownCommits { group.addTask { for await _ in db.commits.stream() { wake() } } }
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

/// The name of an event whose payload is a value the API already shows (a Group, a Message, a
/// membership change): `Logged<GroupCreated>` is that event, and `GroupCreated.event(group,
/// audience:)` makes one.
public protocol EventKind: Sendable {
    associatedtype Payload: Codable & Sendable
    static var name: String { get }
}

extension EventKind {
    public static func event(_ payload: Payload, audience: String) -> Logged<Self> {
        Logged(payload, audience: audience)
    }
}

/// An event of `Kind`: its JSON is the payload's; its audience is chosen by the service that logs
/// it and is not encoded. Read back from the log (a workflow's trigger) it has the audience
/// `system`, so logging it again can never reach a client it was not meant for.
public struct Logged<Kind: EventKind>: DomainEvent {
    public static var name: String { Kind.name }
    public let payload: Kind.Payload
    public let audience: String

    public init(_ payload: Kind.Payload, audience: String) {
        self.payload = payload
        self.audience = audience
    }

    public init(from decoder: any Decoder) throws {
        payload = try Kind.Payload(from: decoder)
        audience = "system"
    }

    public func encode(to encoder: any Encoder) throws { try payload.encode(to: encoder) }
}

/// The payload of events that name what went away.
public struct Removed: Codable, Sendable, Equatable {
    public var id: String
    public init(id: String) { self.id = id }
}
