import Logging
import ServiceLifecycle
import Testing
import Users

@Suite("users: the password hasher's threads")
struct PasswordHasherTests {
    /// Its threads stop with the service group: a process whose `main` returns with threads left
    /// running may never end (a test run with 200 apps hung that way).
    @Test func gracefulShutdownStopsItsThreads() async throws {
        let hasher = PasswordHasher(cost: 4)
        let hash = try await hasher.hash("correct horse")
        #expect(try await hasher.verify("correct horse", hash: hash))
        #expect(try await !hasher.verify("wrong", hash: hash))

        let group = ServiceGroup(configuration: .init(services: [.init(service: hasher)], logger: Logger(label: "test")))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        // Stopped threads take no more work: the call fails at once instead of waiting forever.
        await #expect(throws: (any Error).self) { try await hasher.hash("after") }
    }
}
