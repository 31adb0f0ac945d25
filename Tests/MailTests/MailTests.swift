import Foundation
import HTTPTypes
import Mail
import ServiceKit
import Storage
import Testing
import TestSupport

@Suite("mail: SMTP against a real server, and the development mailbox")
struct MailTests {
    let mail = Mail(
        from: "Verteilt <noreply@verteilt.test>", to: ["Ada Lövelace <ada@example.com>", "bob@example.com"],
        subject: "Grüße aus Verteilt", text: "Hello Ada,\n.\nA line with a dot, and ümlauts.",
        html: "<p>Hello <b>Ada</b></p>")

    @Test func deliversTextAndHTMLToAPlainServer() async throws {
        let sink = try await SMTPSink.start()
        let smtp = try SMTPTransport(SMTPConfiguration(url: "smtp://127.0.0.1:\(sink.port)?security=none"))
        try await smtp.send(mail)
        let got = try #require(sink.mails().first)
        #expect(got["mail_from"] as? String == "noreply@verteilt.test")
        #expect(got["rcpt_tos"] as? [String] == ["ada@example.com", "bob@example.com"])
        #expect(got["subject"] as? String == "Grüße aus Verteilt")
        #expect((got["text"] as? String)?.trimmingCharacters(in: .whitespacesAndNewlines) == "Hello Ada,\n.\nA line with a dot, and ümlauts.")
        #expect((got["html"] as? String)?.contains("<p>Hello <b>Ada</b></p>") == true)
        #expect((got["to"] as? String)?.contains("ada@example.com") == true)
        #expect(got["tls"] as? Bool == false)
    }

    @Test func upgradesWithSTARTTLSAndAuthenticates() async throws {
        let sink = try await SMTPSink.start(tls: true, user: "mailer", password: "s3cret pass")
        var config = try SMTPConfiguration(url: "smtp://mailer:s3cret%20pass@localhost:\(sink.port)")
        config.caFile = sink.certificate
        config.timeout = .seconds(30)  // a loaded CI machine can be slow to finish the TLS handshake
        try await SMTPTransport(config).send(mail)
        let got = try #require(sink.mails().first)
        #expect(got["tls"] as? Bool == true)
        #expect(got["auth"] as? String == "mailer")
        #expect(got["subject"] as? String == "Grüße aus Verteilt")

        // A wrong password is a permanent failure; nothing is delivered.
        var wrong = config
        wrong.password = "nope"
        let error = await #expect(throws: MailError.self) { try await SMTPTransport(wrong).send(mail) }
        #expect(error?.permanent == true)
        #expect(sink.mails().count == 1)

        // An untrusted certificate is refused before anything is sent.
        var untrusted = config
        untrusted.caFile = nil
        await #expect(throws: (any Error).self) { try await SMTPTransport(untrusted).send(mail) }
        #expect(sink.mails().count == 1)
    }

    @Test func refusesToSendWithoutTheTLSItWasToldToUse() async throws {
        let sink = try await SMTPSink.start()
        let error = await #expect(throws: MailError.self) {
            try await SMTPTransport(SMTPConfiguration(url: "smtp://127.0.0.1:\(sink.port)")).send(mail)
        }
        #expect(error?.description.contains("STARTTLS") == true)
        let creds = await #expect(throws: MailError.self) {
            try await SMTPTransport(SMTPConfiguration(url: "smtp://u:p@127.0.0.1:\(sink.port)?security=none")).send(mail)
        }
        #expect(creds?.permanent == true)
        #expect(sink.mails().isEmpty)
    }

    @Test func temporaryFailuresAreRetryable() async throws {
        let sink = try await SMTPSink.start()
        let smtp = try SMTPTransport(SMTPConfiguration(url: "smtp://127.0.0.1:\(sink.port)?security=none"))
        sink.setFailing(true)
        let busy = await #expect(throws: MailError.self) { try await smtp.send(mail) }
        #expect(busy?.permanent == false)
        #expect(busy?.description.contains("451") == true)
        sink.setFailing(false)
        try await smtp.send(mail)
        #expect(sink.mails().count == 1)

        sink.stop()
        let down = await #expect(throws: MailError.self) { try await smtp.send(mail) }
        #expect(down?.permanent == false)
    }

    @Test func badAddressesNeverReachTheServer() async throws {
        let sink = try await SMTPSink.start()
        let mailer = Mailer(from: "noreply@verteilt.test",
                            transport: try SMTPTransport(SMTPConfiguration(url: "smtp://127.0.0.1:\(sink.port)?security=none")))
        for bad in ["not an address", "a@b>\r\nRCPT TO:<evil@x.y", "", "@example.com"] {
            let e = await #expect(throws: MailError.self) { try await mailer.send(to: [bad], subject: "x", text: "y") }
            #expect(e?.permanent == true)
        }
        #expect(sink.mails().isEmpty)
    }

    @Test(arguments: Backend.all)
    func theMailboxKeepsMailsForAdministrators(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let mailbox = Mailbox(db: api.database)
            try await Mailer(from: "noreply@verteilt.test", transport: mailbox)
                .send(to: ["ada@example.com"], subject: "First", text: "one", html: "<p>one</p>")
            try await Mailer(from: "noreply@verteilt.test", transport: mailbox)
                .send(to: ["bob@example.com"], subject: "Second", text: "two")

            let user = try await api.signUp("Mallory")
            #expect(try await api.post("mail/List", token: user.token).status == .forbidden)
            #expect(try await api.post("mail/List").status == .unauthorized)

            let key = try await api.serviceKey()
            let all = try await api.post("mail/List", token: key)
            #expect(all.status == .ok)
            #expect(all["transport"] as? String == "mailbox")
            let mails = try #require(all["mails"] as? [[String: Any]])
            #expect(mails.map { $0["subject"] as? String } == ["Second", "First"])
            #expect(mails[1]["html"] as? String == "<p>one</p>")
            #expect(mails[1]["to"] as? [String] == ["ada@example.com"])

            let bobs = try await api.post("mail/List", ["to": "BOB@example.com"], token: key)
            #expect((bobs["mails"] as? [[String: Any]])?.map { $0["subject"] as? String } == ["Second"])
            let bad = try await api.post("mail/List", ["limit": 0], token: key)
            #expect(bad.status == .badRequest && bad.isErrorShape)
            // The error names the field the caller sent (the admin view shows it there).
            let badTo = try await api.post("mail/List", ["to": "not an address"], token: key)
            #expect(badTo.status == .badRequest && badTo.isErrorShape && badTo.detail.hasPrefix("to: "), "\(badTo.text)")

            // A user with the admin role reads it too (the web app's admin view does).
            try await api.setAdmin(user)
            let asAdmin = try await api.post("mail/List", ["to": "ada@example.com"], token: user.token)
            #expect(asAdmin.status == .ok)
            #expect((asAdmin["mails"] as? [[String: Any]])?.map { $0["subject"] as? String } == ["First"])
        }
    }
}
