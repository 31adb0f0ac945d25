/// Who is calling. API.md defines two kinds of authenticated caller.
public enum Caller: Sendable, Equatable {
    case anonymous
    /// A signed-in user: `sessionID` identifies the session (for logout of this device).
    case user(id: String, sessionID: String, isAdmin: Bool)
    /// A trusted backend that may act for any user.
    case serviceKey(name: String)

    public var userID: String? {
        if case .user(let id, _, _) = self { return id }
        return nil
    }

    public var sessionID: String? {
        if case .user(_, let session, _) = self { return session }
        return nil
    }

    public var isServiceKey: Bool {
        if case .serviceKey = self { return true }
        return false
    }

    /// Service keys and users with the admin role.
    public var isAdministrator: Bool {
        switch self {
        case .serviceKey: return true
        case .user(_, _, let admin): return admin
        case .anonymous: return false
        }
    }

    /// Resolves the acting user for self-service fields (`user_id`, `author_id`, ...): a user
    /// session may omit it or name itself; a service key must name someone.
    public func actingUser(_ named: String?, field: String) throws -> String {
        switch self {
        case .anonymous:
            throw ServiceError.unauthorized()
        case .user(let id, _, _):
            if let named, !named.isEmpty, named != id {
                throw ServiceError.forbidden("\(field): a user session may only act for itself")
            }
            return id
        case .serviceKey:
            guard let named, !named.isEmpty else {
                throw ServiceError.invalidField(field, "is required for a service key")
            }
            return named
        }
    }
}

/// Resolves a bearer token (session token or service key) to a caller.
public protocol Authenticator: Sendable {
    /// nil when the token is unknown, expired or revoked.
    func authenticate(token: String) async throws -> Caller?
}
