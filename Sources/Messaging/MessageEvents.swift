import ServiceKit
import Storage

// `message.created`, `message.updated` and `message.deleted`: the payload is the Message itself
// (docs/API.md), the tombstone when deleted. Who hears of it depends on the container
// (`group:<id>` for a conversation, `chat:<id>` for a chat), which the owning service decides.
public enum MessageCreated: EventKind {
    public typealias Payload = Message
    public static let name = "message.created"
}

public enum MessageUpdated: EventKind {
    public typealias Payload = Message
    public static let name = "message.updated"
}

public enum MessageDeleted: EventKind {
    public typealias Payload = Message
    public static let name = "message.deleted"
}

/// `reaction.added` and `reaction.removed`.
public struct ReactionChange: Codable, Sendable {
    public var messageId: String
    public var conversationId: String?
    public var chatId: String?
    public var userId: String
    public var emoji: String
}

public enum ReactionAdded: EventKind {
    public typealias Payload = ReactionChange
    public static let name = "reaction.added"
}

public enum ReactionRemoved: EventKind {
    public typealias Payload = ReactionChange
    public static let name = "reaction.removed"
}
