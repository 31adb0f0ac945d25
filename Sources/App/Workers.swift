import Chats
import Codes
import Emails
import Foundation
import Groups
import Invites
import Logging
import Mail
import Seen
import ServiceLifecycle
import Storage
import Threads
import Users
import Workflows

/// Mail settings: SMTP when a URL is given, else the development mailbox.
public struct MailSettings: Sendable {
    /// `smtp://user:pass@host:587` (STARTTLS), `smtps://...` or `?security=none`; nil keeps mails
    /// in the development mailbox (`/v1/mail/List`).
    public var smtpURL: String?
    public var from = "Verteilt <noreply@localhost>"
    /// Where people open the web app; links in mails start with it. Without one, the address
    /// this server listens on (right for a newcomer's `serve`; set it behind a proxy).
    public var publicURL: String?
    /// How long a chat message or a mention may stay unread before its recipient gets the unread digest.
    public var digestDelay: Duration = .seconds(600)
    /// Whether chat messages and mentions start unread-digest runs (which log an internal event per recipient).
    public var unreadDigest = true
    /// How a mail that failed to send is retried.
    public var retryBackoff = Backoff(base: .seconds(5), max: .seconds(600))
    public init() {}
}

/// Workers: whether this process runs them, and how.
public struct WorkerSettings: Sendable {
    /// `verteilt serve --no-workers` turns this off (a separate `verteilt worker` runs them).
    public var enabled = true
    public var engine = WorkflowEngine.Configuration()
    /// How long a removal run waits before it looks again for what requests let through just
    /// before the deletion wrote after it (a conversation in a deleted group, a read mark of a
    /// deleted conversation). Nil: the request timeout and five seconds, past which no such
    /// request commits. A separate `verteilt worker` takes the servers' `--request-timeout`.
    public var lateWritesSettle: Duration?
    public init() {}
}

extension Verteilt {
    static func mailTransport(_ config: AppConfiguration, db: any Database) throws -> any MailTransport {
        guard let url = config.mail.smtpURL, !url.isEmpty else { return Mailbox(db: db) }
        return try SMTPTransport(SMTPConfiguration(url: url))
    }

    /// Every durable function the product runs.
    static func workflowFunctions(
        _ config: AppConfiguration, db: any Database, mailer: Mailer, groups: any GroupsClient, users: any UsersClient,
        threads: any ThreadsClient, chats: any ChatsClient, seen: any SeenClient, invites: any InvitesClient
    ) -> [WorkflowFunction] {
        let settings = EmailSettings(publicURL: config.publicURL)
        let invite = InviteEmail.function(
            mailer: mailer, groups: groups, users: users, settings: settings, backoff: config.mail.retryBackoff)
        let account = AccountEmails.functions(
            mailer: mailer, users: users, codes: CodesService(db: db), settings: settings, backoff: config.mail.retryBackoff)
        let settle = config.workers.lateWritesSettle ?? config.gateway.requestTimeout + .seconds(5)
        let removals = [
            accountRemoval(groups: groups, seen: seen, settle: settle),
            groupRemoval(threads: threads, seen: seen, invites: invites, settle: settle),
            conversationRemoval(seen: seen, settle: settle),
        ]
        let always = [invite] + removals + account
        guard config.mail.unreadDigest else { return always }
        let clients = UnreadDigest.Clients(chats: chats, threads: threads, groups: groups, seen: seen, users: users)
        return always + UnreadDigest.functions(
            db: db, mailer: mailer, clients: clients, settings: settings, delay: config.mail.digestDelay)
    }

    /// `group.deleted`: its conversations and their messages go too, and with them the read marks
    /// and invites that pointed at it (each service's own). A request that found the group just
    /// before it went may still add to it; once every such request has ended, all is done again.
    static func groupRemoval(
        threads: any ThreadsClient, seen: any SeenClient, invites: any InvitesClient, settle: Duration
    ) -> WorkflowFunction {
        WorkflowFunction("group-removal", on: Logged<GroupDeleted>.self, retries: 8, idempotencyKey: { $0.payload.id }) { event, step in
            let group = event.payload.id
            // Which conversations, before they go: a retried removal would no longer list them.
            let ids = try await step.run("conversation-ids") { try await threads.conversations(inGroup: group).map(\.id) }
            try await step.run("invites") { try await invites.removeGroup(group) }
            try await step.run("read-marks") { try await seen.forget(type: .thread, ids: ids) }
            try await step.run("conversations") { try await threads.removeGroup(group) }
            try await step.sleep("requests-under-way", for: settle)
            let late = try await step.run("late-conversation-ids") { try await threads.conversations(inGroup: group).map(\.id) }
            try await step.run("late-invites") { try await invites.removeGroup(group) }
            try await step.run("late-read-marks") { try await seen.forget(type: .thread, ids: ids + late) }
            try await step.run("late-conversations") { try await threads.removeGroup(group) }
        }
    }

    /// `conversation.deleted`: everyone's read marks of it go, again once the requests that
    /// found it just before it went have ended.
    static func conversationRemoval(seen: any SeenClient, settle: Duration) -> WorkflowFunction {
        WorkflowFunction(
            "conversation-removal", on: Logged<ConversationDeleted>.self, retries: 8, idempotencyKey: { $0.payload.id }
        ) { event, step in
            let ids = [event.payload.id]
            try await step.run("read-marks") { try await seen.forget(type: .thread, ids: ids) }
            try await step.sleep("requests-under-way", for: settle)
            try await step.run("late-read-marks") { try await seen.forget(type: .thread, ids: ids) }
        }
    }

    /// `user.deleted`: the account leaves its groups, its owned ones passing to someone else, and
    /// its read marks go; again once the requests it had under way have ended (a group it was
    /// creating, a read mark it was setting). A durable run, not part of the deletion: the users
    /// service does not reach into other services' tables, and a failure here is retried rather
    /// than undoing the deletion.
    static func accountRemoval(groups: any GroupsClient, seen: any SeenClient, settle: Duration) -> WorkflowFunction {
        WorkflowFunction("account-removal", on: Logged<UserDeleted>.self, retries: 8, idempotencyKey: { $0.payload.id }) { event, step in
            try await step.run("leave-groups") { try await groups.removeAccount(event.payload.id) }
            try await step.run("read-marks") { try await seen.forget(user: event.payload.id) }
            try await step.sleep("requests-under-way", for: settle)
            try await step.run("late-leave-groups") { try await groups.removeAccount(event.payload.id) }
            try await step.run("late-read-marks") { try await seen.forget(user: event.payload.id) }
        }
    }

    /// `verteilt worker`: the workflow engine without the HTTP server, until SIGINT or SIGTERM.
    public static func runWorker(_ config: AppConfiguration, logger: Logger? = nil) async throws {
        var logger = logger ?? Logger(label: "verteilt-worker")
        logger.logLevel = config.logLevel
        let db = try await DatabaseFactory.open(url: config.databaseURL, logger: logger)
        let hasher = PasswordHasher(cost: config.bcryptCost)
        let directory = UsersService(db: db, hasher: hasher, config: config.users)
        let groups = GroupsService(db: db, users: directory)
        let threads = ThreadsService(db: db, groups: groups, users: directory, maxTextLength: config.maxTextLength)
        let chats = ChatsService(db: db, groups: groups, maxTextLength: config.maxTextLength)
        let seen = SeenService(db: db, groups: groups, threads: threads, chats: chats)
        let invites = InvitesService(db: db, groups: groups, users: directory)
        let mailer = Mailer(from: config.mail.from, transport: try mailTransport(config, db: db))
        let engine = WorkflowEngine(
            db: db, functions: workflowFunctions(
                config, db: db, mailer: mailer, groups: groups, users: directory, threads: threads, chats: chats, seen: seen,
                invites: invites),
            configuration: config.workers.engine, logger: logger)
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: db.lifecycle), .init(service: hasher), .init(service: engine)],
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            tasks.addTask {
                // Migrate once the database's pool runs, then let the engine start.
                try await Migrator.migrate(db, Self.migrations)
                try await engine.prepare()
            }
            try await tasks.waitForAll()
        }
    }
}
