import ServiceKit
import Storage

/// `message.created`, `message.updated` and `message.deleted`: the payload is the Message itself
/// (docs/API.md), the tombstone when deleted. Who hears of it depends on the container (`group:<id>`
/// for a conversation, `chat:<id>` for a chat), which the owning service decides: the event carries
/// that audience to the log but does not encode it. A decoded event (a workflow's trigger) has the
/// audience `system`, so re-appending one can never reach a client it was not meant for.
public protocol MessageEvent: DomainEvent {
    var message: Message { get }
    init(_ message: Message, audience: String)
}

extension MessageEvent {
    public init(from decoder: any Decoder) throws { self.init(try Message(from: decoder), audience: "system") }
    public func encode(to encoder: any Encoder) throws { try message.encode(to: encoder) }
}

public struct MessageCreated: MessageEvent {
    public static let name = "message.created"
    public let message: Message
    public let audience: String
    public init(_ message: Message, audience: String) {
        self.message = message
        self.audience = audience
    }
}

public struct MessageUpdated: MessageEvent {
    public static let name = "message.updated"
    public let message: Message
    public let audience: String
    public init(_ message: Message, audience: String) {
        self.message = message
        self.audience = audience
    }
}

public struct MessageDeleted: MessageEvent {
    public static let name = "message.deleted"
    public let message: Message
    public let audience: String
    public init(_ message: Message, audience: String) {
        self.message = message
        self.audience = audience
    }
}
