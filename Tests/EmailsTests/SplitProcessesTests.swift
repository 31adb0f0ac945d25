import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

@Suite("emails: workers in their own process", .serialized)
struct SplitProcessesTests {
    /// `verteilt serve --no-workers` runs no functions; a `verteilt worker` beside it on the same
    /// database does.
    @Test(arguments: Backend.all)
    func aSeparateWorkerSendsWhatTheServerLogged(_ backend: Backend) async throws {
        let db = try await TestDatabase.make(backend)
        let sink = try await SMTPSink.start()
        let smtp = "smtp://127.0.0.1:\(sink.port)?security=none"
        let server = ServerProcess(database: db.url)
        server.arguments = ["--no-workers", "--smtp-url", smtp]
        var worker: Process?
        do {
            try await server.start()
            let ada = try await ProcessUser.signUp(server, "Ada")
            let group = try await server.post("groups/Create", ["name": "Friends"], token: ada.token)
            let groupID = try #require((group["group"] as? [String: Any])?["id"] as? String)
            _ = try await server.post("invites/Create", ["group_id": groupID, "email": "zoe@example.com"], token: ada.token)
            try await Task.sleep(for: .seconds(1.5))
            #expect(sink.mails(to: "zoe@example.com").isEmpty, "the server runs no workers")

            let p = Process()
            p.executableURL = URL(fileURLWithPath: ServerProcess.binary)
            p.arguments = ["worker", "--database", db.url, "--smtp-url", smtp, "--log-level", "warning"]
            var env = ProcessInfo.processInfo.environment
            env["DATABASE_URL"] = nil
            p.environment = env
            p.standardOutput = FileHandle.nullDevice
            try p.run()
            worker = p
            try await eventually("the worker sent the mail") { sink.mails(to: "zoe@example.com").count == 1 }
            #expect(sink.mails(to: "zoe@example.com").first?["rcpt_tos"] as? [String] == ["zoe@example.com"])
            // SIGTERM: the worker shuts down gracefully.
            p.terminate()
            p.waitUntilExit()
            #expect(p.terminationReason == .exit)
            worker = nil
            server.stop()
            try await db.drop()
        } catch {
            if let worker { kill(worker.processIdentifier, SIGKILL) }
            server.stop()
            try? await db.drop()
            throw error
        }
    }
}
