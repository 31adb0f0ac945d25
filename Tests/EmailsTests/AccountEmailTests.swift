import App
import Foundation
import HTTPTypes
import Testing
import TestSupport

/// The users service's mails through a real SMTP server: the code in the mail is the one that works.
@Suite("emails: password reset and email verification mails")
struct AccountEmailTests {
    /// The six-digit code and the link in a mail's text.
    func codeAndLink(_ mail: [String: Any], path: String) throws -> (code: String, link: String) {
        let text = try #require(mail["text"] as? String)
        let link = try #require(text.split(separator: "\n").first { $0.hasPrefix("https://chat.example.org\(path)?") })
        let query = try #require(URLComponents(string: String(link))?.queryItems)
        let code = try #require(query.first { $0.name == "code" }?.value)
        #expect(code.count == 6 && code.allSatisfy(\.isNumber))
        #expect(text.contains(code))
        return (code, String(link))
    }

    @Test(arguments: Backend.all)
    func theResetMailCarriesTheCodeThatSetsANewPassword(_ backend: Backend) async throws {
        let sink = try await SMTPSink.start()
        try await withTestApp(backend, configure: mailingApp(sink)) { api in
            let ada = try await api.signUp("Ada", email: "ada+chat@example.com")
            #expect(try await api.post("users/SendPasswordReset", ["email": "ADA+chat@example.com"]).status == .ok)
            #expect(try await api.post("users/SendPasswordReset", ["email": "nobody@example.com"]).status == .ok)
            var mail: [String: Any] = [:]
            try await eventually("the reset mail") {
                guard let m = sink.mails(to: ada.email).first(where: { ($0["subject"] as? String)?.contains("password reset") == true })
                else { return false }
                mail = m
                return true
            }
            let (code, link) = try codeAndLink(mail, path: "/account/reset")
            // The address survives the link (`+` must not turn into a space).
            let email = URLComponents(string: link)?.queryItems?.first { $0.name == "email" }?.value
            #expect(email == "ada+chat@example.com")
            #expect((mail["subject"] as? String)?.hasSuffix(code) == true)
            #expect((mail["html"] as? String)?.contains(link.replacingOccurrences(of: "&", with: "&amp;")) == true)

            let r = try await api.post("users/ResetPassword", ["email": ada.email, "code": code, "new_password": "a-new-secret"])
            #expect(r.status == .ok)
            #expect(try await api.post("users/Read", ["ids": [ada.id]], token: ada.token).status == .unauthorized)
            #expect(try await api.post("users/Login", ["email": ada.email, "password": "a-new-secret"]).status == .ok)
            try await Task.sleep(for: .milliseconds(500))
            #expect(sink.mails(to: "nobody@example.com").isEmpty)
            #expect(sink.mails(to: ada.email).filter { ($0["subject"] as? String)?.contains("password reset") == true }.count == 1)
        }
    }

    @Test(arguments: Backend.all)
    func signingUpMailsAVerificationLinkAndAnEmailChangeMailsTheNewAddress(_ backend: Backend) async throws {
        let sink = try await SMTPSink.start()
        try await withTestApp(backend, configure: mailingApp(sink)) { api in
            let ada = try await api.signUp("Ada")
            try await eventually("the verification mail") { !sink.mails(to: ada.email).isEmpty }
            let first = sink.mails(to: ada.email)[0]
            #expect(first["subject"] as? String == "Confirm your email address for Verteilt")
            let (code, _) = try codeAndLink(first, path: "/account/verify")
            #expect(try await api.post("users/VerifyEmail", ["email": ada.email, "code": code]).status == .ok)
            let me = try await api.post("users/Read", ["ids": [ada.id]], token: ada.token)
            #expect(((me["users"] as? [String: [String: Any]])?[ada.id])?["email_verified"] as? Bool == true)

            let newAddress = "ada.new@example.com"
            let changed = try await api.post("users/Update", ["email": newAddress, "old_password": ada.password], token: ada.token)
            #expect(changed.status == .ok)
            try await eventually("the mail to the new address") { !sink.mails(to: newAddress).isEmpty }
            let (newCode, _) = try codeAndLink(sink.mails(to: newAddress)[0], path: "/account/verify")
            #expect(try await api.post("users/VerifyEmail", ["email": newAddress, "code": newCode]).status == .ok)
            #expect(sink.mails(to: ada.email).count == 1)
        }
    }
}
