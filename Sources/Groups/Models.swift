import ServiceKit
import Storage

/// A member's standing in a group: members talk, admins manage members and invites, the one
/// owner also deletes the group and changes roles.
public enum Role: String, Codable, Sendable, SchemaEnumeration, Comparable {
    case member
    case admin
    case owner

    var rank: Int {
        switch self {
        case .member: return 0
        case .admin: return 1
        case .owner: return 2
        }
    }

    public static func < (a: Role, b: Role) -> Bool { a.rank < b.rank }
}

public struct Group: Codable, Sendable, Equatable {
    public var id: String
    public var name: String
    public var memberIds: [String]
    public var description: String
    public var ownerId: String
    public var adminIds: [String]
    public var createdAt: Timestamp
}

public struct CreateGroupRequest: Codable, Sendable {
    public var name: String
    public var description: String?
    /// For service keys: who owns the new group. A user session owns what it creates.
    public var ownerId: String?
}

public struct GroupResponse: Codable, Sendable {
    public var group: Group
    public init(group: Group) { self.group = group }
}

public struct ReadGroupsRequest: Codable, Sendable {
    public var ids: [String]
}

public struct GroupsMap: Codable, Sendable {
    public var groups: [String: Group]
}

public struct UpdateGroupRequest: Codable, Sendable {
    public var id: String
    public var name: String?
    public var description: String?
}

public struct GroupIDRequest: Codable, Sendable {
    public var id: String
}

public struct ListGroupsRequest: Codable, Sendable {
    public var memberId: String?
}

public struct GroupsList: Codable, Sendable {
    public var groups: [Group]
}

public struct MemberRequest: Codable, Sendable {
    public var groupId: String
    public var memberId: String?
}

public struct SetRoleRequest: Codable, Sendable {
    public var groupId: String
    public var memberId: String
    public var role: Role
}

/// The body of `member.*` events.
public struct MemberEvent: Codable, Sendable {
    public var groupId: String
    public var userId: String
    public var role: Role?
}

// The groups service's events, all to `group:<id>`: the Group when made or changed, its id when
// deleted, a MemberEvent when someone joins, leaves or changes role.
public enum GroupCreated: EventKind {
    public typealias Payload = Group
    public static let name = "group.created"
}

public enum GroupUpdated: EventKind {
    public typealias Payload = Group
    public static let name = "group.updated"
}

public enum GroupDeleted: EventKind {
    public typealias Payload = Removed
    public static let name = "group.deleted"
}

public enum MemberJoined: EventKind {
    public typealias Payload = MemberEvent
    public static let name = "member.joined"
}

public enum MemberLeft: EventKind {
    public typealias Payload = MemberEvent
    public static let name = "member.left"
}

public enum MemberRoleChanged: EventKind {
    public typealias Payload = MemberEvent
    public static let name = "member.role_changed"
}
