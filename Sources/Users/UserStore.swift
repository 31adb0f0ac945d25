import Foundation
import ServiceKit
import Storage

/// The users service's tables. Nothing outside this module reads them.
struct UserStore: Sendable {
    let db: any Database

    static let migrations = [
        Migration(service: "users", version: 1, [
            """
            CREATE TABLE users (
                id TEXT PRIMARY KEY,
                email TEXT NOT NULL,
                email_lower TEXT NOT NULL UNIQUE,
                username TEXT,
                username_lower TEXT UNIQUE,
                first_name TEXT NOT NULL,
                last_name TEXT NOT NULL,
                password_hash TEXT NOT NULL,
                role TEXT NOT NULL DEFAULT 'user',
                created_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL)
            """,
            """
            CREATE TABLE sessions (
                id TEXT PRIMARY KEY,
                token_hash TEXT NOT NULL UNIQUE,
                user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                created_at BIGINT NOT NULL,
                last_used_at BIGINT NOT NULL,
                expires_at BIGINT NOT NULL,
                user_agent TEXT)
            """,
            "CREATE INDEX sessions_user ON sessions (user_id)",
            """
            CREATE TABLE service_keys (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                key_hash TEXT NOT NULL UNIQUE,
                created_at BIGINT NOT NULL,
                revoked_at BIGINT)
            """,
        ]),
        Migration(service: "users", version: 2, [
            // Set when the owner of `email` proved it; cleared when the email changes.
            "ALTER TABLE users ADD COLUMN email_verified_at BIGINT",
        ]),
    ]

    struct Credentials {
        var user: User
        var passwordHash: String
    }

    static let columns = "id, email, email_verified_at, username, first_name, last_name, created_at, password_hash"

    static func user(_ row: Row) throws -> User {
        User(
            id: try row.string("id"), firstName: try row.string("first_name"), lastName: try row.string("last_name"),
            email: try row.string("email"), emailVerified: try row.optionalInt("email_verified_at") != nil,
            username: try row.optionalString("username"),
            createdAt: try row.timestamp("created_at"))
    }

    func create(firstName: String, lastName: String, email: String, username: String?, passwordHash: String) async throws -> User {
        let user = User(
            id: Secrets.uuid(), firstName: firstName, lastName: lastName, email: email,
            emailVerified: false, username: username, createdAt: .now())
        do {
            try await db.write { tx in
                try await tx.query(
                    """
                    INSERT INTO users (id, email, email_lower, username, username_lower, first_name, last_name,
                        password_hash, created_at, updated_at)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
                    """,
                    user.id, email, email.lowercased(), username, username?.lowercased(), firstName, lastName,
                    passwordHash, user.createdAt)
                try await EventLog.append(tx, UserCreated.event(user, audience: "user:\(user.id)"))
                try await EventLog.append(tx, EmailVerificationRequested(userId: user.id, email: email))
            }
        } catch StorageError.uniqueViolation(let message) {
            throw Self.conflict(message)
        }
        return user
    }

    static func conflict(_ message: String) -> ServiceError {
        message.contains("username") ? .conflict("username already taken") : .conflict("email already registered")
    }

    func credentials(email: String) async throws -> Credentials? {
        try await credentials(where: "email_lower = $1", email.lowercased())
    }

    func credentials(username: String) async throws -> Credentials? {
        try await credentials(where: "username_lower = $1", username.lowercased())
    }

    func credentials(id: String) async throws -> Credentials? {
        try await credentials(where: "id = $1", id)
    }

    private func credentials(where clause: String, _ value: String) async throws -> Credentials? {
        try await db.read { conn in
            try await conn.first("SELECT \(Self.columns) FROM users WHERE \(clause)", value).map {
                Credentials(user: try Self.user($0), passwordHash: try $0.string("password_hash"))
            }
        }
    }

    func users(ids: [String]) async throws -> [User] {
        try await users(column: "id", ids)
    }

    func users(emails: [String]) async throws -> [User] {
        try await users(column: "email_lower", emails.map { $0.lowercased() })
    }

    func users(usernames: [String]) async throws -> [User] {
        try await users(column: "username_lower", usernames.map { $0.lowercased() })
    }

    private func users(column: String, _ values: [String]) async throws -> [User] {
        let unique = Array(Set(values))
        guard !unique.isEmpty else { return [] }
        return try await db.read { conn in
            try await conn.query("SELECT \(Self.columns) FROM users WHERE \(column) IN (\(SQL.list(unique.count)))", unique)
                .map(Self.user)
        }
    }

    func list(offset: Int, limit: Int) async throws -> [User] {
        try await db.read { conn in
            try await conn.query(
                "SELECT \(Self.columns) FROM users ORDER BY created_at, id LIMIT $1 OFFSET $2", limit, offset
            ).map(Self.user)
        }
    }

    func update(
        id: String, firstName: String?, lastName: String?, email: String?, username: String?,
        passwordHash: String?, keepSession: String?
    ) async throws -> User {
        do {
            return try await db.write { tx in
                let before = try await tx.first("SELECT email_lower FROM users WHERE id = $1", id)?.string("email_lower")
                let newAddress = email.map { $0.lowercased() != before } ?? false
                try await tx.query(
                    """
                    UPDATE users SET
                        first_name = COALESCE($2, first_name),
                        last_name = COALESCE($3, last_name),
                        email = COALESCE($4, email),
                        email_lower = COALESCE($5, email_lower),
                        username = COALESCE($6, username),
                        username_lower = COALESCE($7, username_lower),
                        password_hash = COALESCE($8, password_hash),
                        updated_at = $9,
                        email_verified_at = CASE WHEN $10 = 1 THEN NULL ELSE email_verified_at END
                    WHERE id = $1
                    """,
                    id, firstName, lastName, email, email?.lowercased(), username, username?.lowercased(),
                    passwordHash, Timestamp.now(), newAddress)
                guard let row = try await tx.first("SELECT \(Self.columns) FROM users WHERE id = $1", id) else {
                    throw ServiceError.notFound("user not found")
                }
                if passwordHash != nil {
                    // A new password ends every other session: a stolen one stops working.
                    try await Self.endSessions(tx, user: id, where: "id <> $2", keepSession ?? "")
                }
                let user = try Self.user(row)
                try await EventLog.append(tx, UserUpdated.event(user, audience: "user:\(id)"))
                if newAddress, let email { try await EventLog.append(tx, EmailVerificationRequested(userId: id, email: email)) }
                return user
            }
        } catch StorageError.uniqueViolation(let message) {
            throw Self.conflict(message)
        }
    }

    func delete(id: String) async throws -> Bool {
        try await db.write { tx in
            guard try await tx.first("SELECT id FROM users WHERE id = $1", id) != nil else { return false }
            try await tx.query("DELETE FROM sessions WHERE user_id = $1", id)
            try await tx.query("DELETE FROM users WHERE id = $1", id)
            try await EventLog.append(tx, UserDeleted.event(Removed(id: id), audience: "user:\(id)"))
            return true
        }
    }

    // MARK: Account mails

    /// Logs a password-reset request if an account has this email; says nothing either way.
    func requestPasswordReset(email: String) async throws {
        try await db.write { tx in
            guard let row = try await tx.first("SELECT id, email FROM users WHERE email_lower = $1", email.lowercased())
            else { return }
            try await EventLog.append(tx, PasswordResetRequested(userId: try row.string("id"), email: try row.string("email")))
        }
    }

    enum VerificationRequest { case requested, alreadyVerified, noSuchUser }

    func requestVerification(userID: String) async throws -> VerificationRequest {
        try await db.write { tx in
            guard let row = try await tx.first("SELECT email, email_verified_at FROM users WHERE id = $1", userID)
            else { return .noSuchUser }
            if try row.optionalInt("email_verified_at") != nil { return .alreadyVerified }
            try await EventLog.append(tx, EmailVerificationRequested(userId: userID, email: try row.string("email")))
            return .requested
        }
    }

    /// Marks the account's address as verified if it is still `email`.
    func markVerified(id: String, email: String) async throws -> User? {
        try await db.write { tx in
            let rows = try await tx.query(
                """
                UPDATE users SET email_verified_at = COALESCE(email_verified_at, $3)
                WHERE id = $1 AND email_lower = $2 RETURNING id
                """, id, email.lowercased(), Timestamp.now())
            guard !rows.isEmpty, let row = try await tx.first("SELECT \(Self.columns) FROM users WHERE id = $1", id)
            else { return nil }
            let user = try Self.user(row)
            try await EventLog.append(tx, UserUpdated.event(user, audience: "user:\(id)"))
            return user
        }
    }

    /// A new password from a reset: the mailed code proved the address, and every session ends.
    func resetPassword(id: String, email: String, passwordHash: String) async throws {
        try await db.write { tx in
            let now = Timestamp.now()
            try await tx.query(
                """
                UPDATE users SET password_hash = $3, updated_at = $4, email_verified_at = COALESCE(email_verified_at, $4)
                WHERE id = $1 AND email_lower = $2
                """, id, email.lowercased(), passwordHash, now)
            try await Self.endSessions(tx, user: id)
        }
    }

    // MARK: Sessions

    /// Starts a session for the password that was checked against `passwordHash`; false when the
    /// account is gone or its password changed since (a login racing a password change must not
    /// outlive it). On PostgreSQL the account's row is held until commit: a change or a deletion
    /// waiting for it then ends this session too (a change ends sessions, a deletion cascades).
    func createSession(userID: String, passwordHash: String, tokenHash: String, expiresAt: Timestamp, userAgent: String?) async throws -> Bool {
        let now = Timestamp.now()
        return try await db.write { tx in
            let lock = tx.dialect == .postgres ? " FOR SHARE" : ""
            guard try await tx.first("SELECT password_hash FROM users WHERE id = $1\(lock)", userID)?.string("password_hash") == passwordHash
            else { return false }
            try await tx.query(
                """
                INSERT INTO sessions (id, token_hash, user_id, created_at, last_used_at, expires_at, user_agent)
                VALUES ($1, $2, $3, $4, $4, $5, $6)
                """,
                Secrets.uuid(), tokenHash, userID, now, expiresAt, userAgent)
            return true
        }
    }

    struct SessionInfo {
        var sessionID: String
        var userID: String
        var isAdmin: Bool
    }

    func session(tokenHash: String) async throws -> SessionInfo? {
        try await db.lookup { conn in
            try await conn.first(
                """
                SELECT s.id AS sid, s.user_id AS uid, u.role AS role FROM sessions s JOIN users u ON u.id = s.user_id
                WHERE s.token_hash = $1 AND s.expires_at > $2
                """, tokenHash, Timestamp.now()
            ).map { SessionInfo(sessionID: try $0.string("sid"), userID: try $0.string("uid"), isAdmin: try $0.string("role") == "admin") }
        }
    }

    /// The session's user, with its expiry pushed to `extendTo`; nil if unknown or expired.
    func validate(tokenHash: String, extendTo: Timestamp) async throws -> User? {
        let now = Timestamp.now()
        return try await db.write { tx in
            let rows = try await tx.query(
                "UPDATE sessions SET expires_at = $2, last_used_at = $3 WHERE token_hash = $1 AND expires_at > $3 RETURNING user_id",
                tokenHash, extendTo, now)
            guard let uid = try rows.first?.string("user_id") else { return nil }
            return try await tx.first("SELECT \(Self.columns) FROM users WHERE id = $1", uid).map(Self.user)
        }
    }

    /// Ends one of the user's sessions; false if it is not theirs (or gone).
    func endSession(id: String, userID: String) async throws -> Bool {
        try await db.write { tx in try await !Self.endSessions(tx, user: userID, where: "id = $2", id).isEmpty }
    }

    func endSessions(userID: String) async throws {
        try await db.write { tx in _ = try await Self.endSessions(tx, user: userID) }
    }

    /// Deletes sessions of `user` (those matching `condition`, whose parameters start at $2) and
    /// logs `session.ended` with their ids, so the realtime feeds they opened close at once.
    @discardableResult
    static func endSessions(_ tx: Transaction, user: String, where condition: String? = nil, _ values: any SQLBindable...) async throws -> [String] {
        let ended = try await tx.query(
            "DELETE FROM sessions WHERE user_id = $1\(condition.map { " AND " + $0 } ?? "") RETURNING id",
            [user as any SQLBindable] + values
        ).map { try $0.string("id") }
        if !ended.isEmpty { try await EventLog.append(tx, SessionsEnded(userId: user, sessionIds: ended.sorted())) }
        return ended
    }

    func sessions(userID: String, current: String) async throws -> [Session] {
        try await db.read { conn in
            try await conn.query(
                """
                SELECT id, created_at, last_used_at, expires_at, user_agent FROM sessions
                WHERE user_id = $1 AND expires_at > $2 ORDER BY last_used_at DESC
                """, userID, Timestamp.now()
            ).map {
                Session(
                    id: try $0.string("id"), createdAt: try $0.timestamp("created_at"),
                    lastUsedAt: try $0.timestamp("last_used_at"), expiresAt: try $0.timestamp("expires_at"),
                    userAgent: try $0.optionalString("user_agent"), current: try $0.string("id") == current)
            }
        }
    }

    // MARK: Service keys and roles

    func serviceKey(hash: String) async throws -> String? {
        try await db.lookup { conn in
            try await conn.first("SELECT name FROM service_keys WHERE key_hash = $1 AND revoked_at IS NULL", hash)?
                .string("name")
        }
    }
}

/// Administration from the command line: service keys and the admin role.
public struct ServiceKeys: Sendable {
    static let prefix = "vk_"
    let db: any Database

    public init(db: any Database) { self.db = db }

    /// Creates a key and returns it: the only time it is ever shown.
    public func create(name: String) async throws -> String {
        let name = try Validate.name(name, field: "name")
        let key = Secrets.token(prefix: Self.prefix)
        try await db.write { tx in
            if try await tx.first("SELECT id FROM service_keys WHERE name = $1 AND revoked_at IS NULL", name) != nil {
                throw ServiceError.conflict("an active key named \(name) exists; revoke it first")
            }
            try await tx.query(
                "INSERT INTO service_keys (id, name, key_hash, created_at) VALUES ($1, $2, $3, $4)",
                Secrets.uuid(), name, Secrets.sha256(key), Timestamp.now())
        }
        return key
    }

    /// Revokes the active key with this name; false if there is none.
    public func revoke(name: String) async throws -> Bool {
        try await db.write { tx in
            try await !tx.query(
                "UPDATE service_keys SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL RETURNING id",
                name, Timestamp.now()).isEmpty
        }
    }

    public func list() async throws -> [(name: String, createdAt: Timestamp)] {
        try await db.read { conn in
            try await conn.query("SELECT name, created_at FROM service_keys WHERE revoked_at IS NULL ORDER BY name")
                .map { (try $0.string("name"), try $0.timestamp("created_at")) }
        }
    }

    /// Gives or takes the admin role; false if no account has this email.
    public func setAdmin(email: String, _ admin: Bool) async throws -> Bool {
        try await db.write { tx in
            try await !tx.query(
                "UPDATE users SET role = $2 WHERE email_lower = $1 RETURNING id",
                email.lowercased(), admin ? "admin" : "user").isEmpty
        }
    }
}
