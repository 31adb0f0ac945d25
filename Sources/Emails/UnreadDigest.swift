import Chats
import Foundation
import Groups
import Mail
import Messaging
import Seen
import ServiceKit
import Storage
import Threads
import Users
import Workflows

/// One recipient's unread message: a chat message to them, or a message in a group conversation
/// that mentions them. The fan-out logs one per recipient (audience `system`); `resource_type` and
/// `resource_id` are the seen service's, so the digest waits for the one `seen.updated` that means
/// the recipient read it.
public struct UnreadMessage: DomainEvent {
    public static let name = "digest.unread_message"
    public var userId: String
    public var resourceType: ResourceType
    public var resourceId: String
    public var messageId: String
    public var sentAt: Timestamp

    public init(userId: String, resourceType: ResourceType, resourceId: String, messageId: String, sentAt: Timestamp) {
        self.userId = userId
        self.resourceType = resourceType
        self.resourceId = resourceId
        self.messageId = messageId
        self.sentAt = sentAt
    }

    enum CodingKeys: String, CodingKey {
        case userId, resourceType, resourceId, messageId, sentAt
        case chatId
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        userId = try c.decode(String.self, forKey: .userId)
        messageId = try c.decode(String.self, forKey: .messageId)
        sentAt = try c.decode(Timestamp.self, forKey: .sentAt)
        if let chat = try c.decodeIfPresent(String.self, forKey: .chatId) {
            // A run started before mentions, by the older `digest.unread_chat_message {chat_id}`.
            resourceType = .chat
            resourceId = chat
        } else {
            resourceType = try c.decode(ResourceType.self, forKey: .resourceType)
            resourceId = try c.decode(String.self, forKey: .resourceId)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(userId, forKey: .userId)
        try c.encode(resourceType, forKey: .resourceType)
        try c.encode(resourceId, forKey: .resourceId)
        try c.encode(messageId, forKey: .messageId)
        try c.encode(sentAt, forKey: .sentAt)
    }
}

/// Unread digest: a chat message, or a mention in a group conversation, not read within `delay` is
/// mailed to its recipient, in one digest of everything they have not read: their unread chat
/// messages and their unread mentions. A burst gives one mail: the runs of one user take turns
/// (concurrency 1 per user) and a run whose message an earlier digest covered sends nothing.
public enum UnreadDigest {
    public static let migrations = [
        Migration(service: "emails", version: 1, [
            "CREATE TABLE email_digests (user_id TEXT PRIMARY KEY, sent_at BIGINT NOT NULL)"
        ])
    ]

    /// What the digest reads from the other services.
    public struct Clients: Sendable {
        public var chats: any ChatsClient
        public var threads: any ThreadsClient
        public var groups: any GroupsClient
        public var seen: any SeenClient
        public var users: any UsersClient

        public init(chats: any ChatsClient, threads: any ThreadsClient, groups: any GroupsClient, seen: any SeenClient,
                    users: any UsersClient) {
            self.chats = chats
            self.threads = threads
            self.groups = groups
            self.seen = seen
            self.users = users
        }
    }

    public static func functions(
        db: any Database, mailer: Mailer, clients: Clients, settings: EmailSettings, delay: Duration
    ) -> [WorkflowFunction] {
        // An edit may add mentions: its mentioned users go through the same flow (a mention an
        // earlier digest covered, or one they read, is not mailed again).
        let created = fanOut("unread-fanout", on: MessageCreated.self, chats: true, clients: clients)
        let edits = fanOut("unread-fanout-edits", on: MessageUpdated.self, chats: false, clients: clients)
        let digest = WorkflowFunction(
            "unread-digest", on: UnreadMessage.self, retries: 8,
            backoff: Backoff(base: .seconds(5), max: .seconds(600)),
            concurrency: Concurrency(limit: 1) { $0.userId }
        ) { unread, step in
            let seenIt = try await step.waitForEvent(
                "seen", SeenUpdated.self,
                match: ["user_id": unread.userId, "resource_type": unread.resourceType.rawValue, "resource_id": unread.resourceId],
                timeout: delay)
            if seenIt != nil { return }
            let mail = try await step.run("collect") { () -> RenderedMail? in
                let last = try await db.read { conn in
                    try await conn.first("SELECT sent_at FROM email_digests WHERE user_id = $1", unread.userId)?.timestamp("sent_at")
                }
                if let last, last >= unread.sentAt { return nil }
                return try await render(user: unread.userId, after: last, clients: clients, settings: settings)
            }
            guard let mail else { return }
            let to = try await step.run("address") { () -> String? in
                try await clients.users.users(ids: [unread.userId])[unread.userId]?.email
            }
            guard let to else { return }
            try await step.run("send") {
                do {
                    try await mailer.send(to: [to], subject: mail.subject, text: mail.text, html: mail.html)
                } catch let e as MailError where e.permanent {
                    throw NonRetryableError(e.description)
                }
                _ = try await db.write { tx in
                    try await tx.query(
                        """
                        INSERT INTO email_digests (user_id, sent_at) VALUES ($1, $2)
                        ON CONFLICT (user_id) DO UPDATE SET sent_at = excluded.sent_at
                        """, unread.userId, Timestamp.now())
                }
            }
        }
        return [created, edits, digest]
    }

    /// Logs one `UnreadMessage` per recipient of an `E`'s message: the other participants of a chat
    /// (when `chats`), the users a conversation message mentions.
    static func fanOut<E: EventKind>(_ id: String, on type: E.Type, chats: Bool, clients: Clients) -> WorkflowFunction
    where E.Payload == Message {
        WorkflowFunction(
            id, on: Logged<E>.self,
            filter: { e in
                e.payload.deleted != true && (chats && e.payload.chatId != nil || e.payload.mentions?.isEmpty == false)
            }
        ) { event, step in
            let m = event.payload
            let unread: [UnreadMessage]
            if let chatID = m.chatId {
                let recipients = try await step.run("recipients") { () -> [String] in
                    (try await clients.chats.chats(ids: [chatID])[chatID]?.userIds ?? []).filter { $0 != m.authorId }.sorted()
                }
                unread = recipients.map {
                    UnreadMessage(userId: $0, resourceType: .chat, resourceId: chatID, messageId: m.id, sentAt: m.sentAt)
                }
            } else if let conversationID = m.conversationId {
                // The threads service decided who is mentioned (members, never the author).
                unread = (m.mentions ?? []).map {
                    UnreadMessage(userId: $0, resourceType: .thread, resourceId: conversationID, messageId: m.id, sentAt: m.sentAt)
                }
            } else {
                return
            }
            for u in unread { try await step.sendEvent("notify", u) }
        }
    }

    /// A conversation's unread mentions of the user, with where they happened.
    struct MentionPlace {
        var group: Group
        var conversation: Conversation
        var messages: [Message]
    }

    /// The user's unread chat messages (newer than their read mark of the chat and the last
    /// digest), oldest first.
    static func unreadChatMessages(user: String, after last: Timestamp?, clients: Clients) async throws -> [Message] {
        let ids = try await clients.chats.chatIDs(of: user)
        let marks = try await clients.seen.lastSeen(user: user, type: .chat, ids: ids)
        var unread: [Message] = []
        for (chat, messages) in try await clients.chats.recentMessages(ids, limit: 20) {
            let after = [marks[chat], last].compactMap { $0 }.max()
            unread += messages.filter { message in
                message.authorId != user && message.deleted != true && after.map { message.sentAt > $0 } ?? true
            }
        }
        return unread.sorted { $0.sentAt < $1.sentAt }
    }

    /// The user's unread mentions (newer than their read mark of the conversation and the last
    /// digest), by conversation, in groups they still belong to: a digest never shows a group's
    /// messages to someone who left it.
    static func unreadMentions(user: String, after last: Timestamp?, clients: Clients) async throws -> [MentionPlace] {
        let mentions = try await clients.threads.mentions(of: user, after: last, limit: 50)
        guard !mentions.isEmpty else { return [] }
        let conversations = try await clients.threads.conversations(ids: mentions.compactMap(\.conversationId))
        let marks = try await clients.seen.lastSeen(user: user, type: .thread, ids: Array(conversations.keys))
        let roles = try await clients.groups.roles(of: user, in: Array(Set(conversations.values.map(\.groupId))))
        var places: [String: MentionPlace] = [:]
        var groups: [String: Group] = [:]
        for m in mentions.reversed() {
            guard let cid = m.conversationId, let c = conversations[cid], roles[c.groupId] != nil,
                  marks[cid].map({ m.sentAt > $0 }) ?? true
            else { continue }
            if places[cid] == nil {
                if groups[c.groupId] == nil { groups[c.groupId] = try await clients.groups.group(c.groupId) }
                guard let g = groups[c.groupId] else { continue }
                places[cid] = MentionPlace(group: g, conversation: c, messages: [])
            }
            places[cid]?.messages.append(m)
        }
        return places.values.sorted { $0.messages[0].sentAt < $1.messages[0].sentAt }
    }

    /// The web app's deep link to a conversation (`/groups/{group}/{conversation}`).
    static func link(to c: Conversation, settings: EmailSettings) -> String {
        func segment(_ s: String) -> String { s.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(["/"])) ?? s }
        return settings.publicURL + "/groups/" + segment(c.groupId) + "/" + segment(c.id)
    }

    /// One mail of everything unread after `last`, or nil when nothing is.
    static func render(user: String, after last: Timestamp?, clients: Clients, settings: EmailSettings) async throws -> RenderedMail? {
        let chat = try await unreadChatMessages(user: user, after: last, clients: clients)
        let places = try await unreadMentions(user: user, after: last, clients: clients)
        let mentions = places.flatMap(\.messages)
        guard !chat.isEmpty || !mentions.isEmpty else { return nil }
        let authors = try await clients.users.users(ids: Array(Set((chat + mentions).map(\.authorId))))
        func name(_ id: String) -> String {
            authors[id].map { [$0.firstName, $0.lastName].filter { !$0.isEmpty }.joined(separator: " ") } ?? "Someone"
        }
        func count(_ n: Int, _ what: String) -> String { "\(n) \(what)\(n == 1 ? "" : "s")" }
        let subject: String
        switch (chat.count, mentions.count) {
        case (1, 0): subject = "1 unread message from \(name(chat[0].authorId))"
        case (_, 0): subject = "\(chat.count) unread messages"
        case (0, 1): subject = "\(name(mentions[0].authorId)) mentioned you in \(places[0].group.name)"
        case (0, _): subject = "\(mentions.count) unread mentions"
        default: subject = "\(count(chat.count, "unread message")) and \(count(mentions.count, "mention"))"
        }
        let esc = InviteEmail.escape
        var text = "", html = ""
        if !chat.isEmpty {
            // One chat: straight to it; several: the list of chats.
            let chats = Set(chat.compactMap(\.chatId))
            let link = settings.publicURL + "/chats" + (chats.count == 1 ? "/" + chats.first! : "")
            text += "You have unread messages on \(settings.productName):\n\n"
                + chat.map { "\(name($0.authorId)): \($0.text)" }.joined(separator: "\n")
                + "\n\nRead them at \(link)\n"
            html += """
                <p>You have unread messages on \(esc(settings.productName)):</p>
                <ul>\(chat.map { "<li><strong>\(esc(name($0.authorId)))</strong>: \(esc($0.text))</li>" }.joined())</ul>
                <p><a href="\(esc(link))">Read them</a></p>
                """
        }
        if !places.isEmpty {
            text += (text.isEmpty ? "" : "\n") + "You were mentioned on \(settings.productName):\n"
            html += "<p>You were mentioned on \(esc(settings.productName)):</p>"
            for p in places {
                let place = "\(p.group.name) / \(p.conversation.topic)", link = link(to: p.conversation, settings: settings)
                text += "\nIn \(place):\n" + p.messages.map { "\(name($0.authorId)): \($0.text)" }.joined(separator: "\n")
                    + "\nOpen it at \(link)\n"
                html += """
                    <p>In <a href="\(esc(link))"><strong>\(esc(p.group.name))</strong> / \(esc(p.conversation.topic))</a>:</p>
                    <ul>\(p.messages.map { "<li><strong>\(esc(name($0.authorId)))</strong>: \(esc($0.text))</li>" }.joined())</ul>
                    """
            }
        }
        html = """
            <!doctype html>
            <html><body style="font-family: sans-serif; line-height: 1.5">
            \(html)
            </body></html>
            """
        return RenderedMail(subject: subject, text: text, html: html)
    }
}
