import Chats
import Foundation
import Groups
import Messaging
import Seen
import ServiceKit
import Storage
import Threads
import Users

/// `GET /api/groups/{id}`: everything the group page shows, in one round trip (Falcor's idea).
/// The shape is the one the Distributed app's page consumed, extended with the caller's role and
/// the event-log cursor to subscribe from.
public struct GroupPage: Codable, Sendable {
    public var id: String
    public var name: String
    public var description: String
    public var role: Role
    /// Subscribe to `/v1/events?since=<cursor>`: everything after the page was read.
    public var cursor: Int64
    public var members: [Member]?
    public var threads: [Thread]?

    public struct Member: Codable, Sendable {
        public var id: String
        public var firstName: String
        public var lastName: String
        public var email: String?
        public var username: String?
        public var role: Role
        public var currentUser: Bool
        /// The private chat with this member, when one exists.
        public var chat: ChatSummary?
    }

    public struct ChatSummary: Codable, Sendable {
        public var id: String
        public var lastSeen: Timestamp?
        public var unread: Int
        public var messages: [Message]
    }

    public struct Thread: Codable, Sendable {
        public var id: String
        public var topic: String
        public var lastSeen: Timestamp?
        public var unread: Int
        public var messages: [Message]
    }
}

/// Gathers a group page with a fixed number of batched service calls, whatever the member count,
/// issued concurrently through the services' clients. No SQL crosses a service's tables.
public struct GroupPageBuilder: Sendable {
    public enum Part: String, Sendable, CaseIterable {
        case members
        case threads
    }

    let db: any Database
    let users: any UsersClient
    let groups: any GroupsClient
    let threads: any ThreadsClient
    let chats: any ChatsClient
    let seen: any SeenClient
    public static let messagesPerItem = 25

    public init(db: any Database, users: any UsersClient, groups: any GroupsClient, threads: any ThreadsClient,
                chats: any ChatsClient, seen: any SeenClient) {
        self.db = db
        self.users = users
        self.groups = groups
        self.threads = threads
        self.chats = chats
        self.seen = seen
    }

    /// Parses `?fields=members,threads` (absent: everything).
    public static func parts(_ fields: String?) throws -> Set<Part> {
        guard let fields, !fields.isEmpty else { return Set(Part.allCases) }
        var parts = Set<Part>()
        for f in fields.split(separator: ",") {
            guard let p = Part(rawValue: f.trimmingCharacters(in: .whitespaces)) else {
                throw ServiceError.invalidField("fields", "must list members and/or threads")
            }
            parts.insert(p)
        }
        return parts
    }

    public func page(groupID: String, caller: Caller, parts: Set<Part>) async throws -> GroupPage {
        guard case .user(let me, _, _) = caller else {
            throw ServiceError.forbidden("pages are for user sessions")
        }
        // The cursor is taken first: anything that changes while the page is gathered comes
        // again through the event feed (clients drop what they have by id), never goes missing.
        let cursor = try await EventLog.head(db)
        guard let group = try await groups.group(groupID), group.memberIds.contains(me) else {
            throw ServiceError.notFound("group not found")
        }
        let role: (String) -> Role = { id in
            id == group.ownerId ? .owner : group.adminIds.contains(id) ? .admin : .member
        }
        var page = GroupPage(id: group.id, name: group.name, description: group.description, role: role(me),
                             cursor: cursor, members: nil, threads: nil)

        // Round 1: who, which conversations, which chats.
        async let profilesCall = parts.contains(.members) ? users.users(ids: group.memberIds) : [:]
        async let directCall = parts.contains(.members) ? chats.directChats(of: me, with: group.memberIds) : [:]
        async let conversationsCall = parts.contains(.threads) ? threads.conversations(inGroup: group.id) : []
        let (profiles, direct, conversations) = try await (profilesCall, directCall, conversationsCall)
        let conversationIDs = conversations.map(\.id)
        let chatIDs = direct.values.map(\.id)

        // Round 2: messages and read marks, all at once.
        async let threadMessagesCall = threads.recentMessages(conversationIDs, limit: Self.messagesPerItem)
        async let chatMessagesCall = chats.recentMessages(chatIDs, limit: Self.messagesPerItem)
        async let threadSeenCall = seen.lastSeen(user: me, type: .thread, ids: conversationIDs)
        async let chatSeenCall = seen.lastSeen(user: me, type: .chat, ids: chatIDs)
        let (threadMessages, chatMessages, threadSeen, chatSeen) =
            try await (threadMessagesCall, chatMessagesCall, threadSeenCall, chatSeenCall)

        // Round 3: unread counts from those marks.
        async let threadUnreadCall = threads.unreadCounts(
            for: me, since: Dictionary(uniqueKeysWithValues: conversationIDs.map { ($0, threadSeen[$0]) }))
        async let chatUnreadCall = chats.unreadCounts(
            for: me, since: Dictionary(uniqueKeysWithValues: chatIDs.map { ($0, chatSeen[$0]) }))
        let (threadUnread, chatUnread) = try await (threadUnreadCall, chatUnreadCall)

        if parts.contains(.members) {
            page.members = group.memberIds.compactMap { id in
                guard let u = profiles[id] else { return nil }
                let chat = direct[id].map {
                    GroupPage.ChatSummary(id: $0.id, lastSeen: chatSeen[$0.id], unread: chatUnread[$0.id] ?? 0,
                                          messages: chatMessages[$0.id] ?? [])
                }
                // Members share a group with the caller, so their addresses are visible.
                return GroupPage.Member(id: id, firstName: u.firstName, lastName: u.lastName, email: u.email,
                                        username: u.username, role: role(id), currentUser: id == me, chat: chat)
            }
        }
        if parts.contains(.threads) {
            page.threads = conversations.map { c in
                GroupPage.Thread(id: c.id, topic: c.topic, lastSeen: threadSeen[c.id], unread: threadUnread[c.id] ?? 0,
                                 messages: threadMessages[c.id] ?? [])
            }
        }
        return page
    }
}
