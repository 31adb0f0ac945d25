import Codes
import Foundation
import ServiceKit
import Storage

/// The users service: accounts, sessions and service keys (API.md `users/*`).
public struct UsersService: ServiceDefinition {
    public struct Configuration: Sendable {
        public var sessionLifetime: Double = 30 * 24 * 3600
        public var signupPerAddress = RateLimiter.Rule(burst: 10, refillSeconds: 360)
        public var loginPerAddress = RateLimiter.Rule(burst: 30, refillSeconds: 10)
        public var loginPerAccount = RateLimiter.Rule(burst: 10, refillSeconds: 60)
        /// Reset and verification mails: a few per address, and one every few minutes per
        /// account, so nobody can flood someone's inbox or keep renewing guesses at a code.
        public var accountMailPerAddress = RateLimiter.Rule(burst: 10, refillSeconds: 360)
        public var accountMailPerAccount = RateLimiter.Rule(burst: 3, refillSeconds: 300)
        /// Code guesses (`ResetPassword`, `VerifyEmail`); a code also dies after five wrong ones.
        public var codeGuessesPerAddress = RateLimiter.Rule(burst: 20, refillSeconds: 30)
        public init() {}
    }

    /// Which other users' email addresses a user may see (co-members of a group, once groups
    /// exist). The default shows a user only their own.
    public typealias EmailVisibility = @Sendable (_ viewer: String, _ others: [String]) async throws -> Set<String>

    public let name = "users"
    let db: any Database
    let hasher: PasswordHasher
    let config: Configuration
    let store: UserStore
    let emailVisibility: EmailVisibility
    let signupLimiter: RateLimiter
    let loginAddressLimiter: RateLimiter
    let loginAccountLimiter: RateLimiter
    let mailAddressLimiter: RateLimiter
    let mailAccountLimiter: RateLimiter
    let codeGuessLimiter: RateLimiter
    let codes: any CodesClient

    public static let migrations = UserStore.migrations

    public init(
        db: any Database, hasher: PasswordHasher, config: Configuration = .init(), codes: (any CodesClient)? = nil,
        emailVisibility: @escaping EmailVisibility = { _, _ in [] }
    ) {
        self.codes = codes ?? CodesService(db: db)
        self.db = db
        self.hasher = hasher
        self.config = config
        self.store = UserStore(db: db)
        self.emailVisibility = emailVisibility
        self.signupLimiter = RateLimiter(config.signupPerAddress)
        self.loginAddressLimiter = RateLimiter(config.loginPerAddress)
        self.loginAccountLimiter = RateLimiter(config.loginPerAccount)
        self.mailAddressLimiter = RateLimiter(config.accountMailPerAddress)
        self.mailAccountLimiter = RateLimiter(config.accountMailPerAccount)
        self.codeGuessLimiter = RateLimiter(config.codeGuessesPerAddress)
    }

    public var authenticator: any Authenticator { SessionAuthenticator(store: store) }

    public var endpoints: [Endpoint] {
        [
            Endpoint(service: name, method: "Create", summary: "Sign up: create an account and a session.",
                     access: .anyone, handler: create),
            Endpoint(service: name, method: "Login", summary: "Start a session with email (or username) and password.",
                     access: .anyone, handler: login),
            Endpoint(service: name, method: "Logout",
                     summary: "End the calling session, or with `id` every session of that user.",
                     access: .signedIn, handler: logout),
            Endpoint(service: name, method: "Validate", summary: "Check a session token and extend it.",
                     access: .anyone, handler: validate),
            Endpoint(service: name, method: "Read", summary: "Users by id.", access: .signedIn, handler: read),
            Endpoint(service: name, method: "ReadByEmail", summary: "Users by email address.",
                     access: .signedIn, handler: readByEmail),
            Endpoint(service: name, method: "Update", summary: "Change names, email, username or password.",
                     access: .signedIn, handler: update),
            Endpoint(service: name, method: "Delete", summary: "Delete an account and end its sessions.",
                     access: .signedIn, handler: delete),
            Endpoint(service: name, method: "List", summary: "All users (service keys and admins).",
                     access: .administrator, handler: list),
            Endpoint(service: name, method: "ListSessions", summary: "The caller's sessions (devices).",
                     access: .signedIn, request: Empty.self, handler: listSessions),
            Endpoint(service: name, method: "RevokeSession", summary: "End one of the caller's sessions.",
                     access: .signedIn, handler: revokeSession),
            Endpoint(service: name, method: "SendPasswordReset",
                     summary: "Mail a reset code to the account with this email; always {} so nobody learns who has an account.",
                     access: .anyone, handler: sendPasswordReset),
            Endpoint(service: name, method: "ResetPassword",
                     summary: "Set a new password with the mailed code; ends every session of the account.",
                     access: .anyone, handler: resetPassword),
            Endpoint(service: name, method: "SendVerificationEmail",
                     summary: "Mail a new verification link for the account's email (409 when it is verified).",
                     access: .signedIn, handler: sendVerificationEmail),
            Endpoint(service: name, method: "VerifyEmail",
                     summary: "Confirm an email address with the code from the verification mail.",
                     access: .anyone, handler: verifyEmail),
        ]
    }

    // MARK: Handlers

    func create(_ req: CreateRequest, _ ctx: CallContext) async throws -> SessionResponse {
        let first = try Validate.name(req.firstName, field: "first_name")
        let last = try Validate.name(req.lastName ?? "", field: "last_name", required: false)
        let email = try Validate.email(req.email)
        let username = try req.username.map(Self.validUsername)
        try Self.validPassword(req.password, field: "password")
        if !ctx.caller.isServiceKey {
            try await signupLimiter.take("addr:" + ctx.clientAddress)
            try await signupLimiter.take("acct:" + email.lowercased())
        }
        let hash = try await hasher.hash(req.password)
        let user = try await store.create(
            firstName: first, lastName: last, email: email, username: username, passwordHash: hash)
        let token = try await startSession(user.id, passwordHash: hash, ctx)
        return SessionResponse(user: user, token: token)
    }

    func login(_ req: LoginRequest, _ ctx: CallContext) async throws -> SessionResponse {
        let account: String
        let found: UserStore.Credentials?
        if let email = req.email, !email.isEmpty {
            account = email.trimmingCharacters(in: .whitespaces).lowercased()
            try await loginAddressLimiter.take("addr:" + ctx.clientAddress)
            try await loginAccountLimiter.take("acct:" + account)
            found = try await store.credentials(email: account)
        } else if let username = req.username, !username.isEmpty {
            account = username.lowercased()
            try await loginAddressLimiter.take("addr:" + ctx.clientAddress)
            try await loginAccountLimiter.take("acct:" + account)
            found = try await store.credentials(username: account)
        } else {
            throw ServiceError.invalidField("email", "is required (or username)")
        }
        guard try await hasher.verify(req.password, hash: found?.passwordHash), let found else {
            throw Self.invalidCredentials
        }
        await loginAccountLimiter.reset("acct:" + account)
        let token = try await startSession(found.user.id, passwordHash: found.passwordHash, ctx)
        return SessionResponse(user: found.user, token: token)
    }

    func logout(_ req: LogoutRequest, _ ctx: CallContext) async throws -> Empty {
        if let id = req.id, !id.isEmpty {
            let target = try ctx.caller.actingUser(id, field: "id")
            try await store.endSessions(userID: target)
            if target == ctx.caller.userID { ctx.effects.sessionCookie = .clear }
            return Empty()
        }
        guard case .user(_, let sessionID, _) = ctx.caller else {
            throw ServiceError.invalidField("id", "is required for a service key")
        }
        _ = try await store.endSession(id: sessionID, userID: ctx.caller.userID ?? "")
        ctx.effects.sessionCookie = .clear
        return Empty()
    }

    func validate(_ req: ValidateRequest, _ ctx: CallContext) async throws -> UserResponse {
        guard !req.token.isEmpty, let user = try await store.validate(
            tokenHash: Secrets.sha256(req.token), extendTo: Timestamp.now().adding(seconds: config.sessionLifetime))
        else { throw ServiceError.unauthorized("invalid or expired session") }
        return UserResponse(user: user)
    }

    func read(_ req: ReadRequest, _ ctx: CallContext) async throws -> UsersMap {
        let ids = try Validate.ids(req.ids, field: "ids")
        let users = try await store.users(ids: ids)
        return UsersMap(users: try await visible(users, to: ctx.caller).reduce(into: [:]) { $0[$1.id] = $1 })
    }

    func readByEmail(_ req: ReadByEmailRequest, _ ctx: CallContext) async throws -> UsersMap {
        guard req.emails.count <= 1000 else { throw ServiceError.invalidField("emails", "must have at most 1000 entries") }
        let wanted = req.emails.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        let users = try await visible(try await store.users(emails: wanted), to: ctx.caller)
        // A user session learns only about accounts whose email it may see: anything else would
        // let a stranger test which addresses are registered.
        var byEmail: [String: User] = [:]
        for user in users {
            guard let email = user.email?.lowercased() else { continue }
            for (i, w) in wanted.enumerated() where w == email { byEmail[req.emails[i]] = user }
        }
        return UsersMap(users: byEmail)
    }

    func update(_ req: UpdateRequest, _ ctx: CallContext) async throws -> UserResponse {
        let id = try ctx.caller.actingUser(req.id, field: "id")
        let first = try req.firstName.map { try Validate.name($0, field: "first_name") }
        let last = try req.lastName.map { try Validate.name($0, field: "last_name", required: false) }
        let email = try req.email.map { try Validate.email($0) }
        let username = try req.username.map(Self.validUsername)
        if let password = req.password { try Self.validPassword(password, field: "password") }
        guard let current = try await store.credentials(id: id) else { throw ServiceError.notFound("user not found") }
        let changesSecret = req.password != nil
            || (email != nil && email?.lowercased() != current.user.email?.lowercased())
        if changesSecret, case .user = ctx.caller {
            // Someone who picked up an open session must not take the account over.
            guard let old = req.oldPassword, !old.isEmpty else {
                throw ServiceError.invalidField("old_password", "is required to change email or password")
            }
            guard try await hasher.verify(old, hash: current.passwordHash) else {
                throw ServiceError.forbidden("old_password: does not match")
            }
        }
        var newHash: String? = nil
        if let password = req.password { newHash = try await hasher.hash(password) }
        let user = try await store.update(
            id: id, firstName: first, lastName: last, email: email, username: username,
            passwordHash: newHash, keepSession: ctx.caller.sessionID)
        return UserResponse(user: user)
    }

    func delete(_ req: DeleteRequest, _ ctx: CallContext) async throws -> Empty {
        let id = try ctx.caller.actingUser(req.id, field: "id")
        guard try await store.delete(id: id) else { throw ServiceError.notFound("user not found") }
        if id == ctx.caller.userID { ctx.effects.sessionCookie = .clear }
        return Empty()
    }

    func list(_ req: ListRequest, _ ctx: CallContext) async throws -> ListResponse {
        let limit = req.limit ?? 100
        let offset = req.offset ?? 0
        guard (1...1000).contains(limit) else { throw ServiceError.invalidField("limit", "must be between 1 and 1000") }
        guard offset >= 0 else { throw ServiceError.invalidField("offset", "must not be negative") }
        return ListResponse(users: try await store.list(offset: offset, limit: limit))
    }

    func listSessions(_ req: Empty, _ ctx: CallContext) async throws -> ListSessionsResponse {
        guard case .user(let uid, let sid, _) = ctx.caller else {
            throw ServiceError.forbidden("sessions belong to user sessions")
        }
        return ListSessionsResponse(sessions: try await store.sessions(userID: uid, current: sid))
    }

    func revokeSession(_ req: RevokeSessionRequest, _ ctx: CallContext) async throws -> Empty {
        guard case .user(let uid, let sid, _) = ctx.caller else {
            throw ServiceError.forbidden("sessions belong to user sessions")
        }
        let id = try Validate.id(req.id, field: "id")
        guard try await store.endSession(id: id, userID: uid) else { throw ServiceError.notFound("session not found") }
        if id == sid { ctx.effects.sessionCookie = .clear }
        return Empty()
    }

    // MARK: Account mails

    func sendPasswordReset(_ req: SendPasswordResetRequest, _ ctx: CallContext) async throws -> Empty {
        let email = try Validate.email(req.email)
        if !ctx.caller.isServiceKey {
            // Limits apply to every address alike, known or not: a 429 tells nothing about accounts.
            try await mailAddressLimiter.take("addr:" + ctx.clientAddress)
            try await mailAccountLimiter.take("reset:" + email.lowercased())
        }
        try await store.requestPasswordReset(email: email)
        return Empty()
    }

    func resetPassword(_ req: ResetPasswordRequest, _ ctx: CallContext) async throws -> Empty {
        let email = try Validate.email(req.email)
        guard !req.code.isEmpty else { throw ServiceError.invalidField("code", "is required") }
        try Self.validPassword(req.newPassword, field: "new_password")
        if !ctx.caller.isServiceKey { try await codeGuessLimiter.take("addr:" + ctx.clientAddress) }
        // An unknown address fails exactly like a wrong code.
        guard let account = try await store.credentials(email: email),
              try await codes.redeem(
                identity: AccountCode.passwordReset.identity(userID: account.user.id, email: email), code: req.code)
        else { throw CodesService.invalidCode }
        try await store.resetPassword(id: account.user.id, email: email, passwordHash: try await hasher.hash(req.newPassword))
        await loginAccountLimiter.reset("acct:" + email.lowercased())
        if ctx.caller.userID == account.user.id { ctx.effects.sessionCookie = .clear }
        return Empty()
    }

    func sendVerificationEmail(_ req: SendVerificationEmailRequest, _ ctx: CallContext) async throws -> Empty {
        let id = try ctx.caller.actingUser(req.id, field: "id")
        if !ctx.caller.isServiceKey { try await mailAccountLimiter.take("verify:" + id) }
        switch try await store.requestVerification(userID: id) {
        case .requested: return Empty()
        case .alreadyVerified: throw ServiceError.conflict("email is already verified")
        case .noSuchUser: throw ServiceError.notFound("user not found")
        }
    }

    func verifyEmail(_ req: VerifyEmailRequest, _ ctx: CallContext) async throws -> Empty {
        let email = try Validate.email(req.email)
        guard !req.code.isEmpty else { throw ServiceError.invalidField("code", "is required") }
        if !ctx.caller.isServiceKey { try await codeGuessLimiter.take("addr:" + ctx.clientAddress) }
        guard let account = try await store.credentials(email: email),
              try await codes.redeem(
                identity: AccountCode.emailVerification.identity(userID: account.user.id, email: email), code: req.code),
              try await store.markVerified(id: account.user.id, email: email) != nil
        else { throw CodesService.invalidCode }
        return Empty()
    }

    // MARK: Helpers

    /// A wrong password, an unknown account, and a session that can no longer start all read alike.
    static let invalidCredentials = ServiceError.unauthorized("invalid email or password")

    /// A new session for the account whose password was checked against `passwordHash`.
    func startSession(_ userID: String, passwordHash: String, _ ctx: CallContext) async throws -> String {
        let token = Secrets.token()
        guard try await store.createSession(
            userID: userID, passwordHash: passwordHash, tokenHash: Secrets.sha256(token),
            expiresAt: Timestamp.now().adding(seconds: config.sessionLifetime),
            userAgent: ctx.userAgent.map { String($0.prefix(200)) })
        else { throw Self.invalidCredentials }
        if !ctx.caller.isServiceKey {
            ctx.effects.sessionCookie = .set(token: token, maxAge: Int(config.sessionLifetime))
        }
        return token
    }

    /// Removes email addresses the caller may not see.
    func visible(_ users: [User], to caller: Caller) async throws -> [User] {
        switch caller {
        case .serviceKey: return users
        case .anonymous: return users.map { var u = $0; u.email = nil; u.emailVerified = nil; return u }
        case .user(let viewer, _, let admin):
            if admin { return users }
            let others = users.map(\.id).filter { $0 != viewer }
            let allowed = others.isEmpty ? [] : try await emailVisibility(viewer, others)
            return users.map { u in
                var u = u
                if u.id != viewer && !allowed.contains(u.id) { u.email = nil; u.emailVerified = nil }
                return u
            }
        }
    }

    static func validPassword(_ password: String, field: String) throws {
        if password.count < 8 { throw ServiceError.invalidField(field, "must be at least 8 characters") }
        // bcrypt reads 72 bytes: a longer password would silently match its own prefix.
        if password.utf8.count > 72 { throw ServiceError.invalidField(field, "must be at most 72 bytes") }
    }

    static func validUsername(_ raw: String) throws -> String {
        let name = raw.trimmingCharacters(in: .whitespaces)
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
        guard (3...32).contains(name.count), name.allSatisfy({ allowed.contains($0) }) else {
            throw ServiceError.invalidField("username", "must be 3 to 32 letters, digits, '_', '.' or '-'")
        }
        return name
    }
}

/// Resolves bearer tokens: `vk_...` are service keys, anything else a session token.
struct SessionAuthenticator: Authenticator {
    let store: UserStore

    func authenticate(token: String) async throws -> Caller? {
        guard !token.isEmpty, token.utf8.count <= 256 else { return nil }
        let hash = Secrets.sha256(token)
        if token.hasPrefix(ServiceKeys.prefix) {
            return try await store.serviceKey(hash: hash).map { .serviceKey(name: $0) }
        }
        guard let s = try await store.session(tokenHash: hash) else { return nil }
        return .user(id: s.userID, sessionID: s.sessionID, isAdmin: s.isAdmin)
    }
}
