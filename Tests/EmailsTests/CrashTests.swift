import Foundation
import Logging
import Storage
import Testing
import TestSupport

/// The run as the database holds it: its status and when its `render` step finished.
func inviteRun(_ url: String) async throws -> (status: String, attempts: Int, renderedAt: Int64?)? {
    var logger = Logger(label: "crash-test")
    logger.logLevel = .critical
    return try await withDatabase(url: url, logger: logger) { db in
        try await db.read { conn -> (String, Int, Int64?)? in
            guard let run = try await conn.first(
                "SELECT id, status, attempts FROM workflow_runs WHERE function_id = 'invite-email'") else { return nil }
            let render = try await conn.first(
                "SELECT finished_at FROM workflow_steps WHERE run_id = $1 AND name = 'render' AND status = 'completed'",
                try run.string("id"))
            return (try run.string("status"), Int(try run.int("attempts")), try render?.int("finished_at"))
        }
    }
}

@Suite("emails: a server killed in the middle of a run", .serialized)
struct CrashTests {
    /// kill -9 while the invite email is being sent (the SMTP server stalls it), restart: the run
    /// continues from its last finished step (the rendering is not done again) and the mail
    /// arrives once.
    @Test(arguments: Backend.all)
    func aKilledServerResumesTheRunFromItsLastFinishedStep(_ backend: Backend) async throws {
        let db = try await TestDatabase.make(backend)
        let sink = try await SMTPSink.start()
        sink.setHanging(true)
        func server() -> ServerProcess {
            let s = ServerProcess(database: db.url)
            s.arguments = ["--smtp-url", "smtp://127.0.0.1:\(sink.port)?security=none", "--public-url", "https://chat.example.org"]
            // A node that dies stops renewing its lease; on PostgreSQL another (or the restarted) one takes over after it.
            s.environment = ["VERTEILT_WORKFLOW_LEASE": "2"]
            return s
        }
        do {
            let first = server()
            try await first.start()
            let ada = try await ProcessUser.signUp(first, "Ada")
            let group = try await first.post("groups/Create", ["name": "Friends"], token: ada.token)
            let groupID = try #require((group["group"] as? [String: Any])?["id"] as? String)
            let invite = try await first.post("invites/Create", ["group_id": groupID, "email": "zoe@example.com"], token: ada.token)
            let code = try #require((invite["invite"] as? [String: Any])?["code"] as? String)

            var renderedAt: Int64 = 0
            try await eventually("the render step finished and the send began") {
                guard let run = try await inviteRun(db.url), run.status == "running", let at = run.renderedAt else { return false }
                renderedAt = at
                return true
            }
            try await Task.sleep(for: .milliseconds(300))
            first.kill9()
            #expect(try await inviteRun(db.url)?.status == "running")
            #expect(sink.mails(to: "zoe@example.com").isEmpty)

            sink.setHanging(false)
            let second = server()
            try await second.start()
            try await eventually("the mail after the restart") { sink.mails(to: "zoe@example.com").count == 1 }
            try await eventually("the run completed") { try await inviteRun(db.url)?.status == "completed" }
            let after = try #require(try await inviteRun(db.url))
            #expect(after.renderedAt == renderedAt, "the finished step was not run again")
            #expect(after.attempts == 2)
            let text = try #require(sink.mails(to: "zoe@example.com").first?["text"] as? String)
            #expect(text.contains("https://chat.example.org/invite/\(code)"))
            try await Task.sleep(for: .milliseconds(500))
            #expect(sink.mails(to: "zoe@example.com").count == 1)
            second.stop()
            try await db.drop()
        } catch {
            try? await db.drop()
            throw error
        }
    }
}
