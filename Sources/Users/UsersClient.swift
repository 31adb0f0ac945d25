import ServiceKit

/// What other services may ask of the users service (in one process: the service itself).
public protocol UsersClient: Sendable {
    /// Users by id, with their email addresses: callers decide what to show.
    func users(ids: [String]) async throws -> [String: User]
    /// Users by username (matched case-insensitively), keyed by the lowercased username.
    func users(usernames: [String]) async throws -> [String: User]
}

extension UsersService: UsersClient {
    public func users(ids: [String]) async throws -> [String: User] {
        try await store.users(ids: ids).reduce(into: [:]) { $0[$1.id] = $1 }
    }

    public func users(usernames: [String]) async throws -> [String: User] {
        try await store.users(usernames: usernames).reduce(into: [:]) { users, user in
            if let name = user.username?.lowercased() { users[name] = user }
        }
    }
}
