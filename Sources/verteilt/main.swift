import App
import ArgumentParser
import Foundation
import Logging
import Storage
import Users

@main
struct VerteiltCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verteilt",
        abstract: "Verteilt: a self-hostable real-time chat server.",
        subcommands: [Serve.self, Worker.self, Migrate.self, Keys.self, Admin.self],
        defaultSubcommand: Serve.self)
}

struct DatabaseOption: ParsableArguments {
    @Option(help: "SQLite file path or postgres://user:pass@host:port/db (env DATABASE_URL; default data/verteilt.sqlite).")
    var database: String?

    func configuration() -> AppConfiguration {
        var config = AppConfiguration()
        config.applyEnvironment()
        if let database { config.databaseURL = database }
        return config
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the server (migrates the database first).")

    @Option(help: "Address to listen on (env VERTEILT_HOST; default 127.0.0.1).") var host: String?
    @Option(help: "Port to listen on (env VERTEILT_PORT; default 8080).") var port: Int?
    @OptionGroup var db: DatabaseOption
    @Option(help: "trace, debug, info, notice, warning, error or critical (env LOG_LEVEL; default info).")
    var logLevel: String?
    @Option(help: "bcrypt cost, 4...31 (env BCRYPT_COST; default 12).") var bcryptCost: UInt8?
    @Option(help: "Largest request body in bytes (default 1048576).") var maxBodySize: Int?
    @Option(help: "Longest message text in characters (default 4000).") var maxTextLength: Int?
    @Flag(help: "Do not run workflow workers in this process (run `verteilt worker` separately).") var noWorkers = false
    @OptionGroup var workers: WorkerOptions

    func run() async throws {
        var config = db.configuration()
        if let host { config.host = host }
        if let port { config.port = port }
        if let logLevel {
            guard let level = Logger.Level(rawValue: logLevel) else { throw ValidationError("unknown log level \(logLevel)") }
            config.logLevel = level
        }
        if let bcryptCost {
            guard (4...31).contains(bcryptCost) else { throw ValidationError("bcrypt cost must be 4...31") }
            config.bcryptCost = bcryptCost
        }
        if let maxBodySize { config.gateway.maxBodySize = maxBodySize }
        if let maxTextLength {
            guard maxTextLength > 0 else { throw ValidationError("max text length must be positive") }
            config.maxTextLength = maxTextLength
        }
        if noWorkers { config.workers.enabled = false }
        try workers.apply(&config)
        let app = try await Verteilt.build(config)
        try await app.application.runService()
    }
}

struct WorkerOptions: ParsableArguments {
    @Option(help: "Workflow runs executed at once by this process (env VERTEILT_WORKERS; default 4).") var workers: Int?
    @Option(help: "SMTP server URL, e.g. smtp://user:pass@host:587 (env VERTEILT_SMTP_URL; default: the development mailbox).")
    var smtpURL: String?
    @Option(help: "Sender of mails (env VERTEILT_MAIL_FROM; default \"Verteilt <noreply@localhost>\").") var mailFrom: String?
    @Option(help: "Base URL of the web app, for links in mails (env VERTEILT_PUBLIC_URL; default http://localhost:PORT).")
    var publicURL: String?
    @Option(help: "Seconds a request may take before it gets 504 (env VERTEILT_REQUEST_TIMEOUT; default 10). Give `verteilt worker` the servers' value: removal runs wait it out before they look again for late writes.")
    var requestTimeout: Double?

    func apply(_ config: inout AppConfiguration) throws {
        if let requestTimeout {
            guard let timeout = AppConfiguration.seconds(requestTimeout) else {
                throw ValidationError("request timeout must be a positive number of seconds, at most a year")
            }
            config.gateway.requestTimeout = timeout
        }
        if let workers {
            guard workers > 0 else { throw ValidationError("workers must be positive") }
            config.workers.engine.workers = workers
        }
        if let smtpURL { config.mail.smtpURL = smtpURL }
        if let mailFrom { config.mail.from = mailFrom }
        if let publicURL { config.mail.publicURL = publicURL }
    }
}

struct Worker: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run only the workflow workers (durable functions, emails), without the HTTP server.")
    @OptionGroup var db: DatabaseOption
    @OptionGroup var workers: WorkerOptions
    @Option(help: "trace, debug, info, notice, warning, error or critical (env LOG_LEVEL; default info).")
    var logLevel: String?

    func run() async throws {
        var config = db.configuration()
        try workers.apply(&config)
        if let logLevel {
            guard let level = Logger.Level(rawValue: logLevel) else { throw ValidationError("unknown log level \(logLevel)") }
            config.logLevel = level
        }
        try await Verteilt.runWorker(config)
    }
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create or upgrade the database schema, then exit.")
    @OptionGroup var db: DatabaseOption

    func run() async throws {
        let url = db.configuration().databaseURL
        let applied = try await withDatabase(url: url, logger: Logger(label: "verteilt")) { db in
            try await Migrator.migrate(db, Verteilt.migrations)
        }
        print(applied.isEmpty ? "up to date" : "applied: " + applied.joined(separator: ", "))
    }
}

struct Keys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Service keys: trusted backends that may act for any user.",
        subcommands: [Create.self, Revoke.self, List.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a key and print it (shown only once).")
        @Argument var name: String
        @OptionGroup var db: DatabaseOption
        func run() async throws {
            let name = self.name
            let key = try await withKeys(db) { try await $0.create(name: name) }
            print(key)
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke the active key with this name.")
        @Argument var name: String
        @OptionGroup var db: DatabaseOption
        func run() async throws {
            let name = self.name
            guard try await withKeys(db, { try await $0.revoke(name: name) }) else {
                throw ValidationError("no active key named \(name)")
            }
            print("revoked \(name)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List active keys.")
        @OptionGroup var db: DatabaseOption
        func run() async throws {
            let keys = try await withKeys(db) { try await $0.list().map { "\($0.name)\t\($0.createdAt)" } }
            for k in keys { print(k) }
        }
    }
}

struct Admin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Give or take the admin role.", subcommands: [Grant.self, Remove.self])

    struct Grant: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Make the account with this email an admin.")
        @Argument var email: String
        @OptionGroup var db: DatabaseOption
        func run() async throws {
            let email = self.email
            guard try await withKeys(db, { try await $0.setAdmin(email: email, true) }) else {
                throw ValidationError("no account with email \(email)")
            }
            print("\(email) is an admin")
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "revoke", abstract: "Take the admin role away.")
        @Argument var email: String
        @OptionGroup var db: DatabaseOption
        func run() async throws {
            let email = self.email
            guard try await withKeys(db, { try await $0.setAdmin(email: email, false) }) else {
                throw ValidationError("no account with email \(email)")
            }
            print("\(email) is no longer an admin")
        }
    }
}

/// Opens the database, migrates it, and hands the key administration to `body`.
func withKeys<T: Sendable>(_ db: DatabaseOption, _ body: @Sendable @escaping (ServiceKeys) async throws -> T) async throws -> T {
    try await withDatabase(url: db.configuration().databaseURL, logger: Logger(label: "verteilt")) { database in
        try await Migrator.migrate(database, Verteilt.migrations)
        return try await body(ServiceKeys(db: database))
    }
}
