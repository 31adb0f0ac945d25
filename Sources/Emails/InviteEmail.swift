import Foundation
import Groups
import Invites
import Mail
import ServiceKit
import Storage
import Users
import Workflows

/// What the mail functions need to know about the deployment.
public struct EmailSettings: Sendable {
    /// Where people open the web app; links in mails start with it.
    public var publicURL: String
    public var productName = "Verteilt"

    public init(publicURL: String) {
        var url = publicURL
        while url.hasSuffix("/") { url.removeLast() }
        self.publicURL = url
    }
}

/// A rendered mail, stored as the `render` step's result so a retry sends the same text.
public struct RenderedMail: Codable, Sendable, Equatable {
    public var subject: String
    public var text: String
    public var html: String
}

/// `invite.created` with an email address: render the invitation (group, inviter, link) and send
/// it, retrying while the mail server fails.
public enum InviteEmail {
    public static let functionID = "invite-email"

    public static func function(
        mailer: Mailer, groups: any GroupsClient, users: any UsersClient, settings: EmailSettings,
        backoff: Backoff = Backoff(base: .seconds(5), max: .seconds(600))
    ) -> WorkflowFunction {
        WorkflowFunction(
            functionID, on: Logged<InviteCreated>.self, retries: 8, backoff: backoff,
            idempotencyKey: { $0.payload.id }, filter: { !$0.payload.email.isEmpty }
        ) { event, step in
            let invite = event.payload
            let mail = try await step.run("render") { () -> RenderedMail in
                guard let group = try await groups.group(invite.groupId) else {
                    throw NonRetryableError("the group \(invite.groupId) no longer exists")
                }
                var inviter: String?
                if let id = invite.inviterId, let user = try await users.users(ids: [id])[id] {
                    inviter = [user.firstName, user.lastName].filter { !$0.isEmpty }.joined(separator: " ")
                }
                return render(groupName: group.name, inviterName: inviter, link: settings.publicURL + "/invite/" + invite.code,
                              expiresAt: invite.expiresAt, productName: settings.productName)
            }
            try await step.run("send") {
                do {
                    try await mailer.send(to: [invite.email], subject: mail.subject, text: mail.text, html: mail.html)
                } catch let e as MailError where e.permanent {
                    throw NonRetryableError(e.description)
                }
            }
        }
    }

    public static func render(groupName: String, inviterName: String?, link: String, expiresAt: Timestamp?,
                              productName: String) -> RenderedMail {
        let who = inviterName.flatMap { $0.isEmpty ? nil : $0 }
        let subject = who.map { "\($0) invited you to \(groupName)" } ?? "You are invited to \(groupName)"
        let expiry = expiresAt.map { " The invitation is valid until \(Self.day($0))." } ?? ""
        let text = """
            Hello,

            \(who ?? "Someone") invited you to join the group "\(groupName)" on \(productName).

            Open this link to join:
            \(link)
            \(expiry.isEmpty ? "" : "\n" + expiry.trimmingCharacters(in: .whitespaces) + "\n")
            If you did not expect this invitation, you can ignore this mail.
            """
        let html = """
            <!doctype html>
            <html><body style="font-family: sans-serif; line-height: 1.5">
            <p>Hello,</p>
            <p>\(escape(who ?? "Someone")) invited you to join the group <strong>\(escape(groupName))</strong> on \(escape(productName)).</p>
            <p><a href="\(escape(link))">Join \(escape(groupName))</a></p>
            <p style="color: #666">Or paste this link into your browser: \(escape(link))\(escape(expiry))</p>
            <p style="color: #666">If you did not expect this invitation, you can ignore this mail.</p>
            </body></html>
            """
        return RenderedMail(subject: subject, text: text, html: html)
    }

    static func day(_ t: Timestamp) -> String {
        String(t.rfc3339.prefix(10))
    }

    /// HTML text and attribute escaping.
    public static func escape(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(c)
            }
        }
        return out
    }
}
