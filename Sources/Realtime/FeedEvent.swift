import Chats
import Foundation
import Groups
import NIOConcurrencyHelpers
import NIOCore
import ServiceKit
import Storage

/// A committed event ready to send: its frame encoded once for everyone who may see it. A class:
/// the push loop handles each event once per connection, and one reference is cheaper to pass
/// around than the six a struct of these fields holds.
public final class FeedEvent: Sendable {
    public let seq: Int64
    public let type: String
    public let audience: String
    /// `{"type":"event","cursor":…,"event":…,"data":…}` as bytes shared by every connection.
    public let frame: ByteBuffer
    /// The same frame as WebSocket wire bytes, for connections the bus writes to directly.
    let wire: ByteBuffer
    /// How the event changes who may see what.
    public let change: MembershipChange?
    /// For `stream.message`: the topic and the frame the M3O Subscribe protocol sends.
    public let stream: (topic: String, frame: ByteBuffer)?
    /// About what the event holds in memory: its three encodings.
    let bytes: Int

    init(_ e: Event, names: AudienceNames) {
        seq = e.seq
        type = e.type
        audience = names.shared(e.audience)
        frame = ByteBuffer(string: #"{"type":"event","cursor":\#(e.seq),"event":"\#(e.type)","data":\#(e.payload)}"#)
        wire = WireFrame.text(frame)
        change = MembershipChange(e)
        if e.type == StreamMessage.name, let m = try? JSON.decoder().decode(StreamMessage.self, from: Data(e.payload.utf8)) {
            let body = (try? JSON.encode(m)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
            stream = (m.topic, ByteBuffer(string: body))
        } else {
            stream = nil
        }
        bytes = frame.readableBytes + wire.readableBytes + (stream?.frame.readableBytes ?? 0) + 128
    }
}

/// The body of a `stream.message` event and the frame `streams/Subscribe` sends; the event goes
/// to `topic:<topic>`.
public struct StreamMessage: DomainEvent {
    public static let name = "stream.message"
    public var topic: String
    public var message: String
    public var sentAt: Timestamp
    public var audience: String { "topic:\(topic)" }
}

/// Events that change which audiences a user belongs to.
public enum MembershipChange: Sendable, Equatable {
    case joined(group: String, user: String, role: Role)
    case left(group: String, user: String)
    case roleChanged(group: String, user: String, role: Role)
    case groupDeleted(group: String)
    case chatCreated(chat: String, users: [String])
    case userDeleted(user: String)
    case sessionsEnded(user: String, sessions: [String])

    /// Whether this event ends a feed of `user` opened with `session`: the account or that session is gone.
    func ends(user: String, session: String?) -> Bool {
        switch self {
        case .userDeleted(let u): return u == user
        case .sessionsEnded(let u, let ended): return u == user && session.map(ended.contains) == true
        default: return false
        }
    }

    /// Whether this event adds audiences to `user`: what a filtered replay read after it was
    /// filtered by too few.
    func widens(user: String) -> Bool {
        switch self {
        case .joined(_, let u, _): return u == user
        case .roleChanged(_, let u, let role): return u == user && role >= .admin
        case .chatCreated(_, let users): return users.contains(user)
        default: return false
        }
    }

    /// Whether this event takes topics under `root` from `user` (see `StreamsService`): their
    /// group's, when they leave it or it is deleted.
    func revokes(topicRoot root: String, of user: String) -> Bool {
        switch self {
        case .left(let g, let u): return g == root && u == user
        case .groupDeleted(let g): return g == root
        default: return false
        }
    }

    init?(_ e: Event) {
        let data = Data(e.payload.utf8)
        switch e.type {
        case MemberJoined.name, MemberLeft.name, MemberRoleChanged.name:
            guard let m = try? JSON.decoder().decode(MemberEvent.self, from: data) else { return nil }
            switch e.type {
            case MemberJoined.name: self = .joined(group: m.groupId, user: m.userId, role: m.role ?? .member)
            case MemberLeft.name: self = .left(group: m.groupId, user: m.userId)
            default: self = .roleChanged(group: m.groupId, user: m.userId, role: m.role ?? .member)
            }
        case GroupDeleted.name:
            guard let g = try? JSON.decoder().decode(Removed.self, from: data) else { return nil }
            self = .groupDeleted(group: g.id)
        case ChatCreated.name:
            guard let c = try? JSON.decoder().decode(Chat.self, from: data) else { return nil }
            self = .chatCreated(chat: c.id, users: c.userIds)
        case "user.deleted":
            struct U: Decodable { var id: String }
            guard let u = try? JSON.decoder().decode(U.self, from: data) else { return nil }
            self = .userDeleted(user: u.id)
        case "session.ended":
            struct S: Decodable { var userId: String; var sessionIds: [String] }
            guard let s = try? JSON.decoder().decode(S.self, from: data) else { return nil }
            self = .sessionsEnded(user: s.userId, sessions: s.sessionIds)
        default:
            return nil
        }
    }
}

/// One copy of each recent audience name: events to the same audience then carry the same
/// string, which `Audiences.admit` recognises without reading its bytes.
final class AudienceNames: Sendable {
    private let names = NIOLockedValueBox<Set<String>>([])
    /// Names kept at most; past it the set starts again (a name then gets a second copy, which
    /// costs a connection one full lookup, never a wrong answer).
    static let limit = 4096

    func shared(_ name: String) -> String {
        names.withLockedValue { names in
            if let kept = names.firstIndex(of: name) { return names[kept] }
            if names.count >= Self.limit { names.removeAll(keepingCapacity: true) }
            names.insert(name)
            return name
        }
    }
}

/// The audiences one connection's user belongs to, kept current as membership events pass.
struct Audiences: Sendable {
    let user: String
    private(set) var names: Set<String> {
        didSet { last = nil }
    }
    /// The audience `admit` last looked up and whether it is one of `names`. Consecutive events
    /// mostly go to one audience, and the bus gives them one shared string: a repeat is then a
    /// comparison of the strings' references, where the set lookup would hash the name and read
    /// the set's memory, which the fan-out of the previous message has long pushed out of the
    /// processor's cache (that lookup was most of the push loop's own time, in `perf`).
    private var last: (audience: String, admitted: Bool)?

    init(user: String, groups: [String: Role], chats: [String]) {
        self.user = user
        var names: Set<String> = ["user:\(user)"]
        for (g, role) in groups {
            names.insert("group:\(g)")
            if role >= .admin { names.insert("group-admins:\(g)") }
        }
        for c in chats { names.insert("chat:\(c)") }
        self.names = names
    }

    func contains(_ audience: String) -> Bool { names.contains(audience) }

    /// Whether `event` goes to this user, applying the membership change it carries: a joiner
    /// sees their own join, a leaver their own leaving.
    mutating func admit(_ event: FeedEvent) -> Bool {
        guard let change = event.change else {
            // `==` on two references to one string's storage answers without reading it.
            if let last, last.audience == event.audience { return last.admitted }
            let admitted = contains(event.audience)
            last = (event.audience, admitted)
            return admitted
        }
        before(change)
        defer { after(change) }
        return contains(event.audience)
    }

    /// Applies what must hold *before* the event is delivered (a joiner sees their own join).
    mutating func before(_ change: MembershipChange) {
        switch change {
        case .joined(let g, let u, let role) where u == user:
            names.insert("group:\(g)")
            if role >= .admin { names.insert("group-admins:\(g)") }
        case .roleChanged(let g, let u, let role) where u == user:
            if role >= .admin { names.insert("group-admins:\(g)") } else { names.remove("group-admins:\(g)") }
        case .chatCreated(let c, let users) where users.contains(user):
            names.insert("chat:\(c)")
        default:
            break
        }
    }

    /// Applies what must hold *after* the event is delivered (a leaver sees their own leaving).
    mutating func after(_ change: MembershipChange) {
        switch change {
        case .left(let g, let u) where u == user:
            names.remove("group:\(g)")
            names.remove("group-admins:\(g)")
        case .groupDeleted(let g):
            names.remove("group:\(g)")
            names.remove("group-admins:\(g)")
        default:
            break
        }
    }
}
