import ServiceKit
import Storage

// `user.created` and `user.updated` carry the User, `user.deleted` its id; all go to `user:<id>`.
public enum UserCreated: EventKind {
    public typealias Payload = User
    public static let name = "user.created"
}

public enum UserUpdated: EventKind {
    public typealias Payload = User
    public static let name = "user.updated"
}

public enum UserDeleted: EventKind {
    public typealias Payload = Removed
    public static let name = "user.deleted"
}

/// Someone asked for a password reset of an existing account (`users/SendPasswordReset`). A
/// workflow mails the code; the code itself is never in the log.
public struct PasswordResetRequested: DomainEvent {
    public static let name = "user.password_reset_requested"
    public var userId: String
    public var email: String
}

/// An address needs confirming: at sign-up, after an email change, or on request
/// (`users/SendVerificationEmail`).
public struct EmailVerificationRequested: DomainEvent {
    public static let name = "user.email_verification_requested"
    public var userId: String
    public var email: String
}

/// Sessions of a user ended (log out, revoked, a new password). The realtime feeds opened with
/// them close at once; the user's other connections see the event and may ignore it.
public struct SessionsEnded: DomainEvent {
    public static let name = "session.ended"
    public var userId: String
    public var sessionIds: [String]
    public var audience: String { "user:\(userId)" }
}

/// The codes that account mails carry (kept by the codes service). A code is bound to the account
/// and to the address it was mailed to, so it stops working once the account's email changes.
public enum AccountCode: Sendable {
    case passwordReset
    case emailVerification

    /// How long a mailed code works.
    public var lifetime: Double {
        switch self {
        case .passwordReset: return 3600
        case .emailVerification: return 24 * 3600
        }
    }

    public func identity(userID: String, email: String) -> String {
        let purpose = self == .passwordReset ? "password-reset" : "verify-email"
        return "\(purpose):\(userID):\(Secrets.sha256(email.lowercased()).prefix(24))"
    }
}

/// An event that asks for an account mail carrying a code.
public protocol AccountMailRequest: DomainEvent {
    static var code: AccountCode { get }
    var userId: String { get }
    var email: String { get }
}

extension PasswordResetRequested: AccountMailRequest {
    public static var code: AccountCode { .passwordReset }
}

extension EmailVerificationRequested: AccountMailRequest {
    public static var code: AccountCode { .emailVerification }
}
