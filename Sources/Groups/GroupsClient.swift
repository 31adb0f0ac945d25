import ServiceKit

/// What other services may ask of the groups service. In one process it is the service itself;
/// the same calls can go over HTTP when services run apart.
public protocol GroupsClient: Sendable {
    /// The user's role in the group, nil when not a member (or no such group).
    func role(of userID: String, in groupID: String) async throws -> Role?
    /// Roles of a user in many groups at once (absent = not a member).
    func roles(of userID: String, in groupIDs: [String]) async throws -> [String: Role]
    func group(_ id: String) async throws -> Group?
    func groupIDs(of userID: String) async throws -> [String]
    /// Adds a user as a member on another service's authority (an accepted invite).
    /// Returns false when they already were a member.
    func join(groupID: String, userID: String) async throws -> Bool
    /// Which of `others` share at least one group with `viewer`.
    func coMembers(of viewer: String, among others: [String]) async throws -> Set<String>
    /// Takes a deleted account out of every group (`user.deleted`): an owner's group passes to
    /// its longest-standing admin, else member; a group left with nobody is deleted. Safe to
    /// repeat: a retry finds less to do.
    func removeAccount(_ userID: String) async throws
}

extension GroupsClient {
    /// The caller's role in a group, for authorization. Non-members get 404, the same answer as
    /// for a group that does not exist: a stranger cannot learn that a group exists.
    /// Service keys act with the owner's rights.
    public func require(_ minimum: Role, in groupID: String, caller: Caller) async throws -> Role {
        switch caller {
        case .anonymous:
            throw ServiceError.unauthorized()
        case .serviceKey:
            guard try await group(groupID) != nil else { throw ServiceError.notFound("group not found") }
            return .owner
        case .user(let id, _, _):
            guard let role = try await role(of: id, in: groupID) else { throw ServiceError.notFound("group not found") }
            guard role >= minimum else {
                throw ServiceError.forbidden(minimum == .owner ? "only the group's owner may do this" : "only group admins may do this")
            }
            return role
        }
    }
}
