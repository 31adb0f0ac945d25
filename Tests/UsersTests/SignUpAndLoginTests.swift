import Foundation
import HTTPTypes
import Testing
import TestSupport

@Suite("users: sign-up, login, sessions")
struct SignUpAndLoginTests {
    @Test(arguments: Backend.all)
    func signUpReturnsUserTokenAndCookie(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let r = try await api.post("users/Create", [
                "first_name": "  Ada ", "last_name": "Lovelace", "email": "Ada@Example.com", "password": "correct horse",
                "username": "ada",
            ])
            #expect(r.status == .ok)
            let user = try #require(r["user"] as? [String: Any])
            #expect(user["first_name"] as? String == "Ada")  // trimmed
            #expect(user["email"] as? String == "Ada@Example.com")
            #expect(user["username"] as? String == "ada")
            #expect((user["created_at"] as? String)?.hasSuffix("Z") == true)
            #expect(user["password"] == nil && user["password_hash"] == nil)
            let token = try #require(r["token"] as? String)
            #expect(token.count >= 43)  // 256 bits, base64url
            let cookie = try #require(r.headers[.setCookie])
            #expect(cookie.contains("verteilt_session=\(token)"))
            #expect(cookie.contains("HttpOnly"))
            #expect(cookie.contains("SameSite=Lax"))
            #expect(!cookie.contains("Secure"))

            // The token works as a bearer token.
            let v = try await api.post("users/Validate", ["token": token])
            #expect(v.status == .ok)
            #expect((v["user"] as? [String: Any])?["id"] as? String == user["id"] as? String)
        }
    }

    @Test(arguments: Backend.all)
    func cookieIsSecureBehindATLSProxy(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let acct = try await api.signUp()
            let r = try await api.post(
                "users/Login", ["email": acct.email, "password": acct.password],
                headers: [HTTPField.Name("X-Forwarded-Proto")!: "https"])
            let cookie = try #require(r.headers[.setCookie])
            #expect(cookie.contains("Secure") && cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"))
        }
    }

    @Test(arguments: Backend.all)
    func emailIsUniqueCaseInsensitively(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            _ = try await api.signUp(email: "dup@example.com")
            let r = try await api.post("users/Create", [
                "first_name": "B", "email": "DUP@example.COM", "password": "password123",
            ])
            #expect(r.status == .conflict)
            #expect(r.isErrorShape)
            #expect(r.detail == "email already registered")
        }
    }

    @Test(arguments: Backend.all)
    func usernameIsUniqueCaseInsensitively(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let a = try await api.post("users/Create", [
                "first_name": "A", "email": "a@example.com", "password": "password123", "username": "Same",
            ])
            #expect(a.status == .ok)
            let b = try await api.post("users/Create", [
                "first_name": "B", "email": "b@example.com", "password": "password123", "username": "same",
            ])
            #expect(b.status == .conflict)
            #expect(b.detail == "username already taken")
        }
    }

    @Test(arguments: Backend.all)
    func signUpInputRules(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let base: [String: Any] = ["first_name": "A", "email": "x@example.com", "password": "password123"]
            func with(_ changes: [String: Any]) -> [String: Any] { base.merging(changes) { $1 } }
            let cases: [([String: Any], String)] = [
                (with(["password": "short"]), "password: must be at least 8 characters"),
                (with(["password": String(repeating: "é", count: 40)]), "password: must be at most 72 bytes"),
                (with(["email": "not-an-email"]), "email: must be an email address"),
                (with(["email": "a@b"]), "email: must be an email address"),
                (with(["first_name": "   "]), "first_name: must not be empty"),
                (with(["first_name": String(repeating: "x", count: 101)]), "first_name: must be at most 100 characters"),
                (with(["first_name": "bad\u{0007}name"]), "first_name: must not contain control characters"),
                (with(["username": "a b"]), "username: must be 3 to 32 letters, digits, '_', '.' or '-'"),
                (with(["password": 12345678]), "password: must be a string"),
                (base.filter { $0.key != "email" }, "email: is required"),
            ]
            for (body, detail) in cases {
                let r = try await api.post("users/Create", body)
                #expect(r.status == .badRequest, "\(detail)")
                #expect(r.detail == detail)
                #expect(r.isErrorShape)
            }
            // None of them created an account.
            let ok = try await api.post("users/Create", base)
            #expect(ok.status == .ok)
        }
    }

    @Test(arguments: Backend.all)
    func unicodeNamesAreKeptExactly(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let name = "Zoë 👩🏽‍💻 שלום e\u{0301}"
            let r = try await api.post("users/Create", ["first_name": name, "email": "u@example.com", "password": "password123"])
            #expect(r.status == .ok)
            #expect((r["user"] as? [String: Any])?["first_name"] as? String == name)
        }
    }

    @Test(arguments: Backend.all)
    func loginByEmailOrUsername(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            _ = try await api.post("users/Create", [
                "first_name": "L", "email": "login@example.com", "password": "password123", "username": "loginer",
            ])
            let byEmail = try await api.post("users/Login", ["email": "LOGIN@example.com", "password": "password123"])
            #expect(byEmail.status == .ok)
            #expect(byEmail.headers[.setCookie]?.contains("HttpOnly") == true)
            let byName = try await api.post("users/Login", ["username": "Loginer", "password": "password123"])
            #expect(byName.status == .ok)
            #expect(byEmail["token"] as? String != byName["token"] as? String)

            let wrong = try await api.post("users/Login", ["email": "login@example.com", "password": "password124"])
            #expect(wrong.status == .unauthorized)
            #expect(wrong.isErrorShape)
            let unknown = try await api.post("users/Login", ["email": "nobody@example.com", "password": "password123"])
            #expect(unknown.status == .unauthorized)
            // Same answer for an unknown account: nothing to enumerate.
            #expect(unknown.detail == wrong.detail)
            let missing = try await api.post("users/Login", ["password": "password123"])
            #expect(missing.status == .badRequest)
            #expect(missing.detail == "email: is required (or username)")
        }
    }

    @Test(arguments: Backend.all)
    func loginIsRateLimitedPerAccount(_ backend: Backend) async throws {
        try await withTestApp(backend, configure: {
            $0.users.loginPerAccount = .init(burst: 3, refillSeconds: 60)
        }) { api in
            let acct = try await api.signUp()
            for _ in 0..<3 {
                let r = try await api.post("users/Login", ["email": acct.email, "password": "wrong-password"])
                #expect(r.status == .unauthorized)
            }
            // Even the right password is refused while the account is locked out.
            let r = try await api.post("users/Login", ["email": acct.email, "password": acct.password])
            #expect(r.status == .tooManyRequests)
            #expect(r.isErrorShape)
            let retry = try #require(r.headers[HTTPField.Name("Retry-After")!].flatMap(Int.init))
            #expect(retry >= 1 && retry <= 60)
            // Another account from the same address is unaffected.
            let other = try await api.signUp("Other")
            let ok = try await api.post("users/Login", ["email": other.email, "password": other.password])
            #expect(ok.status == .ok)
        }
    }

    @Test(arguments: Backend.all)
    func loginAndSignUpAreRateLimitedPerAddress(_ backend: Backend) async throws {
        try await withTestApp(backend, configure: {
            $0.users.loginPerAddress = .init(burst: 4, refillSeconds: 60)
            $0.users.signupPerAddress = .init(burst: 2, refillSeconds: 60)
        }) { api in
            _ = try await api.signUp("A")
            _ = try await api.signUp("B")
            let third = try await api.post("users/Create", ["first_name": "C", "email": "c@example.com", "password": "password123"])
            #expect(third.status == .tooManyRequests)
            #expect(third.headers[HTTPField.Name("Retry-After")!] != nil)
            for i in 0..<4 {
                let r = try await api.post("users/Login", ["email": "n\(i)@example.com", "password": "password123"])
                #expect(r.status == .unauthorized)
            }
            let r = try await api.post("users/Login", ["email": "n9@example.com", "password": "password123"])
            #expect(r.status == .tooManyRequests)
        }
    }

    @Test(arguments: Backend.all)
    func validateExtendsAndRejects(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let acct = try await api.signUp()
            let before = try await api.post("users/ListSessions", token: acct.token)
            let expires1 = try #require(((before["sessions"] as? [[String: Any]])?.first)?["expires_at"] as? String)
            try await Task.sleep(for: .milliseconds(20))
            #expect(try await api.post("users/Validate", ["token": acct.token]).status == .ok)
            let after = try await api.post("users/ListSessions", token: acct.token)
            let expires2 = try #require(((after["sessions"] as? [[String: Any]])?.first)?["expires_at"] as? String)
            #expect(expires2 > expires1)

            for bad in ["", "nope", String(repeating: "x", count: 5000)] {
                let r = try await api.post("users/Validate", ["token": bad])
                #expect(r.status == .unauthorized)
                #expect(r.isErrorShape)
            }
        }
    }

    @Test(arguments: Backend.all)
    func sessionsExpire(_ backend: Backend) async throws {
        // Long enough that a loaded machine still reads within it (at 4 s, a CI host's first read
        // once came after it), short enough to wait out.
        try await withTestApp(backend, configure: { $0.users.sessionLifetime = 10 }) { api in
            let acct = try await api.signUp()
            let signedUp = ContinuousClock.now
            let fresh = try await api.post("users/Read", ["ids": [acct.id]], token: acct.token)
            // A CI host in its busiest minute once answered only after the lifetime: then the
            // session may already have expired, and that answer says nothing.
            if ContinuousClock.now - signedUp < .seconds(10) {
                #expect(fresh.status == .ok, "a session \(ContinuousClock.now - signedUp) old")
            } else {
                #expect(fresh.status == .ok || fresh.status == .unauthorized, "status \(fresh.status)")
            }
            try await Task.sleep(until: signedUp + .milliseconds(10_200))
            let r = try await api.post("users/Read", ["ids": [acct.id]], token: acct.token)
            #expect(r.status == .unauthorized)
            #expect(r.detail == "invalid or expired session")
            #expect(try await api.post("users/Validate", ["token": acct.token]).status == .unauthorized)
        }
    }

    @Test(arguments: Backend.all)
    func sessionCookieAuthenticates(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let acct = try await api.signUp()
            let r = try await api.post("users/Read", ["ids": [acct.id]], headers: [.cookie: "verteilt_session=\(acct.token)"])
            #expect(r.status == .ok)
            let bad = try await api.post("users/Read", ["ids": [acct.id]], headers: [.cookie: "verteilt_session=forged"])
            #expect(bad.status == .unauthorized)
        }
    }

    @Test(arguments: Backend.all)
    func logoutEndsTheCallingSessionOnly(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let acct = try await api.signUp()
            let second = try await api.post("users/Login", ["email": acct.email, "password": acct.password])
            let token2 = try #require(second["token"] as? String)
            let out = try await api.post("users/Logout", token: acct.token)
            #expect(out.status == .ok)
            #expect(out.text == "{}")
            #expect(out.headers[.setCookie]?.contains("Max-Age=0") == true)
            #expect(try await api.post("users/Validate", ["token": acct.token]).status == .unauthorized)
            #expect(try await api.post("users/Validate", ["token": token2]).status == .ok)
            // With its id: every session of the user.
            #expect(try await api.post("users/Logout", ["id": acct.id], token: token2).status == .ok)
            #expect(try await api.post("users/Validate", ["token": token2]).status == .unauthorized)
        }
    }

    @Test(arguments: Backend.all)
    func sessionsCanBeListedAndRevoked(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let acct = try await api.signUp()
            let other = try await api.signUp("Other")
            let phone = try await api.post(
                "users/Login", ["email": acct.email, "password": acct.password], headers: [.userAgent: "phone"])
            let phoneToken = try #require(phone["token"] as? String)
            let list = try await api.post("users/ListSessions", token: acct.token)
            let sessions = try #require(list["sessions"] as? [[String: Any]])
            #expect(sessions.count == 2)
            #expect(sessions.filter { $0["current"] as? Bool == true }.count == 1)
            let phoneSession = try #require(sessions.first { $0["user_agent"] as? String == "phone" })
            let sid = try #require(phoneSession["id"] as? String)
            // Someone else cannot revoke it.
            #expect(try await api.post("users/RevokeSession", ["id": sid], token: other.token).status == .notFound)
            #expect(try await api.post("users/RevokeSession", ["id": sid], token: acct.token).status == .ok)
            #expect(try await api.post("users/Validate", ["token": phoneToken]).status == .unauthorized)
            #expect(try await api.post("users/RevokeSession", ["id": sid], token: acct.token).status == .notFound)
        }
    }
}
