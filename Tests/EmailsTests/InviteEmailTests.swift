import App
import Foundation
import HTTPTypes
import Storage
import Testing
import TestSupport
import Users
import Workflows

/// A server whose mail goes to `sink` and whose workers poll fast and retry quickly.
func mailingApp(_ sink: SMTPSink) -> @Sendable (inout AppConfiguration) -> Void {
    { config in
        config.mail.smtpURL = "smtp://127.0.0.1:\(sink.port)?security=none"
        config.mail.from = "Verteilt <noreply@chat.example.org>"
        config.mail.publicURL = "https://chat.example.org/"
        config.mail.retryBackoff = Backoff(base: .milliseconds(200), max: .milliseconds(400))
        config.workers.enabled = true
        config.workers.engine.pollInterval = .milliseconds(100)
    }
}

extension APIClient {
    func invite(_ email: String, to group: String, by admin: Account) async throws -> [String: Any] {
        let r = try await post("invites/Create", ["group_id": group, "email": email], token: admin.token)
        guard r.status == .ok, let invite = r["invite"] as? [String: Any] else {
            throw ServerProcessError(description: "invites/Create: \(r.status) \(r.text)")
        }
        return invite
    }

}

@Suite("emails: the invite email through a real SMTP server")
struct InviteEmailTests {
    @Test(arguments: Backend.all)
    func theInviteEmailArrivesWithTheRightLink(_ backend: Backend) async throws {
        let sink = try await SMTPSink.start()
        try await withTestApp(backend, configure: mailingApp(sink)) { api in
            let owner = try await api.signUp("Ada")
            let group = try await api.createGroup(owner, name: "Analytical <Engines>")
            let invite = try await api.invite("carol@example.com", to: group, by: owner)
            let code = try #require(invite["code"] as? String)
            // An open link has no one to mail.
            _ = try await api.post("invites/Create", ["group_id": group], token: owner.token)

            try await eventually("the mail") { sink.mails(to: "carol@example.com").count == 1 }
            let mail = sink.mails(to: "carol@example.com")[0]
            #expect(mail["rcpt_tos"] as? [String] == ["carol@example.com"])
            #expect(mail["mail_from"] as? String == "noreply@chat.example.org")
            #expect(mail["subject"] as? String == "Ada User invited you to Analytical <Engines>")
            let link = "https://chat.example.org/invite/\(code)"
            let text = try #require(mail["text"] as? String)
            #expect(text.contains(link))
            #expect(text.contains("Ada User invited you to join the group \"Analytical <Engines>\""))
            let html = try #require(mail["html"] as? String)
            #expect(html.contains("<a href=\"\(link)\">"))
            #expect(html.contains("Analytical &lt;Engines&gt;"))
            #expect(!html.contains("<Engines>"))

            // The link works: Carol signs up with that address and joins with the code.
            let carol = try await api.signUp("Carol", email: "carol@example.com")
            let joined = try await api.post("invites/Accept", ["code": code], token: carol.token)
            #expect(joined.status == .ok)
            try await Task.sleep(for: .milliseconds(300))
            // One invitation; Carol's sign-up got its own verification mail.
            #expect(sink.mails(to: "carol@example.com").filter { ($0["subject"] as? String)?.contains("invited") == true }.count == 1)
        }
    }

    @Test(arguments: Backend.all)
    func aFailingMailServerIsRetriedUntilItTakesTheMail(_ backend: Backend) async throws {
        let sink = try await SMTPSink.start()
        sink.setFailing(true)
        try await withTestApp(backend, configure: mailingApp(sink)) { api in
            let owner = try await api.signUp("Ada")
            let group = try await api.createGroup(owner)
            let invite = try await api.invite("dave@example.com", to: group, by: owner)
            let key = try await api.serviceKey()
            // The run, once the dispatcher has started it.
            func run() async throws -> [String: Any] {
                let list = try await api.post("workflows/ListRuns", ["function_id": "invite-email"], token: key)
                guard let id = (list["runs"] as? [[String: Any]])?.first?["id"] as? String else { return [:] }
                return try await api.post("workflows/ReadRun", ["id": id], token: key).json
            }
            try await eventually("two failed attempts") {
                ((try await run()["attempts"] as? [[String: Any]]) ?? []).filter { $0["outcome"] as? String == "retry" }.count >= 2
            }
            #expect(sink.mails(to: "dave@example.com").isEmpty)
            sink.setFailing(false)
            try await eventually("the mail") { sink.mails(to: "dave@example.com").count == 1 }
            try await eventually("completed") { (try await run()["run"] as? [String: Any])?["status"] as? String == "completed" }
            let read = try await run()
            let steps = try #require(read["steps"] as? [[String: Any]])
            #expect(steps.map { $0["name"] as? String } == ["render", "send"])
            // Rendered once, sent after failures that are kept for inspection.
            #expect(steps[0]["failures"] as? Int == 0)
            #expect((steps[1]["failures"] as? Int ?? 0) >= 2)
            #expect((steps[1]["error"] as? String)?.contains("451") == true)
            #expect((steps[0]["output"] as? [String: Any])?["subject"] as? String == "Ada User invited you to Friends")
            let attempts = try #require(read["attempts"] as? [[String: Any]])
            #expect(attempts.last?["outcome"] as? String == "completed")
            #expect((read["run"] as? [String: Any])?["event"].flatMap { ($0 as? [String: Any])?["code"] as? String }
                    == invite["code"] as? String)
        }
    }

    @Test(arguments: Backend.all)
    func listRunsPagesThroughRunsOfTheSameMillisecondOnce(_ backend: Backend) async throws {
        try await withTestApp(backend, configure: { config in
            config.workers.enabled = true
            config.workers.engine.pollInterval = .milliseconds(100)
        }) { api in
            let owner = try await api.signUp("Ada")
            let group = try await api.createGroup(owner)
            // Invites made back to back: the dispatcher starts their runs in one transaction,
            // with one creation time.
            for i in 0..<12 { _ = try await api.invite("guest\(i)@example.com", to: group, by: owner) }
            let key = try await api.serviceKey()
            var all: [String] = []
            try await eventually("twelve runs") {
                let r = try await api.post("workflows/ListRuns", ["function_id": "invite-email", "limit": 500], token: key)
                all = ((r["runs"] as? [[String: Any]]) ?? []).compactMap { $0["id"] as? String }
                return all.count == 12
            }
            var paged: [String] = []
            var body: [String: Any] = ["function_id": "invite-email", "limit": 5]
            while true {
                let page = (try await api.post("workflows/ListRuns", body, token: key)["runs"] as? [[String: Any]]) ?? []
                if page.isEmpty { break }
                paged += page.compactMap { $0["id"] as? String }
                body["created_before"] = page.last?["created_at"]
                body["before_id"] = page.last?["id"]
                try #require(paged.count <= 12, "pages repeat runs")
            }
            #expect(paged == all, "every run once, in the same order as one big page")
            let bad = try await api.post("workflows/ListRuns", ["created_before": "2026-01-01T00:00:00.000Z", "before_id": 5], token: key)
            #expect(bad.status == .badRequest && bad.isErrorShape)
        }
    }

    @Test(arguments: Backend.all)
    func administratorsInspectRetryAndCancelRuns(_ backend: Backend) async throws {
        let sink = try await SMTPSink.start()
        sink.setRejecting(true)
        try await withTestApp(backend, configure: { config in
            mailingApp(sink)(&config)
            // A failed send waits long for its retry: the run to cancel is certainly not running.
            config.mail.retryBackoff = Backoff(base: .seconds(60), max: .seconds(60))
        }) { api in
            let owner = try await api.signUp("Ada")
            let group = try await api.createGroup(owner)
            _ = try await api.invite("nobody@example.com", to: group, by: owner)
            let admin = try await api.signUp("Root")
            _ = try await ServiceKeys(db: api.database).setAdmin(email: admin.email, true)
            let root = try await api.post("users/Login", ["email": admin.email, "password": admin.password])
            let token = try #require(root["token"] as? String)

            // Only administrators.
            #expect(try await api.post("workflows/ListRuns", token: owner.token).status == .forbidden)
            #expect(try await api.post("workflows/ListRuns").status == .unauthorized)

            // A permanent refusal (550) is not retried: the run fails at once and is kept.
            var failed: [String: Any] = [:]
            try await eventually("the run failed") {
                let r = try await api.post("workflows/ListRuns", ["status": "failed", "function_id": "invite-email"], token: token)
                failed = (r["runs"] as? [[String: Any]])?.first ?? [:]
                return !failed.isEmpty
            }
            let id = try #require(failed["id"] as? String)
            #expect((failed["error"] as? String)?.contains("550") == true)
            #expect(failed["attempts"] as? Int == 1)

            // Retried once the address exists: the stored rendering is reused, the mail goes out.
            sink.setRejecting(false)
            let retried = try await api.post("workflows/RetryRun", ["id": id], token: token)
            #expect(retried.status == .ok)
            try await eventually("the mail") { sink.mails(to: "nobody@example.com").count == 1 }
            try await eventually("completed") {
                (try await api.post("workflows/ReadRun", ["id": id], token: token)["run"] as? [String: Any])?["status"] as? String == "completed"
            }
            let again = try await api.post("workflows/RetryRun", ["id": id], token: token)
            #expect(again.status == .conflict && again.isErrorShape)
            let cancel = try await api.post("workflows/CancelRun", ["id": id], token: token)
            #expect(cancel.status == .conflict && cancel.isErrorShape)
            let missing = try await api.post("workflows/ReadRun", ["id": "no-such-run"], token: token)
            #expect(missing.status == .notFound && missing.isErrorShape)
            let bad = try await api.post("workflows/ListRuns", ["status": "exploded"], token: token)
            #expect(bad.status == .badRequest && bad.isErrorShape)
            let wrongType = try await api.post("workflows/ReadRun", ["id": 42], token: token)
            #expect(wrongType.status == .badRequest && wrongType.isErrorShape)

            // Cancelling a run that has not finished: one waiting for its retry.
            sink.setFailing(true)
            _ = try await api.invite("erin@example.com", to: group, by: owner)
            var pending = ""
            try await eventually("a run waiting to retry") {
                let r = try await api.post("workflows/ListRuns", ["status": "queued", "function_id": "invite-email"], token: token)
                let run = (r["runs"] as? [[String: Any]])?.first
                pending = (run?["id"] as? String) ?? ""
                return !pending.isEmpty && (run?["attempts"] as? Int ?? 0) >= 1
            }
            let cancelled = try await api.post("workflows/CancelRun", ["id": pending], token: token)
            #expect(cancelled.status == .ok)
            #expect((cancelled["run"] as? [String: Any])?["status"] as? String == "cancelled")
            sink.setFailing(false)
            try await Task.sleep(for: .milliseconds(800))
            #expect(sink.mails(to: "erin@example.com").isEmpty, "the cancelled run sent nothing")
        }
    }
}
