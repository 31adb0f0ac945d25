import ServiceKit

/// A user as the API shows it. `email` is present only where the viewer may see it.
public struct User: Codable, Sendable, Equatable {
    public var id: String
    public var firstName: String
    public var lastName: String
    public var email: String?
    /// Whether the owner of `email` confirmed it (the link of the verification mail, or a
    /// password reset). Shown with the email, never without it.
    public var emailVerified: Bool?
    public var username: String?
    public var createdAt: Timestamp
}

public struct CreateRequest: Codable, Sendable {
    public var firstName: String
    public var lastName: String?
    public var email: String
    public var password: String
    public var username: String?
}

public struct SessionResponse: Codable, Sendable {
    public var user: User
    public var token: String
}

public struct LoginRequest: Codable, Sendable {
    public var email: String?
    public var username: String?
    public var password: String
}

public struct LogoutRequest: Codable, Sendable {
    public var id: String?
}

public struct ValidateRequest: Codable, Sendable {
    public var token: String
}

public struct UserResponse: Codable, Sendable {
    public var user: User
}

public struct ReadRequest: Codable, Sendable {
    public var ids: [String]
}

public struct UsersMap: Codable, Sendable {
    public var users: [String: User]
}

public struct ReadByEmailRequest: Codable, Sendable {
    public var emails: [String]
}

public struct UpdateRequest: Codable, Sendable {
    public var id: String?
    public var firstName: String?
    public var lastName: String?
    public var email: String?
    public var username: String?
    public var password: String?
    public var oldPassword: String?
}

public struct DeleteRequest: Codable, Sendable {
    public var id: String?
}

public struct ListRequest: Codable, Sendable {
    public var offset: Int?
    public var limit: Int?
}

public struct ListResponse: Codable, Sendable {
    public var users: [User]
}

public struct Session: Codable, Sendable, Equatable {
    public var id: String
    public var createdAt: Timestamp
    public var lastUsedAt: Timestamp
    public var expiresAt: Timestamp
    public var userAgent: String?
    public var current: Bool
}

public struct ListSessionsResponse: Codable, Sendable {
    public var sessions: [Session]
}

public struct RevokeSessionRequest: Codable, Sendable {
    public var id: String
}

public struct SendPasswordResetRequest: Codable, Sendable {
    public var email: String
}

public struct ResetPasswordRequest: Codable, Sendable {
    public var email: String
    public var code: String
    public var newPassword: String
}

public struct SendVerificationEmailRequest: Codable, Sendable {
    public var id: String?
}

public struct VerifyEmailRequest: Codable, Sendable {
    public var email: String
    public var code: String
}
