import Codes
import Foundation
import Mail
import ServiceKit
import Storage
import Users
import Workflows

/// The users service's mails: the password-reset code and the email-verification link. The code
/// is made inside the step that sends it, so it exists only as a hash in the codes table and in
/// the mail; a retried send makes a new code, which replaces the old one.
public enum AccountEmails {
    public static func functions(
        mailer: Mailer, users: any UsersClient, codes: any CodesClient, settings: EmailSettings,
        backoff: Backoff = Backoff(base: .seconds(5), max: .seconds(600))
    ) -> [WorkflowFunction] {
        [
            function("password-reset-email", PasswordResetRequested.self, mailer, users, codes, settings, backoff),
            function("verify-email", EmailVerificationRequested.self, mailer, users, codes, settings, backoff),
        ]
    }

    static func function<E: AccountMailRequest>(
        _ id: String, _ type: E.Type, _ mailer: Mailer, _ users: any UsersClient, _ codes: any CodesClient,
        _ settings: EmailSettings, _ backoff: Backoff
    ) -> WorkflowFunction {
        WorkflowFunction(id, on: type, retries: 8, backoff: backoff) { request, step in
            try await step.run("send") {
                // The address may have changed, been verified or gone since the request.
                guard let user = try await users.users(ids: [request.userId])[request.userId],
                      user.email?.lowercased() == request.email.lowercased()
                else { return }
                if E.code == .emailVerification, user.emailVerified == true { return }
                let code = try await codes.issue(
                    identity: E.code.identity(userID: user.id, email: request.email),
                    expiresAt: Timestamp.now().adding(seconds: E.code.lifetime))
                let mail = render(E.code, code: code, email: request.email, firstName: user.firstName, settings: settings)
                do {
                    try await mailer.send(to: [request.email], subject: mail.subject, text: mail.text, html: mail.html)
                } catch let e as MailError where e.permanent {
                    throw NonRetryableError(e.description)
                }
            }
        }
    }

    /// The page of the web app that takes the code (`/account/reset`, `/account/verify`).
    public static func link(_ kind: AccountCode, code: String, email: String, settings: EmailSettings) -> String {
        var url = URLComponents()
        url.queryItems = [URLQueryItem(name: "email", value: email), URLQueryItem(name: "code", value: code)]
        // `+` is a space to form decoders: encode it, as addresses may contain it.
        let query = (url.percentEncodedQuery ?? "").replacingOccurrences(of: "+", with: "%2B")
        return settings.publicURL + (kind == .passwordReset ? "/account/reset?" : "/account/verify?") + query
    }

    public static func render(
        _ kind: AccountCode, code: String, email: String, firstName: String, settings: EmailSettings
    ) -> RenderedMail {
        let link = link(kind, code: code, email: email, settings: settings)
        let product = settings.productName
        let hello = firstName.isEmpty ? "Hello," : "Hello \(firstName),"
        let esc = InviteEmail.escape
        switch kind {
        case .passwordReset:
            let subject = "Your \(product) password reset code: \(code)"
            let text = """
                \(hello)

                someone, hopefully you, asked to reset the password of your \(product) account.

                Your code: \(code)

                Or open this link to choose a new password:
                \(link)

                The code works once, for one hour. If you did not ask for it, ignore this mail:
                your password stays as it is.
                """
            let html = """
                <!doctype html>
                <html><body style="font-family: sans-serif; line-height: 1.5">
                <p>\(esc(hello))</p>
                <p>someone, hopefully you, asked to reset the password of your \(esc(product)) account.</p>
                <p>Your code: <strong style="font-size: 1.4em; letter-spacing: 0.1em">\(code)</strong></p>
                <p><a href="\(esc(link))">Choose a new password</a></p>
                <p style="color: #666">The code works once, for one hour. If you did not ask for it, ignore this mail: your password stays as it is.</p>
                </body></html>
                """
            return RenderedMail(subject: subject, text: text, html: html)
        case .emailVerification:
            let subject = "Confirm your email address for \(product)"
            let text = """
                \(hello)

                please confirm that \(email) is your address on \(product) by opening this link:
                \(link)

                Or enter this code: \(code)

                The link works once, for 24 hours. If you did not sign up, ignore this mail.
                """
            let html = """
                <!doctype html>
                <html><body style="font-family: sans-serif; line-height: 1.5">
                <p>\(esc(hello))</p>
                <p>please confirm that <strong>\(esc(email))</strong> is your address on \(esc(product)).</p>
                <p><a href="\(esc(link))">Confirm my address</a></p>
                <p style="color: #666">Or enter this code: \(code). The link works once, for 24 hours. If you did not sign up, ignore this mail.</p>
                </body></html>
                """
            return RenderedMail(subject: subject, text: text, html: html)
        }
    }
}
