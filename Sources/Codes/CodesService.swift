import Foundation
import ServiceKit
import Storage

/// One-time codes (API.md `codes/*`), e.g. for password reset. A code goes back to its caller,
/// so only service keys (trusted backends that deliver it themselves) may use this service.
public struct CodesService: ServiceDefinition {
    public let name = "codes"
    let db: any Database
    /// Wrong guesses allowed before a code is destroyed.
    public static let maxAttempts = 5
    static let defaultLifetime = 5.0 * 60
    static let maxLifetime = 24.0 * 3600

    public init(db: any Database) { self.db = db }

    public static let migrations = [
        Migration(service: "codes", version: 1, [
            """
            CREATE TABLE codes (
                identity TEXT PRIMARY KEY,
                code_hash TEXT NOT NULL,
                expires_at BIGINT NOT NULL,
                attempts BIGINT NOT NULL DEFAULT 0)
            """
        ])
    ]

    public struct CreateRequest: Codable, Sendable {
        public var identity: String
        public var expiresAt: Timestamp?
    }

    public struct CreateResponse: Codable, Sendable {
        public var code: String
    }

    public struct VerifyRequest: Codable, Sendable {
        public var identity: String
        public var code: String
    }

    public var endpoints: [Endpoint] {
        [
            Endpoint(service: name, method: "Create",
                     summary: "A new six-digit code for an identity (replaces any earlier one).",
                     access: .serviceKey, handler: create),
            Endpoint(service: name, method: "Verify",
                     summary: "Check and consume a code; wrong or expired codes fail.",
                     access: .serviceKey, handler: verify),
        ]
    }

    func create(_ req: CreateRequest, _ ctx: CallContext) async throws -> CreateResponse {
        let identity = try Validate.name(req.identity, field: "identity", maxLength: 256)
        let now = Timestamp.now()
        let expires = req.expiresAt ?? now.adding(seconds: Self.defaultLifetime)
        guard expires > now else { throw ServiceError.invalidField("expires_at", "must be in the future") }
        guard expires <= now.adding(seconds: Self.maxLifetime) else {
            throw ServiceError.invalidField("expires_at", "must be at most 24 hours ahead")
        }
        return CreateResponse(code: try await issue(identity: identity, expiresAt: expires))
    }

    func verify(_ req: VerifyRequest, _ ctx: CallContext) async throws -> Empty {
        let identity = try Validate.name(req.identity, field: "identity", maxLength: 256)
        guard !req.code.isEmpty, req.code.utf8.count <= 64 else { throw ServiceError.invalidField("code", "is required") }
        guard try await redeem(identity: identity, code: req.code) else { throw Self.invalidCode }
        return Empty()
    }

    /// The error for a wrong, used or expired code: one message, so none of them can be told apart.
    public static let invalidCode = ServiceError.badRequest("code: invalid or expired")

    static func hash(_ identity: String, _ code: String) -> String {
        Secrets.sha256(identity + "\u{0}" + code)
    }

    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        var diff: UInt8 = 0
        for i in 0..<x.count { diff |= x[i] ^ y[i] }
        return diff == 0
    }
}

/// What other services may ask of the codes service: the users service redeems the codes that
/// the account mails carry.
public protocol CodesClient: Sendable {
    /// A new six-digit code for `identity`, replacing any earlier one; only its hash is stored.
    func issue(identity: String, expiresAt: Timestamp) async throws -> String
    /// Whether `code` is the identity's live code. A right code is consumed; after
    /// `CodesService.maxAttempts` wrong guesses the code is destroyed.
    func redeem(identity: String, code: String) async throws -> Bool
}

extension CodesService: CodesClient {
    public func issue(identity: String, expiresAt: Timestamp) async throws -> String {
        var rng = SystemRandomNumberGenerator()
        let code = String(format: "%06d", Int.random(in: 0..<1_000_000, using: &rng))
        try await db.write { tx in
            try await tx.query(
                """
                INSERT INTO codes (identity, code_hash, expires_at, attempts) VALUES ($1, $2, $3, 0)
                ON CONFLICT (identity) DO UPDATE SET code_hash = $2, expires_at = $3, attempts = 0
                """, identity, Self.hash(identity, code), expiresAt)
        }
        return code
    }

    public func redeem(identity: String, code: String) async throws -> Bool {
        guard !code.isEmpty, code.utf8.count <= 64 else { return false }
        let attempt = Self.hash(identity, code)
        return try await db.write { tx -> Bool in
            guard let row = try await tx.first(
                "SELECT code_hash, expires_at, attempts FROM codes WHERE identity = $1", identity)
            else { return false }
            let stored = try row.string("code_hash")
            if try row.timestamp("expires_at") <= .now() {
                try await tx.query("DELETE FROM codes WHERE identity = $1", identity)
                return false
            }
            if Self.constantTimeEqual(stored, attempt) {
                // One use only.
                try await tx.query("DELETE FROM codes WHERE identity = $1", identity)
                return true
            }
            if try row.int("attempts") + 1 >= Self.maxAttempts {
                try await tx.query("DELETE FROM codes WHERE identity = $1", identity)
            } else {
                try await tx.query("UPDATE codes SET attempts = attempts + 1 WHERE identity = $1", identity)
            }
            return false
        }
    }
}
