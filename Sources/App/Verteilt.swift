import Chats
import Codes
import Emails
import Foundation
import Gateway
import Groups
import Hummingbird
import Invites
import Logging
import Mail
import HummingbirdWebSocket
import Pages
import Realtime
import Seen
import ServiceLifecycle
import ServiceKit
import Storage
import Threads
import Users
import Web
import Workflows

/// The composition root: one database, the services on it, the gateway in front of them.
public struct Verteilt: Sendable {
    public let application: Application<RouterResponder<GatewayContext>>
    public let database: any Database
    public let bus: EventBus
    public let workflows: WorkflowEngine

    /// Every service's migrations, in dependency order.
    public static let migrations: [Migration] = UsersService.migrations + CodesService.migrations
        + GroupsService.migrations + InvitesService.migrations + ThreadsService.migrations + ChatsService.migrations
        + SeenService.migrations + StreamsService.migrations + WorkflowEngine.migrations + Mailbox.migrations
        + UnreadDigest.migrations

    public static func build(_ config: AppConfiguration, logger: Logger? = nil) async throws -> Verteilt {
        var logger = logger ?? Logger(label: "verteilt")
        logger.logLevel = config.logLevel
        // The web app's files first: a missing file is an error before the database is opened.
        let web = try WebApp(configuration: config.web, limits: .init(
            maxTextLength: config.maxTextLength, maxBodySize: config.gateway.maxBodySize))
        let db = try await DatabaseFactory.open(url: config.databaseURL, logger: logger)
        let hasher = PasswordHasher(cost: config.bcryptCost)
        // Groups need to look users up; users need groups to decide whose email a user may see.
        let directory = UsersService(db: db, hasher: hasher, config: config.users)
        let groups = GroupsService(db: db, users: directory)
        let users = UsersService(db: db, hasher: hasher, config: config.users) { viewer, others in
            try await groups.coMembers(of: viewer, among: others)
        }
        let threads = ThreadsService(db: db, groups: groups, users: directory, maxTextLength: config.maxTextLength)
        let chats = ChatsService(db: db, groups: groups, maxTextLength: config.maxTextLength)
        let seen = SeenService(db: db, groups: groups, threads: threads, chats: chats)
        let invites = InvitesService(db: db, groups: groups, users: directory)
        let bus = EventBus(
            db: db, capacity: config.realtime.window, capacityBytes: config.realtime.windowBytes,
            retention: config.eventRetention, heartbeat: config.realtime.heartbeat, logger: logger)
        let presence = Presence(
            db: db, bus: bus, groups: groups, grace: config.presenceGrace, heartbeat: config.presenceHeartbeat, logger: logger)
        let streams = StreamsService(
            db: db, groups: groups, chats: chats, presence: presence, tokenLifetime: config.realtime.tokenLifetime)
        let transport = try mailTransport(config, db: db)
        let mailer = Mailer(from: config.mail.from, transport: transport)
        let workflows = WorkflowEngine(
            db: db, functions: workflowFunctions(
                config, db: db, mailer: mailer, groups: groups, users: directory, threads: threads, chats: chats, seen: seen,
                invites: invites),
            configuration: config.workers.engine, logger: logger)
        let registry = ServiceRegistry([
            users, CodesService(db: db), groups, invites, threads, chats, seen, streams,
            WorkflowsService(db: db), MailService(db: db, transport: transport),
        ])
        let pages = GroupPageBuilder(db: db, users: directory, groups: groups, threads: threads, chats: chats, seen: seen)
        let gateway = Gateway(registry: registry, authenticator: users.authenticator, config: config.gateway)
        let realtime = RealtimeGateway(
            gateway: gateway, bus: bus, streams: streams, groups: groups, chats: chats, threads: threads,
            presence: presence, limits: config.realtime)

        let router = Router(context: GatewayContext.self)
        router.add(middleware: RequestIDMiddleware())
        router.add(middleware: CompressionMiddleware())
        gateway.addRoutes(to: router)
        realtime.addRoutes(to: router)
        gateway.page("/api/groups/:id", on: router) { request, context, caller in
            let id = try Validate.id(context.parameters.get("id") ?? "", field: "id")
            let parts = try GroupPageBuilder.parts(request.uri.queryParameters.get("fields"))
            return try await pages.page(groupID: id, caller: caller, parts: parts)
        }
        web.addRoutes(to: router, gateway: gateway, users: directory)
        router.get("/healthz") { _, _ in ["status": "ok"] }
        router.get("/readyz") { _, _ -> [String: String] in
            do {
                try await db.read { try await $0.query("SELECT 1 AS one") }
            } catch {
                throw ServiceError(.serviceUnavailable, "database unreachable")
            }
            return ["status": "ok"]
        }

        // Shut down in reverse: the workers, bus and presence stop before the database closes.
        var services: [any Service] = [db.lifecycle, bus, presence, hasher]
        if config.workers.enabled { services.append(workflows) }
        var app = Application(
            router: router,
            server: .http1WebSocketUpgrade(
                // Heartbeats come from the bus (one timer for all live feeds) and from each
                // streams/Subscribe socket: an auto-ping task per socket costs 3 KiB each.
                configuration: .init(ws: .init(maxFrameSize: 1 << 16, autoPing: .disabled)),
                shouldUpgrade: realtime.shouldUpgrade),
            configuration: .init(address: .hostname(config.host, port: config.port), serverName: "verteilt"),
            services: services,
            logger: logger)
        let log = logger
        app.beforeServerStarts {
            let applied = try await Migrator.migrate(db, Self.migrations)
            if !applied.isEmpty { log.info("migrated", metadata: ["applied": .string(applied.joined(separator: ", "))]) }
            try await bus.prepare()
            if config.workers.enabled { try await workflows.prepare() }
        }
        return Verteilt(application: app, database: db, bus: bus, workflows: workflows)
    }
}
