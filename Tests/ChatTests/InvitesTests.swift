import Foundation
import ServiceKit
import Testing
import TestSupport

@Suite("invites: links, emails, preview, accept")
struct InvitesTests {
    @Test(arguments: Backend.all)
    func openLinkFlow(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let f = try await api.fixture()
            let r = try await api.post("invites/Create", ["group_id": f.groupID, "max_uses": 2], token: f.admin.token)
            #expect(r.status == .ok)
            let invite = try #require(r["invite"] as? [String: Any])
            let code = try #require(invite["code"] as? String)
            #expect(code.count >= 22)  // 128 bits
            #expect(invite["email"] as? String == "")
            #expect(invite["inviter_id"] as? String == f.admin.id)

            // Preview needs no session and tells only the group name and the inviter.
            let p = try await api.post("invites/Preview", ["code": code])
            #expect(p.status == .ok)
            #expect(p.json.keys.sorted() == ["group_name", "inviter_name"])
            #expect(p["group_name"] as? String == "Friends")
            #expect(p["inviter_name"] as? String == "Admin User")
            #expect(try await api.post("invites/Preview", ["code": "wrong"]).status == .notFound)

            let a = try await api.signUp("A"), b = try await api.signUp("B"), c = try await api.signUp("C")
            let joined = try await api.post("invites/Accept", ["code": code], token: a.token)
            #expect(joined.status == .ok)
            #expect(((joined["group"] as? [String: Any])?["member_ids"] as? [String])?.contains(a.id) == true)
            // Accepting again does not use the invite up.
            #expect(try await api.post("invites/Accept", ["code": code], token: a.token).status == .ok)
            #expect(try await api.post("invites/Accept", ["code": code], token: b.token).status == .ok)
            // Two uses are gone.
            #expect(try await api.post("invites/Accept", ["code": code], token: c.token).status == .notFound)
            #expect(try await api.post("invites/Preview", ["code": code]).status == .notFound)
            #expect(try await api.post("invites/Accept", ["code": code]).status == .unauthorized)
        }
    }

    /// One person accepting several times at once (a double click, two tabs) joins once and
    /// uses the invite once.
    @Test(arguments: Backend.all)
    func acceptingTwiceAtOnceUsesTheInviteOnce(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let f = try await api.fixture()
            let r = try await api.post("invites/Create", ["group_id": f.groupID, "max_uses": 2], token: f.admin.token)
            let code = try #require((r["invite"] as? [String: Any])?["code"] as? String)
            let a = try await api.signUp("A"), b = try await api.signUp("B")
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<4 { group.addTask { Int(try await api.postConcurrently("invites/Accept", ["code": code], token: a.token).status.code) } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(statuses.filter { $0 == 200 }.count >= 1 && statuses.allSatisfy { $0 == 200 || $0 == 404 }, "\(statuses)")
            #expect(try await api.post("invites/Accept", ["code": code], token: b.token).status == .ok, "one use is left")
            let list = try await api.post("invites/List", ["group_id": f.groupID], token: f.admin.token)
            let uses = ((list["invites"] as? [[String: Any]])?.first { $0["code"] as? String == code })?["uses"] as? Int
            #expect(uses == 2)
        }
    }

    @Test(arguments: Backend.all)
    func emailInvitesAreForThatAddressOnly(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let f = try await api.fixture()
            let guest = try await api.signUp("Guest")
            let r = try await api.post("invites/Create", ["group_id": f.groupID, "email": guest.email.uppercased()], token: f.owner.token)
            let invite = try #require(r["invite"] as? [String: Any])
            let code = try #require(invite["code"] as? String)
            #expect(invite["max_uses"] as? Int == 1)
            // Listing or reading it hands out the code: not to someone who merely signed up with
            // the address, only once it is verified; nobody else may list them.
            #expect(try await api.post("invites/List", ["email": guest.email], token: guest.token).status == .forbidden)
            #expect(try await api.post("invites/Read", ["id": invite["id"] as! String], token: guest.token).status == .notFound)
            try await api.database.write { tx in
                try await tx.query("UPDATE users SET email_verified_at = $2 WHERE id = $1", guest.id, Timestamp.now())
            }
            let mine = try await api.post("invites/List", ["email": guest.email], token: guest.token)
            #expect((mine["invites"] as? [Any])?.count == 1)
            #expect(try await api.post("invites/List", ["email": guest.email], token: f.stranger.token).status == .forbidden)
            #expect(try await api.post("invites/Read", ["id": invite["id"] as! String], token: guest.token).status == .ok)
            // Someone else holding the code cannot use it.
            #expect(try await api.post("invites/Accept", ["code": code], token: f.stranger.token).status == .forbidden)
            #expect(try await api.post("invites/Accept", ["code": code], token: guest.token).status == .ok)
            #expect(try await api.post("invites/Create", ["group_id": f.groupID, "email": "nope"], token: f.owner.token).detail
                    == "email: must be an email address")
        }
    }

    @Test(arguments: Backend.all)
    func onlyAdminsManageInvites(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let f = try await api.fixture()
            #expect(try await api.post("invites/Create", ["group_id": f.groupID], token: f.member.token).status == .forbidden)
            #expect(try await api.post("invites/Create", ["group_id": f.groupID], token: f.stranger.token).status == .notFound)
            let r = try await api.post("invites/Create", ["group_id": f.groupID], token: f.owner.token)
            let invite = try #require(r["invite"] as? [String: Any])
            let id = try #require(invite["id"] as? String), code = try #require(invite["code"] as? String)
            #expect(try await api.post("invites/List", ["group_id": f.groupID], token: f.member.token).status == .forbidden)
            let list = try await api.post("invites/List", ["group_id": f.groupID], token: f.admin.token)
            #expect((list["invites"] as? [Any])?.count == 1)
            #expect(try await api.post("invites/Read", ["id": id], token: f.member.token).status == .forbidden)
            #expect(try await api.post("invites/Read", ["id": id], token: f.stranger.token).status == .notFound)
            #expect(try await api.post("invites/Read", ["code": code], token: f.stranger.token).status == .ok)
            #expect(try await api.post("invites/Delete", ["id": id], token: f.member.token).status == .forbidden)
            #expect(try await api.post("invites/Delete", ["id": id], token: f.admin.token).status == .ok)
            #expect(try await api.post("invites/Accept", ["code": code], token: f.stranger.token).status == .notFound)
        }
    }

    @Test(arguments: Backend.all)
    func expiredInvitesStopWorking(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let f = try await api.fixture()
            let past = try await api.post("invites/Create", ["group_id": f.groupID, "expires_at": "2020-01-01T00:00:00Z"], token: f.owner.token)
            #expect(past.detail == "expires_at: must be in the future")
            // Far enough ahead that the request arrives before it on a loaded host (at 0.4 s one
            // did not, nor at 3 s in the first minute of a CI run); then wait until it has passed.
            let soon = Timestamp.now().adding(seconds: 15)
            let r = try await api.post("invites/Create", ["group_id": f.groupID, "expires_at": soon.rfc3339], token: f.owner.token)
            let code = try #require((r["invite"] as? [String: Any])?["code"] as? String)
            try await sleep(past: soon)
            #expect(try await api.post("invites/Preview", ["code": code]).status == .notFound)
            #expect(try await api.post("invites/Accept", ["code": code], token: f.stranger.token).status == .notFound)
        }
    }
}
