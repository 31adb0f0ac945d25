import ServiceKit

/// A message in a group conversation (`conversation_id` set) or a private chat (`chat_id` set).
public struct Message: Codable, Sendable, Equatable {
    public var id: String
    public var authorId: String
    public var conversationId: String?
    public var chatId: String?
    /// Empty once deleted.
    public var text: String
    public var sentAt: Timestamp
    public var editedAt: Timestamp?
    public var deleted: Bool?
    public var replyTo: String?
    public var reactions: [Reaction]?
    /// Users the text mentions (`@username` of a member, in group conversations), in the order
    /// the text names them; absent when none.
    public var mentions: [String]?
}

/// Everyone who reacted with one emoji, in the order they did.
public struct Reaction: Codable, Sendable, Equatable {
    public var emoji: String
    public var count: Int
    public var userIds: [String]
}

public struct CreateMessageRequest: Codable, Sendable {
    /// Client-chosen id: a retried request with the same id returns the stored message.
    public var id: String?
    public var conversationId: String?
    public var chatId: String?
    public var authorId: String?
    public var text: String
    public var replyTo: String?
}

public struct MessageResponse: Codable, Sendable {
    public var message: Message
    public init(message: Message) { self.message = message }
}

public struct ListMessagesRequest: Codable, Sendable {
    public var conversationId: String?
    public var chatId: String?
    public var sentBefore: Timestamp?
    public var sentAfter: Timestamp?
    public var limit: Int?
}

public struct MessagesResponse: Codable, Sendable {
    public var messages: [Message]
    public init(messages: [Message]) { self.messages = messages }
}

public struct UpdateMessageRequest: Codable, Sendable {
    public var id: String
    public var text: String
}

public struct MessageIDRequest: Codable, Sendable {
    public var id: String
}

public struct ReactionRequest: Codable, Sendable {
    public var messageId: String
    public var emoji: String
}

public struct SearchRequest: Codable, Sendable {
    public var query: String
    public var limit: Int?
}
