import Codes
import Foundation
import Gateway
import Hummingbird
import Logging
import ServiceKit
import Storage
import Users

/// The composition root: one database, the services on it, the gateway in front of them.
public struct Verteilt: Sendable {
    public let application: Application<RouterResponder<GatewayContext>>
    public let database: any Database

    /// Every service's migrations, in dependency order.
    public static let migrations: [Migration] = UsersService.migrations + CodesService.migrations

    public static func build(_ config: AppConfiguration, logger: Logger? = nil) async throws -> Verteilt {
        var logger = logger ?? Logger(label: "verteilt")
        logger.logLevel = config.logLevel
        let db = try await DatabaseFactory.open(url: config.databaseURL, logger: logger)
        let hasher = PasswordHasher(cost: config.bcryptCost)
        let users = UsersService(db: db, hasher: hasher, config: config.users)
        let registry = ServiceRegistry([users, CodesService(db: db)])
        let gateway = Gateway(registry: registry, authenticator: users.authenticator, config: config.gateway)

        let router = Router(context: GatewayContext.self)
        router.add(middleware: RequestIDMiddleware())
        gateway.addRoutes(to: router)
        router.get("/healthz") { _, _ in ["status": "ok"] }
        router.get("/readyz") { _, _ -> [String: String] in
            do {
                try await db.read { try await $0.query("SELECT 1 AS one") }
            } catch {
                throw ServiceError(.serviceUnavailable, "database unreachable")
            }
            return ["status": "ok"]
        }

        var app = Application(
            router: router,
            configuration: .init(address: .hostname(config.host, port: config.port), serverName: "verteilt"),
            services: [db.lifecycle],
            logger: logger)
        let log = logger
        app.beforeServerStarts {
            let applied = try await Migrator.migrate(db, Self.migrations)
            if !applied.isEmpty { log.info("migrated", metadata: ["applied": .string(applied.joined(separator: ", "))]) }
        }
        return Verteilt(application: app, database: db)
    }
}
