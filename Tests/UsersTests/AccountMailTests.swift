import Codes
import Foundation
import HTTPTypes
import ServiceKit
import Testing
import TestSupport
import Users

/// Password reset and email verification at the API. The mailed codes come from the real codes
/// service, as the mail workflow makes them (the mails themselves: EmailsTests).
@Suite("users: password reset and email verification")
struct AccountMailTests {
    func issueCode(_ api: APIClient, _ kind: AccountCode, _ account: APIClient.Account, email: String? = nil) async throws -> String {
        try await CodesService(db: api.database).issue(
            identity: kind.identity(userID: account.id, email: email ?? account.email),
            expiresAt: Timestamp.now().adding(seconds: kind.lifetime))
    }

    func me(_ api: APIClient, _ account: APIClient.Account) async throws -> [String: Any] {
        try #require((try await api.post("users/Read", ["ids": [account.id]], token: account.token)["users"]
            as? [String: [String: Any]])?[account.id])
    }

    @Test(arguments: Backend.all)
    func sendPasswordResetSaysTheSameForEveryAddress(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let a = try await api.signUp("A")
            let known = try await api.post("users/SendPasswordReset", ["email": a.email.uppercased()])
            #expect(known.status == .ok && known.text == "{}")
            let unknown = try await api.post("users/SendPasswordReset", ["email": "nobody@example.com"])
            #expect(unknown.status == .ok && unknown.text == "{}")
            // Only the known address starts a mail.
            let requests = try await api.database.read { conn in
                try await conn.query("SELECT payload FROM events WHERE type = 'user.password_reset_requested'")
            }
            #expect(requests.count == 1)
            let payload = try requests[0].string("payload")
            #expect(payload.contains(a.id) && !payload.contains("code"))

            let bad = try await api.post("users/SendPasswordReset", ["email": "not-an-address"])
            #expect(bad.status == .badRequest && bad.isErrorShape && bad.detail == "email: must be an email address")
            let wrongType = try await api.post("users/SendPasswordReset", ["email": 7])
            #expect(wrongType.status == .badRequest && wrongType.isErrorShape)
            // A few per account, whether or not it exists: then 429 with Retry-After.
            for address in [a.email, "nobody@example.com"] {
                var last = HTTPResponse.Status.ok
                for _ in 0..<4 { last = try await api.post("users/SendPasswordReset", ["email": address]).status }
                #expect(last == .tooManyRequests)
            }
        }
    }

    @Test(arguments: Backend.all)
    func resetPasswordWithTheMailedCodeEndsEverySession(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let a = try await api.signUp("A")
            let other = try await api.post("users/Login", ["email": a.email, "password": a.password])
            let otherToken = try #require(other["token"] as? String)
            let code = try await issueCode(api, .passwordReset, a)
            let wrongCode = code == "000000" ? "000001" : "000000"

            let wrong = try await api.post("users/ResetPassword", ["email": a.email, "code": wrongCode, "new_password": "brand-new-pass"])
            #expect(wrong.status == .badRequest && wrong.isErrorShape && wrong.detail == "code: invalid or expired")
            // An unknown address fails the same way.
            let nobody = try await api.post("users/ResetPassword", ["email": "nobody@example.com", "code": code, "new_password": "brand-new-pass"])
            #expect(nobody.status == .badRequest && nobody.detail == "code: invalid or expired")
            let short = try await api.post("users/ResetPassword", ["email": a.email, "code": code, "new_password": "short"])
            #expect(short.status == .badRequest && short.detail.hasPrefix("new_password:"))
            let missing = try await api.post("users/ResetPassword", ["email": a.email, "new_password": "brand-new-pass"])
            #expect(missing.status == .badRequest && missing.isErrorShape)
            #expect(try await me(api, a)["email_verified"] as? Bool == false)

            let ok = try await api.post("users/ResetPassword", ["email": a.email.uppercased(), "code": code, "new_password": "brand-new-pass"])
            #expect(ok.status == .ok && ok.text == "{}")
            for token in [a.token, otherToken] {
                #expect(try await api.post("users/Read", ["ids": [a.id]], token: token).status == .unauthorized)
            }
            #expect(try await api.post("users/Login", ["email": a.email, "password": a.password]).status == .unauthorized)
            let login = try await api.post("users/Login", ["email": a.email, "password": "brand-new-pass"])
            #expect(login.status == .ok)
            // The code worked once; and receiving it proved the address.
            let again = try await api.post("users/ResetPassword", ["email": a.email, "code": code, "new_password": "another-pass"])
            #expect(again.status == .badRequest)
            #expect((login["user"] as? [String: Any])?["email_verified"] as? Bool == true)
        }
    }

    @Test(arguments: Backend.all)
    func fiveWrongGuessesDestroyTheCode(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let a = try await api.signUp("A")
            let code = try await issueCode(api, .passwordReset, a)
            let wrong = (Int(code)! + 1) % 1_000_000
            for _ in 0..<CodesService.maxAttempts {
                let r = try await api.post("users/ResetPassword", [
                    "email": a.email, "code": String(format: "%06d", wrong), "new_password": "brand-new-pass"])
                #expect(r.status == .badRequest)
            }
            let right = try await api.post("users/ResetPassword", ["email": a.email, "code": code, "new_password": "brand-new-pass"])
            #expect(right.status == .badRequest, "the code is gone after five wrong guesses")
            #expect(try await api.post("users/Login", ["email": a.email, "password": a.password]).status == .ok)
        }
    }

    @Test(arguments: Backend.all)
    func verifyEmailConfirmsTheCurrentAddressOnly(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let a = try await api.signUp("A")
            // Signing up asked for the verification mail.
            let asked = try await api.database.read { conn in
                try await conn.query("SELECT payload FROM events WHERE type = 'user.email_verification_requested'")
            }
            #expect(asked.count == 1)
            #expect(try await me(api, a)["email_verified"] as? Bool == false)

            let code = try await issueCode(api, .emailVerification, a)
            let wrong = try await api.post("users/VerifyEmail", ["email": a.email, "code": code == "123456" ? "654321" : "123456"])
            #expect(wrong.status == .badRequest && wrong.isErrorShape)
            // Not signed in: a link opened on another device works.
            let ok = try await api.post("users/VerifyEmail", ["email": a.email, "code": code])
            #expect(ok.status == .ok)
            #expect(try await me(api, a)["email_verified"] as? Bool == true)
            let resend = try await api.post("users/SendVerificationEmail", token: a.token)
            #expect(resend.status == .conflict && resend.isErrorShape)

            // A code mailed to the old address does not confirm a new one.
            let oldCode = try await issueCode(api, .emailVerification, a)
            let changed = try await api.post("users/Update", ["email": "new-\(a.email)", "old_password": a.password], token: a.token)
            #expect(changed.status == .ok)
            #expect((changed["user"] as? [String: Any])?["email_verified"] as? Bool == false)
            #expect(try await api.post("users/VerifyEmail", ["email": "new-\(a.email)", "code": oldCode]).status == .badRequest)
            #expect(try await api.post("users/VerifyEmail", ["email": a.email, "code": oldCode]).status == .badRequest)
            let again = try await api.post("users/SendVerificationEmail", token: a.token)
            #expect(again.status == .ok)
            #expect(try await api.post("users/SendVerificationEmail").status == .unauthorized)

            // Nobody else learns whether an address is verified.
            let b = try await api.signUp("B")
            let seen = try #require((try await api.post("users/Read", ["ids": [a.id]], token: b.token)["users"]
                as? [String: [String: Any]])?[a.id])
            #expect(seen["email"] == nil && seen["email_verified"] == nil)
        }
    }
}
