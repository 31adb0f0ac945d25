import Chats
import Foundation
import Mail
import Messaging
import Seen
import ServiceKit
import Storage
import Users
import Workflows

/// One recipient's unread chat message: the fan-out's event, one per recipient.
public struct UnreadChatMessage: DomainEvent {
    public static let name = "digest.unread_chat_message"
    public var userId: String
    public var chatId: String
    public var messageId: String
    public var sentAt: Timestamp
}

/// Unread digest: a chat message not read within `delay` is mailed to its recipient, in one digest
/// of everything they have not read. A burst of messages gives one mail: the runs of one user take
/// turns (concurrency 1 per user) and a run whose message an earlier digest covered sends nothing.
public enum UnreadDigest {
    public static let migrations = [
        Migration(service: "emails", version: 1, [
            "CREATE TABLE email_digests (user_id TEXT PRIMARY KEY, sent_at BIGINT NOT NULL)"
        ])
    ]

    public static func functions(
        db: any Database, mailer: Mailer, chats: any ChatsClient, seen: any SeenClient, users: any UsersClient,
        settings: EmailSettings, delay: Duration
    ) -> [WorkflowFunction] {
        let fanOut = WorkflowFunction(
            "unread-fanout", on: MessageCreated.self, filter: { $0.message.chatId != nil && $0.message.deleted != true }
        ) { event, step in
            let m = event.message
            guard let chatID = m.chatId else { return }
            let recipients = try await step.run("recipients") { () -> [String] in
                (try await chats.chats(ids: [chatID])[chatID]?.userIds ?? []).filter { $0 != m.authorId }.sorted()
            }
            for r in recipients {
                try await step.sendEvent("notify", UnreadChatMessage(userId: r, chatId: chatID, messageId: m.id, sentAt: m.sentAt))
            }
        }
        let digest = WorkflowFunction(
            "unread-digest", on: UnreadChatMessage.self, retries: 8,
            backoff: Backoff(base: .seconds(5), max: .seconds(600)),
            concurrency: Concurrency(limit: 1) { $0.userId }
        ) { unread, step in
            let seenIt = try await step.waitForEvent(
                "seen", SeenUpdated.self, match: ["user_id": unread.userId, "resource_id": unread.chatId], timeout: delay)
            if seenIt != nil { return }
            let mail = try await step.run("collect") { () -> RenderedMail? in
                let last = try await db.read { conn in
                    try await conn.first("SELECT sent_at FROM email_digests WHERE user_id = $1", unread.userId)?.timestamp("sent_at")
                }
                if let last, last >= unread.sentAt { return nil }
                return try await render(user: unread.userId, after: last, chats: chats, seen: seen, users: users, settings: settings)
            }
            guard let mail else { return }
            let to = try await step.run("address") { () -> String? in try await users.users(ids: [unread.userId])[unread.userId]?.email }
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
        return [fanOut, digest]
    }

    /// The user's unread chat messages (newer than their read mark and the last digest), or nil.
    static func render(user: String, after last: Timestamp?, chats: any ChatsClient, seen: any SeenClient,
                       users: any UsersClient, settings: EmailSettings) async throws -> RenderedMail? {
        let ids = try await chats.chatIDs(of: user)
        let marks = try await seen.lastSeen(user: user, type: .chat, ids: ids)
        var unread: [Message] = []
        for (chat, messages) in try await chats.recentMessages(ids, limit: 20) {
            let after = [marks[chat], last].compactMap { $0 }.max()
            unread += messages.filter { message in
                message.authorId != user && message.deleted != true && after.map { message.sentAt > $0 } ?? true
            }
        }
        guard !unread.isEmpty else { return nil }
        unread.sort { $0.sentAt < $1.sentAt }
        let authors = try await users.users(ids: Array(Set(unread.map(\.authorId))))
        func name(_ id: String) -> String {
            authors[id].map { [$0.firstName, $0.lastName].filter { !$0.isEmpty }.joined(separator: " ") } ?? "Someone"
        }
        let link = settings.publicURL + "/chats"
        let subject = unread.count == 1 ? "1 unread message from \(name(unread[0].authorId))" : "\(unread.count) unread messages"
        let lines = unread.map { "\(name($0.authorId)): \($0.text)" }
        let text = "You have unread messages on \(settings.productName):\n\n" + lines.joined(separator: "\n")
            + "\n\nRead them at \(link)\n"
        let items = unread.map { "<li><strong>\(InviteEmail.escape(name($0.authorId)))</strong>: \(InviteEmail.escape($0.text))</li>" }
        let html = """
            <!doctype html>
            <html><body style="font-family: sans-serif; line-height: 1.5">
            <p>You have unread messages on \(InviteEmail.escape(settings.productName)):</p>
            <ul>\(items.joined())</ul>
            <p><a href="\(InviteEmail.escape(link))">Read them</a></p>
            </body></html>
            """
        return RenderedMail(subject: subject, text: text, html: html)
    }
}
