import Foundation
import HTTPTypes
import Testing
import TestSupport

@Suite("users: read, update, delete, list and who may do what")
struct AccountTests {
    @Test(arguments: Backend.all)
    func readShowsEmailOnlyToItsOwnerAndServiceKeys(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let a = try await api.signUp("A")
            let b = try await api.signUp("B")
            let r = try await api.post("users/Read", ["ids": [a.id, b.id, "unknown-id"]], token: a.token)
            #expect(r.status == .ok)
            let users = try #require(r["users"] as? [String: [String: Any]])
            #expect(users.count == 2)
            #expect(users[a.id]?["email"] as? String == a.email)
            #expect(users[b.id]?["email"] == nil)
            #expect(users[b.id]?["first_name"] as? String == "B")

            let key = try await api.serviceKey()
            let k = try await api.post("users/Read", ["ids": [b.id]], token: key)
            #expect((k["users"] as? [String: [String: Any]])?[b.id]?["email"] as? String == b.email)

            #expect(try await api.post("users/Read", ["ids": [a.id]]).status == .unauthorized)
            let wrongType = try await api.post("users/Read", ["ids": "abc"], token: a.token)
            #expect(wrongType.status == .badRequest)
            #expect(wrongType.detail == "ids: must be an array")
            let wrongItem = try await api.post("users/Read", ["ids": [1]], token: a.token)
            #expect(wrongItem.detail == "ids[0]: must be a string")
        }
    }

    @Test(arguments: Backend.all)
    func readByEmailCannotEnumerateAccounts(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let a = try await api.signUp("A")
            let b = try await api.signUp("B")
            let r = try await api.post("users/ReadByEmail", ["emails": [a.email.uppercased(), b.email]], token: a.token)
            #expect(r.status == .ok)
            let users = try #require(r["users"] as? [String: [String: Any]])
            #expect(users.keys.sorted() == [a.email.uppercased()])
            let key = try await api.serviceKey()
            let k = try await api.post("users/ReadByEmail", ["emails": [a.email, b.email, "none@example.com"]], token: key)
            #expect((k["users"] as? [String: Any])?.count == 2)
        }
    }

    @Test(arguments: Backend.all)
    func updateNamesAndIdentity(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let a = try await api.signUp("A")
            let b = try await api.signUp("B")
            let r = try await api.post("users/Update", ["first_name": "Anna", "last_name": "Ü"], token: a.token)
            #expect(r.status == .ok)
            #expect((r["user"] as? [String: Any])?["first_name"] as? String == "Anna")
            #expect((r["user"] as? [String: Any])?["email"] as? String == a.email)
            // Naming someone else is forbidden for a user session.
            let other = try await api.post("users/Update", ["id": b.id, "first_name": "X"], token: a.token)
            #expect(other.status == .forbidden)
            #expect(other.isErrorShape)
            // Email change needs the old password, and a taken email is a conflict.
            let noOld = try await api.post("users/Update", ["email": "new@example.com"], token: a.token)
            #expect(noOld.status == .badRequest)
            #expect(noOld.detail == "old_password: is required to change email or password")
            let taken = try await api.post(
                "users/Update", ["email": b.email.uppercased(), "old_password": a.password], token: a.token)
            #expect(taken.status == .conflict)
            let moved = try await api.post(
                "users/Update", ["email": "new-\(a.id)@example.com", "old_password": a.password], token: a.token)
            #expect(moved.status == .ok)
            #expect(try await api.post("users/Login", ["email": "new-\(a.id)@example.com", "password": a.password]).status == .ok)
            // A service key may update anyone, without an old password.
            let key = try await api.serviceKey()
            let k = try await api.post("users/Update", ["id": b.id, "last_name": "Keyed"], token: key)
            #expect(k.status == .ok)
            let missingID = try await api.post("users/Update", ["last_name": "Keyed"], token: key)
            #expect(missingID.status == .badRequest)
            #expect(missingID.detail == "id: is required for a service key")
            #expect(try await api.post("users/Update", ["id": "nobody", "last_name": "K"], token: key).status == .notFound)
        }
    }

    @Test(arguments: Backend.all)
    func passwordChangeEndsOtherSessions(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let a = try await api.signUp()
            let laptop = try #require(try await api.post("users/Login", ["email": a.email, "password": a.password])["token"] as? String)
            let wrongOld = try await api.post(
                "users/Update", ["password": "new-password-1", "old_password": "not-it-at-all"], token: a.token)
            #expect(wrongOld.status == .forbidden)
            let r = try await api.post(
                "users/Update", ["password": "new-password-1", "old_password": a.password], token: a.token)
            #expect(r.status == .ok)
            #expect(try await api.post("users/Validate", ["token": a.token]).status == .ok)
            #expect(try await api.post("users/Validate", ["token": laptop]).status == .unauthorized)
            #expect(try await api.post("users/Login", ["email": a.email, "password": a.password]).status == .unauthorized)
            #expect(try await api.post("users/Login", ["email": a.email, "password": "new-password-1"]).status == .ok)
        }
    }

    /// A login checks the password (slow, on purpose), then starts a session (bcrypt cost 10:
    /// slow enough to race, cheap enough not to starve the suites beside it; 12 made other
    /// tests' requests time out in CI). A password change
    /// or an account deletion committed in between must not leave that session behind: one
    /// started with the old password, or one of an account that is gone (a 500 before).
    @Test(arguments: Backend.all)
    func aLoginRacingAPasswordChangeOrADeletionDoesNotOutliveIt(_ backend: Backend) async throws {
        try await withTestApp(backend, configure: { $0.bcryptCost = 10 }) { api in
            let key = try await api.serviceKey()
            let clock = ContinuousClock()
            @Sendable func sessions(_ user: String) async throws -> Int {
                try await api.database.read { conn in
                    Int(try await conn.first("SELECT COUNT(*) AS n FROM sessions WHERE user_id = $1", user)?.int("n") ?? -1)
                }
            }
            /// What a login came to: refused, a session that works, or one that was ended.
            @Sendable func outcome(_ login: APIResponse) async throws -> String {
                switch login.status {
                case .unauthorized: return "refused"
                case .ok:
                    let token = try #require(login["token"] as? String)
                    return try await api.post("users/Validate", ["token": token]).status == .ok ? "valid" : "dead session"
                default: return "status \(login.status.code)"
                }
            }
            for fraction in [0.4, 0.6] {
                let a = try await api.signUp()
                // How long a login takes here, and so when it is checking the password.
                let start = clock.now
                #expect(try await api.post("users/Login", ["email": a.email, "password": a.password]).status == .ok)
                let check = (clock.now - start) * fraction

                // The new password is hashed and stored while the login checks the old one.
                async let change = api.postConcurrently("users/Update", ["id": a.id, "password": "another-password-\(fraction)"], token: key)
                try await Task.sleep(for: check)
                let login = try await api.postConcurrently("users/Login", ["email": a.email, "password": a.password])
                #expect(try await change.status == .ok)
                // (On a busy host the change may also come after the login: its session then ends.)
                #expect(["refused", "dead session"].contains(try await outcome(login)), "password changed, \(fraction)")
                #expect(try await api.post("users/Login", ["email": a.email, "password": "another-password-\(fraction)"]).status == .ok)

                // The account is deleted while the login checks the password.
                let b = try await api.signUp()
                async let racing = api.postConcurrently("users/Login", ["email": b.email, "password": b.password])
                try await Task.sleep(for: check)
                #expect(try await api.postConcurrently("users/Delete", ["id": b.id], token: key).status == .ok)
                let late = try await racing
                // Refused, or (on a busy host) in before the deletion, which then ended the session.
                #expect([.unauthorized, .ok].contains(late.status), "account deleted, \(fraction): \(late.status)")
                #expect(try await sessions(b.id) == 0)
            }
        }
    }

    @Test(arguments: Backend.all)
    func deleteAccount(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let a = try await api.signUp("A")
            let b = try await api.signUp("B")
            #expect(try await api.post("users/Delete", ["id": b.id], token: a.token).status == .forbidden)
            let r = try await api.post("users/Delete", token: a.token)
            #expect(r.status == .ok)
            #expect(try await api.post("users/Validate", ["token": a.token]).status == .unauthorized)
            #expect(try await api.post("users/Login", ["email": a.email, "password": a.password]).status == .unauthorized)
            let key = try await api.serviceKey()
            #expect(try await api.post("users/Delete", ["id": b.id], token: key).status == .ok)
            #expect(try await api.post("users/Delete", ["id": b.id], token: key).status == .notFound)
            // The email is free again.
            #expect(try await api.post("users/Create", ["first_name": "A", "email": a.email, "password": "password123"]).status == .ok)
        }
    }

    @Test(arguments: Backend.all)
    func listIsForServiceKeysAndAdmins(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let a = try await api.signUp("A")
            _ = try await api.signUp("B")
            let forbidden = try await api.post("users/List", token: a.token)
            #expect(forbidden.status == .forbidden)
            #expect(try await api.post("users/List").status == .unauthorized)
            let key = try await api.serviceKey()
            let r = try await api.post("users/List", ["limit": 1], token: key)
            #expect((r["users"] as? [Any])?.count == 1)
            let all = try await api.post("users/List", token: key)
            #expect((all["users"] as? [[String: Any]])?.allSatisfy { $0["email"] != nil } == true)
            #expect(try await api.post("users/List", ["limit": 0], token: key).detail == "limit: must be between 1 and 1000")
            // An admin user may list too.
            #expect(try await ServiceKeysAdmin.grant(api, email: a.email))
            #expect(try await api.post("users/List", token: a.token).status == .ok)
        }
    }

    @Test(arguments: Backend.all)
    func serviceKeysActForUsersAndCanBeRevoked(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let a = try await api.signUp("A")
            let name = "revocable-\(UUID().uuidString.prefix(6))"
            let key = try await ServiceKeysAdmin.create(api, name: name)
            #expect(try await api.post("users/Logout", ["id": a.id], token: key).status == .ok)
            #expect(try await api.post("users/Validate", ["token": a.token]).status == .unauthorized)
            let noID = try await api.post("users/Logout", token: key)
            #expect(noID.status == .badRequest)
            #expect(try await ServiceKeysAdmin.revoke(api, name: name))
            let r = try await api.post("users/List", token: key)
            #expect(r.status == .unauthorized)
            #expect(r.detail == "invalid or expired session")
        }
    }
}
