import Foundation
import HummingbirdBcrypt
import NIOPosix
import ServiceKit
import ServiceLifecycle

/// bcrypt on threads of its own: a hash takes ~0.25 s at cost 12 and must not block event loops
/// or starve the database threads. As a service it stops its threads at graceful shutdown (a
/// process that returns from `main` with threads left running may not end).
public final class PasswordHasher: Service, Sendable {
    let cost: UInt8
    private let pool: NIOThreadPool
    /// A hash of a random password at the same cost: verifying against it makes a login for an
    /// unknown account take as long as one for a known account.
    private let decoy: String

    public init(cost: UInt8, threads: Int = 2) {
        self.cost = cost
        self.pool = NIOThreadPool(numberOfThreads: threads)
        pool.start()
        self.decoy = Bcrypt.hash(Secrets.token(), cost: cost)
    }

    public func hash(_ password: String) async throws -> String {
        let cost = self.cost
        return try await pool.runIfActive { Bcrypt.hash(password, cost: cost) }
    }

    public func verify(_ password: String, hash: String?) async throws -> Bool {
        let target = hash ?? decoy
        let ok = try await pool.runIfActive { Bcrypt.verify(password, hash: target) }
        return ok && hash != nil
    }

    /// Runs until graceful shutdown, then lets the hashes in progress finish and stops the threads.
    public func run() async throws {
        try? await gracefulShutdown()
        try await pool.shutdownGracefully()
    }
}
