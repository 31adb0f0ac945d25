import Foundation
import ServiceKit
import Storage
import Users

/// The groups service (API.md `groups/*`) with roles: owner, admins, members.
public struct GroupsService: ServiceDefinition, GroupsClient {
    public let name = "groups"
    let db: any Database
    let store: GroupStore
    let users: any UsersClient

    public static let migrations = GroupStore.migrations

    public init(db: any Database, users: any UsersClient) {
        self.db = db
        self.store = GroupStore(db: db)
        self.users = users
    }

    public var endpoints: [Endpoint] {
        [
            Endpoint(service: name, method: "Create", summary: "Create a group; the caller owns it.",
                     access: .signedIn, handler: create),
            Endpoint(service: name, method: "Read", summary: "Groups by id (only those the caller belongs to).",
                     access: .signedIn, handler: read),
            Endpoint(service: name, method: "Update", summary: "Rename or describe a group (admins).",
                     access: .signedIn, handler: update),
            Endpoint(service: name, method: "Delete", summary: "Delete a group (owner).",
                     access: .signedIn, handler: delete),
            Endpoint(service: name, method: "List", summary: "The groups a user belongs to.",
                     access: .signedIn, handler: list),
            Endpoint(service: name, method: "AddMember", summary: "Add a user to a group (admins).",
                     access: .signedIn, handler: addMember),
            Endpoint(service: name, method: "RemoveMember",
                     summary: "Remove a member (admins), or leave (any member, `member_id` omitted or self).",
                     access: .signedIn, handler: removeMember),
            Endpoint(service: name, method: "SetRole",
                     summary: "Make a member an admin or a member, or hand over ownership (owner).",
                     access: .signedIn, handler: setRole),
        ]
    }

    // MARK: Endpoints

    func create(_ req: CreateGroupRequest, _ ctx: CallContext) async throws -> GroupResponse {
        let owner = try ctx.caller.actingUser(req.ownerId, field: "owner_id")
        let name = try Validate.name(req.name, field: "name")
        let description = try Validate.name(req.description ?? "", field: "description", maxLength: 1000, required: false)
        if ctx.caller.isServiceKey, try await users.users(ids: [owner]).isEmpty {
            throw ServiceError.notFound("owner_id: user not found")
        }
        let id = Secrets.uuid()
        let now = Timestamp.now()
        let group = Group(id: id, name: name, memberIds: [owner], description: description, ownerId: owner,
                          adminIds: [owner], createdAt: now)
        try await db.write { tx in
            try await tx.query(
                "INSERT INTO chat_groups (id, name, description, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)",
                id, name, description, now)
            try await tx.query(
                "INSERT INTO group_members (group_id, user_id, role, joined_at) VALUES ($1, $2, $3, $4)",
                id, owner, Role.owner.rawValue, now)
            // The join first: it lets the owner's open feeds into the group's audience, so they
            // get the group's creation too.
            try await EventLog.append(tx, MemberJoined.event(MemberEvent(groupId: id, userId: owner, role: .owner), audience: "group:\(id)"))
            try await EventLog.append(tx, GroupCreated.event(group, audience: "group:\(id)"))
        }
        return GroupResponse(group: group)
    }

    func read(_ req: ReadGroupsRequest, _ ctx: CallContext) async throws -> GroupsMap {
        let ids = try Validate.ids(req.ids, field: "ids")
        var groups = try await store.groups(ids: ids)
        if let uid = ctx.caller.userID {
            // Groups the caller is not in are absent, exactly like groups that do not exist.
            groups = groups.filter { $0.memberIds.contains(uid) }
        }
        return GroupsMap(groups: groups.reduce(into: [:]) { $0[$1.id] = $1 })
    }

    func update(_ req: UpdateGroupRequest, _ ctx: CallContext) async throws -> GroupResponse {
        let id = try Validate.id(req.id, field: "id")
        let name = try req.name.map { try Validate.name($0, field: "name") }
        let description = try req.description.map {
            try Validate.name($0, field: "description", maxLength: 1000, required: false)
        }
        _ = try await require(.admin, in: id, caller: ctx.caller)
        let group = try await db.write { tx -> Group in
            try await tx.query(
                "UPDATE chat_groups SET name = COALESCE($2, name), description = COALESCE($3, description), updated_at = $4 WHERE id = $1",
                id, name, description, Timestamp.now())
            guard let group = try await Self.group(id, in: tx) else { throw ServiceError.notFound("group not found") }
            try await EventLog.append(tx, GroupUpdated.event(group, audience: "group:\(id)"))
            return group
        }
        return GroupResponse(group: group)
    }

    func delete(_ req: GroupIDRequest, _ ctx: CallContext) async throws -> Empty {
        let id = try Validate.id(req.id, field: "id")
        _ = try await require(.owner, in: id, caller: ctx.caller)
        try await db.write { tx in try await Self.deleteGroup(id, in: tx) }
        return Empty()
    }

    func list(_ req: ListGroupsRequest, _ ctx: CallContext) async throws -> GroupsList {
        let member = try ctx.caller.actingUser(req.memberId, field: "member_id")
        let groups = try await store.groups(ids: try await store.groupIDs(of: member))
        return GroupsList(groups: groups.sorted { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) })
    }

    func addMember(_ req: MemberRequest, _ ctx: CallContext) async throws -> Empty {
        let groupID = try Validate.id(req.groupId, field: "group_id")
        guard let memberID = req.memberId, !memberID.isEmpty else { throw ServiceError.invalidField("member_id", "is required") }
        _ = try Validate.id(memberID, field: "member_id")
        _ = try await require(.admin, in: groupID, caller: ctx.caller)
        guard try await !users.users(ids: [memberID]).isEmpty else { throw ServiceError.notFound("member_id: user not found") }
        _ = try await insertMember(groupID: groupID, userID: memberID)
        return Empty()
    }

    func removeMember(_ req: MemberRequest, _ ctx: CallContext) async throws -> Empty {
        let groupID = try Validate.id(req.groupId, field: "group_id")
        let target: String
        if let named = req.memberId, !named.isEmpty {
            target = try Validate.id(named, field: "member_id")
        } else {
            target = try ctx.caller.actingUser(nil, field: "member_id")
        }
        let leaving = target == ctx.caller.userID
        let callerRole = try await require(leaving ? .member : .admin, in: groupID, caller: ctx.caller)
        guard let targetRole = try await role(of: target, in: groupID) else {
            throw ServiceError.notFound("member_id: not a member of this group")
        }
        if targetRole == .owner {
            throw ServiceError.conflict("the owner must hand over ownership (groups/SetRole) before leaving")
        }
        if !leaving && targetRole == .admin && callerRole != .owner {
            throw ServiceError.forbidden("only the group's owner may remove an admin")
        }
        try await db.write { tx in
            let gone = try await tx.query(
                "DELETE FROM group_members WHERE group_id = $1 AND user_id = $2 RETURNING user_id", groupID, target)
            guard !gone.isEmpty else { return }
            try await EventLog.append(
                tx, MemberLeft.event(MemberEvent(groupId: groupID, userId: target, role: nil), audience: "group:\(groupID)"))
        }
        return Empty()
    }

    func setRole(_ req: SetRoleRequest, _ ctx: CallContext) async throws -> GroupResponse {
        let groupID = try Validate.id(req.groupId, field: "group_id")
        let target = try Validate.id(req.memberId, field: "member_id")
        _ = try await require(.owner, in: groupID, caller: ctx.caller)
        let group = try await db.write { tx -> Group in
            guard let current = try await tx.first(
                "SELECT role FROM group_members WHERE group_id = $1 AND user_id = $2", groupID, target)
            else { throw ServiceError.notFound("member_id: not a member of this group") }
            if try current.string("role") == Role.owner.rawValue && req.role != .owner {
                throw ServiceError.conflict("a group always has an owner: hand ownership to someone else instead")
            }
            // Rows first, events (and with them the appenders' lock) after: a member leaving at
            // the same moment holds their row and then appends, and the other order deadlocks.
            var demoted: [Row] = []
            if req.role == .owner {
                // One owner: the old one stays on as an admin, and everyone hears of it.
                demoted = try await tx.query(
                    "UPDATE group_members SET role = $2 WHERE group_id = $1 AND role = $3 AND user_id <> $4 RETURNING user_id",
                    groupID, Role.admin.rawValue, Role.owner.rawValue, target)
            }
            let changed = try await tx.query(
                "UPDATE group_members SET role = $3 WHERE group_id = $1 AND user_id = $2 RETURNING user_id",
                groupID, target, req.role.rawValue)
            // Left meanwhile: nothing changed (the demotion with it).
            guard !changed.isEmpty else { throw ServiceError.notFound("member_id: not a member of this group") }
            for row in demoted {
                let old = MemberEvent(groupId: groupID, userId: try row.string("user_id"), role: .admin)
                try await EventLog.append(tx, MemberRoleChanged.event(old, audience: "group:\(groupID)"))
            }
            guard let group = try await Self.group(groupID, in: tx) else { throw ServiceError.notFound("group not found") }
            try await EventLog.append(
                tx, MemberRoleChanged.event(MemberEvent(groupId: groupID, userId: target, role: req.role), audience: "group:\(groupID)"))
            return group
        }
        return GroupResponse(group: group)
    }

    // MARK: GroupsClient

    public func role(of userID: String, in groupID: String) async throws -> Role? {
        try await roles(of: userID, in: [groupID])[groupID]
    }

    public func roles(of userID: String, in groupIDs: [String]) async throws -> [String: Role] {
        try await store.roles(of: userID, in: groupIDs)
    }

    public func group(_ id: String) async throws -> Group? {
        try await store.groups(ids: [id]).first
    }

    public func groupIDs(of userID: String) async throws -> [String] {
        try await store.groupIDs(of: userID)
    }

    public func join(groupID: String, userID: String) async throws -> Bool {
        try await insertMember(groupID: groupID, userID: userID)
    }

    public func coMembers(of viewer: String, among others: [String]) async throws -> Set<String> {
        try await store.coMembers(of: viewer, among: others)
    }

    public func removeAccount(_ userID: String) async throws {
        for groupID in try await store.groupIDs(of: userID) {
            try await db.write { tx in
                let lock = tx.dialect == .postgres ? " FOR UPDATE" : ""
                guard let row = try await tx.first(
                    "SELECT role FROM group_members WHERE group_id = $1 AND user_id = $2\(lock)", groupID, userID)
                else { return }
                if try row.string("role") == Role.owner.rawValue {
                    // The longest-standing admin inherits the group, else the longest-standing member.
                    guard let heir = try await tx.first(
                        """
                        SELECT user_id FROM group_members WHERE group_id = $1 AND user_id <> $2
                        ORDER BY CASE role WHEN 'admin' THEN 0 ELSE 1 END, joined_at, user_id LIMIT 1
                        """, groupID, userID)?.string("user_id")
                    else {
                        // Nobody else: the group goes with its last member.
                        return try await Self.deleteGroup(groupID, in: tx)
                    }
                    // The heir left at this moment: nothing changed; the run's step is retried
                    // and picks another (the group must not be left without an owner).
                    guard try await !tx.query(
                        "UPDATE group_members SET role = $3 WHERE group_id = $1 AND user_id = $2 RETURNING user_id",
                        groupID, heir, Role.owner.rawValue).isEmpty
                    else { throw ServiceError.conflict("the heir left the group; try again") }
                    try await EventLog.append(
                        tx, MemberRoleChanged.event(MemberEvent(groupId: groupID, userId: heir, role: .owner), audience: "group:\(groupID)"))
                }
                try await tx.query("DELETE FROM group_members WHERE group_id = $1 AND user_id = $2", groupID, userID)
                try await EventLog.append(
                    tx, MemberLeft.event(MemberEvent(groupId: groupID, userId: userID, role: nil), audience: "group:\(groupID)"))
            }
        }
    }

    // MARK: Helpers

    func insertMember(groupID: String, userID: String) async throws -> Bool {
        try await db.write { tx in
            guard try await tx.first("SELECT id FROM chat_groups WHERE id = $1", groupID) != nil else {
                throw ServiceError.notFound("group not found")
            }
            let added = try await tx.query(
                """
                INSERT INTO group_members (group_id, user_id, role, joined_at) VALUES ($1, $2, $3, $4)
                ON CONFLICT (group_id, user_id) DO NOTHING RETURNING user_id
                """, groupID, userID, Role.member.rawValue, Timestamp.now())
            guard !added.isEmpty else { return false }
            try await EventLog.append(
                tx, MemberJoined.event(MemberEvent(groupId: groupID, userId: userID, role: .member), audience: "group:\(groupID)"))
            return true
        }
    }

    /// The group, its memberships, and the event that tells of it.
    static func deleteGroup(_ id: String, in tx: Transaction) async throws {
        try await tx.query("DELETE FROM group_members WHERE group_id = $1", id)
        try await tx.query("DELETE FROM chat_groups WHERE id = $1", id)
        try await EventLog.append(tx, GroupDeleted.event(Removed(id: id), audience: "group:\(id)"))
    }

    static func group(_ id: String, in tx: Transaction) async throws -> Group? {
        let groups = try await tx.query("SELECT id, name, description, created_at FROM chat_groups WHERE id = $1", id)
        let members = try await tx.query(
            "SELECT group_id, user_id, role FROM group_members WHERE group_id = $1 ORDER BY joined_at, user_id", id)
        return try GroupStore.assemble(groups, members).first
    }
}
