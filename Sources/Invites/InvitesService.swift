import Foundation
import Groups
import ServiceKit
import Storage
import Users

public struct Invite: Codable, Sendable, Equatable {
    public var id: String
    public var groupId: String
    /// Empty for an open link.
    public var email: String
    public var code: String
    public var expiresAt: Timestamp?
    public var inviterId: String?
    public var maxUses: Int?
    public var uses: Int
    public var createdAt: Timestamp
}

/// What other services may ask of the invites service.
public protocol InvitesClient: Sendable {
    /// Deletes a deleted group's invites (`group.deleted`): their codes lead nowhere.
    func removeGroup(_ groupID: String) async throws
}

/// `invite.created`: the invite, as stored, for the group's admins (and the invite email).
public enum InviteCreated: EventKind {
    public typealias Payload = Invite
    public static let name = "invite.created"
}

/// `invite.deleted`: its id and group, for the group's admins.
public struct RemovedInvite: Codable, Sendable {
    public var id: String
    public var groupId: String
}

public enum InviteDeleted: EventKind {
    public typealias Payload = RemovedInvite
    public static let name = "invite.deleted"
}

public struct CreateInviteRequest: Codable, Sendable {
    public var groupId: String
    public var email: String?
    public var expiresAt: Timestamp?
    public var maxUses: Int?
}

public struct InviteResponse: Codable, Sendable {
    public var invite: Invite
}

public struct ReadInviteRequest: Codable, Sendable {
    public var id: String?
    public var code: String?
}

public struct ListInvitesRequest: Codable, Sendable {
    public var groupId: String?
    public var email: String?
}

public struct InvitesResponse: Codable, Sendable {
    public var invites: [Invite]
}

public struct InviteIDRequest: Codable, Sendable {
    public var id: String
}

public struct CodeRequest: Codable, Sendable {
    public var code: String
}

public struct PreviewResponse: Codable, Sendable {
    public var groupName: String
    public var inviterName: String?
}

/// Invitations by email or by open link (API.md `invites/*`). Only group admins create, list and
/// revoke them; anyone holding a valid code may preview it; a signed-in user accepts it.
public struct InvitesService: ServiceDefinition, InvitesClient {
    public let name = "invites"
    let db: any Database
    let groups: any GroupsClient
    let users: any UsersClient
    static let defaultLifetime = 7.0 * 24 * 3600

    public static let migrations = [
        Migration(service: "invites", version: 1, [
            """
            CREATE TABLE invites (
                id TEXT PRIMARY KEY,
                group_id TEXT NOT NULL,
                email TEXT NOT NULL,
                email_lower TEXT NOT NULL,
                code TEXT NOT NULL UNIQUE,
                inviter_id TEXT,
                created_at BIGINT NOT NULL,
                expires_at BIGINT,
                max_uses BIGINT,
                uses BIGINT NOT NULL DEFAULT 0)
            """,
            "CREATE INDEX invites_group ON invites (group_id)",
            "CREATE INDEX invites_email ON invites (email_lower)",
        ])
    ]

    public init(db: any Database, groups: any GroupsClient, users: any UsersClient) {
        self.db = db
        self.groups = groups
        self.users = users
    }

    public var endpoints: [Endpoint] {
        [
            Endpoint(service: name, method: "Create",
                     summary: "Invite by email, or with an empty email make an open link (admins).",
                     access: .signedIn, handler: create),
            Endpoint(service: name, method: "Read", summary: "An invite by id (admins, the invitee) or by code.",
                     access: .signedIn, handler: read),
            Endpoint(service: name, method: "List", summary: "A group's invites (admins) or the caller's own (by email).",
                     access: .signedIn, handler: list),
            Endpoint(service: name, method: "Delete", summary: "Revoke an invite (admins).",
                     access: .signedIn, handler: delete),
            Endpoint(service: name, method: "Accept", summary: "Join the group with a code.",
                     access: .signedIn, handler: accept),
            Endpoint(service: name, method: "Preview",
                     summary: "Group name and inviter for a valid code; nothing else. No sign-in needed.",
                     access: .anyone, handler: preview),
        ]
    }

    func create(_ req: CreateInviteRequest, _ ctx: CallContext) async throws -> InviteResponse {
        let groupID = try Validate.id(req.groupId, field: "group_id")
        let raw = req.email?.trimmingCharacters(in: .whitespaces) ?? ""
        let email = raw.isEmpty ? "" : try Validate.email(raw)
        let now = Timestamp.now()
        let expires = req.expiresAt ?? now.adding(seconds: Self.defaultLifetime)
        guard expires > now else { throw ServiceError.invalidField("expires_at", "must be in the future") }
        if let m = req.maxUses, !(1...100_000).contains(m) {
            throw ServiceError.invalidField("max_uses", "must be between 1 and 100000")
        }
        _ = try await groups.require(.admin, in: groupID, caller: ctx.caller)
        let invite = Invite(
            id: Secrets.uuid(), groupId: groupID, email: email, code: Secrets.token(bytes: 16),
            expiresAt: expires, inviterId: ctx.caller.userID,
            maxUses: req.maxUses ?? (email.isEmpty ? nil : 1), uses: 0, createdAt: now)
        try await db.write { tx in
            try await tx.query(
                """
                INSERT INTO invites (id, group_id, email, email_lower, code, inviter_id, created_at, expires_at, max_uses, uses)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0)
                """,
                invite.id, groupID, email, email.lowercased(), invite.code, invite.inviterId, now, expires, invite.maxUses)
            // For the group's admins (and the mailer): it carries the code.
            try await EventLog.append(tx, InviteCreated.event(invite, audience: "group-admins:\(invite.groupId)"))
        }
        return InviteResponse(invite: invite)
    }

    func read(_ req: ReadInviteRequest, _ ctx: CallContext) async throws -> InviteResponse {
        if let code = req.code, !code.isEmpty {
            // Holding the code is the right to see the invite.
            guard let invite = try await invite(code: code) else { throw ServiceError.notFound("invite not found") }
            return InviteResponse(invite: invite)
        }
        guard let id = req.id, !id.isEmpty else { throw ServiceError.invalidField("id", "is required (or code)") }
        guard let invite = try await invite(where: "id = $1", try Validate.id(id, field: "id")) else {
            throw ServiceError.notFound("invite not found")
        }
        if try await !isInvitee(invite, ctx.caller, verified: true) {
            do {
                _ = try await groups.require(.admin, in: invite.groupId, caller: ctx.caller)
            } catch let e as ServiceError where e.status == .notFound {
                throw ServiceError.notFound("invite not found")
            }
        }
        return InviteResponse(invite: invite)
    }

    func list(_ req: ListInvitesRequest, _ ctx: CallContext) async throws -> InvitesResponse {
        if let g = req.groupId, !g.isEmpty {
            let groupID = try Validate.id(g, field: "group_id")
            _ = try await groups.require(.admin, in: groupID, caller: ctx.caller)
            return InvitesResponse(invites: try await invites(where: "group_id = $1", groupID))
        }
        guard let raw = req.email, !raw.isEmpty else { throw ServiceError.invalidField("group_id", "is required (or email)") }
        let email = try Validate.email(raw)
        if let uid = ctx.caller.userID {
            // Listing hands out the codes: only to whoever has shown the address is theirs.
            guard let me = try await users.users(ids: [uid])[uid], me.email?.lowercased() == email.lowercased() else {
                throw ServiceError.forbidden("email: you may list only your own invites")
            }
            guard me.emailVerified == true else { throw ServiceError.forbidden("email: verify your address to see its invites") }
        }
        return InvitesResponse(invites: try await invites(where: "email_lower = $1", email.lowercased()))
    }

    func delete(_ req: InviteIDRequest, _ ctx: CallContext) async throws -> Empty {
        let id = try Validate.id(req.id, field: "id")
        guard let invite = try await invite(where: "id = $1", id) else { throw ServiceError.notFound("invite not found") }
        do {
            _ = try await groups.require(.admin, in: invite.groupId, caller: ctx.caller)
        } catch let e as ServiceError where e.status == .notFound {
            throw ServiceError.notFound("invite not found")
        }
        try await db.write { tx in
            try await tx.query("DELETE FROM invites WHERE id = $1", id)
            try await EventLog.append(
                tx, InviteDeleted.event(RemovedInvite(id: id, groupId: invite.groupId), audience: "group-admins:\(invite.groupId)"))
        }
        return Empty()
    }

    func accept(_ req: CodeRequest, _ ctx: CallContext) async throws -> GroupResponse {
        guard let user = ctx.caller.userID else { throw ServiceError.forbidden("a user accepts an invite") }
        guard let invite = try await usable(req.code) else { throw ServiceError.notFound("invite not found or expired") }
        if !invite.email.isEmpty, try await !isInvitee(invite, ctx.caller) {
            throw ServiceError.forbidden("this invite is for another email address")
        }
        if try await groups.role(of: user, in: invite.groupId) == nil {
            // Count the use first: two people racing for the last use cannot both get in.
            let counted = try await db.write { tx in
                try await !tx.query(
                    "UPDATE invites SET uses = uses + 1 WHERE id = $1 AND (max_uses IS NULL OR uses < max_uses) RETURNING id",
                    invite.id).isEmpty
            }
            if counted {
                // A use that let nobody in is given back: the join failed, or the same user's
                // other request (a double click) joined first.
                let joined: Bool
                do {
                    joined = try await groups.join(groupID: invite.groupId, userID: user)
                } catch {
                    try? await giveBack(invite)
                    throw error
                }
                if !joined { try await giveBack(invite) }
            } else if try await groups.role(of: user, in: invite.groupId) == nil {
                throw ServiceError.notFound("invite not found or expired")
            }
        }
        guard let group = try await groups.group(invite.groupId) else { throw ServiceError.notFound("group not found") }
        return GroupResponse(group: group)
    }

    func preview(_ req: CodeRequest, _ ctx: CallContext) async throws -> PreviewResponse {
        guard let invite = try await usable(req.code), let group = try await groups.group(invite.groupId) else {
            throw ServiceError.notFound("invite not found or expired")
        }
        var inviter: String?
        if let iid = invite.inviterId, let u = try await users.users(ids: [iid])[iid] {
            inviter = [u.firstName, u.lastName].filter { !$0.isEmpty }.joined(separator: " ")
        }
        return PreviewResponse(groupName: group.name, inviterName: inviter)
    }

    /// In a task of its own: a request cut off by its deadline (the join waited too long) still
    /// gives the use back.
    func giveBack(_ invite: Invite) async throws {
        let db = self.db
        try await Task {
            try await db.write { tx in try await tx.query("UPDATE invites SET uses = uses - 1 WHERE id = $1 AND uses > 0", invite.id) }
        }.value
    }

    public func removeGroup(_ groupID: String) async throws {
        try await db.write { tx in try await tx.query("DELETE FROM invites WHERE group_id = $1", groupID) }
    }

    // MARK: Helpers

    /// An invite whose code is valid now: not expired, uses left.
    func usable(_ code: String) async throws -> Invite? {
        guard let invite = try await invite(code: code) else { return nil }
        if let e = invite.expiresAt, e <= .now() { return nil }
        if let m = invite.maxUses, invite.uses >= m { return nil }
        return invite
    }

    /// Whether the caller's address is the invite's. Accepting needs the code besides, which
    /// only the mail to that address carries; seeing the invite without the code (and so its
    /// code) needs the address `verified`: anyone may sign up with an address they do not own.
    func isInvitee(_ invite: Invite, _ caller: Caller, verified: Bool = false) async throws -> Bool {
        guard !invite.email.isEmpty, let uid = caller.userID, let me = try await users.users(ids: [uid])[uid] else { return false }
        return me.email?.lowercased() == invite.email.lowercased() && (!verified || me.emailVerified == true)
    }

    func invite(code: String) async throws -> Invite? {
        guard !code.isEmpty, code.utf8.count <= 128 else { return nil }
        return try await invite(where: "code = $1", code)
    }

    func invite(where clause: String, _ value: String) async throws -> Invite? {
        try await invites(where: clause, value).first
    }

    func invites(where clause: String, _ value: String) async throws -> [Invite] {
        try await db.read { conn in
            try await conn.query(
                """
                SELECT id, group_id, email, code, inviter_id, created_at, expires_at, max_uses, uses FROM invites
                WHERE \(clause) ORDER BY created_at DESC
                """, value
            ).map { r in
                Invite(
                    id: try r.string("id"), groupId: try r.string("group_id"), email: try r.string("email"),
                    code: try r.string("code"), expiresAt: try r.optionalTimestamp("expires_at"),
                    inviterId: try r.optionalString("inviter_id"), maxUses: try r.optionalInt("max_uses").map(Int.init),
                    uses: Int(try r.int("uses")), createdAt: try r.timestamp("created_at"))
            }
        }
    }
}
