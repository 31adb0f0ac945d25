import Foundation
import Gateway
import Logging
import ServiceKit
import Realtime
import Users
import Web

/// Everything `verteilt serve` can be told; defaults are what a newcomer gets.
public struct AppConfiguration: Sendable {
    public var host = "127.0.0.1"
    public var port = 8080
    /// A SQLite file path, or `postgres://user:pass@host:port/db`.
    public var databaseURL = "data/verteilt.sqlite"
    public var logLevel: Logger.Level = .info
    /// bcrypt work factor (4...31); 12 takes about a quarter second per hash.
    public var bcryptCost: UInt8 = 12
    public var gateway = Gateway.Configuration()
    public var users = UsersService.Configuration()
    /// Longest message text, in characters.
    public var maxTextLength = 4000
    /// How long the event log keeps events: a client resuming from an older cursor reloads.
    public var eventRetention: Duration = .seconds(7 * 24 * 3600)
    public var realtime = RealtimeLimits()
    /// How long a user stays online after their last connection closes.
    public var presenceGrace: Duration = .seconds(5)
    /// How often a node marks its users' presence fresh; another node's rows not kept fresh for
    /// three of these (a node that was killed) are swept, and their users announced offline.
    public var presenceHeartbeat: Duration = .seconds(10)
    public var mail = MailSettings()
    public var workers = WorkerSettings()
    /// The browser app's feature switches, labels and (for development) a directory to serve.
    public var web = WebApp.Configuration()

    public init() {}

    /// `mail.publicURL`, or this server's own address (`localhost` for a loopback or any-address bind).
    public var publicURL: String {
        if let url = mail.publicURL, !url.isEmpty { return url }
        let local = ["127.0.0.1", "0.0.0.0", "::", "::1", "localhost", ""].contains(host)
        let name = local ? "localhost" : (host.contains(":") ? "[\(host)]" : host)
        return "http://\(name):\(port)"
    }

    /// Applies `VERTEILT_HOST`, `VERTEILT_PORT`, `DATABASE_URL`, `LOG_LEVEL`, `BCRYPT_COST`,
    /// `VERTEILT_WEB_ROOT`, `VERTEILT_REQUEST_TIMEOUT`, and the mail and worker variables (`VERTEILT_SMTP_URL`, ..., see the README).
    public mutating func applyEnvironment(_ env: [String: String] = ProcessInfo.processInfo.environment) {
        if let v = env["VERTEILT_HOST"], !v.isEmpty { host = v }
        if let v = env["VERTEILT_PORT"].flatMap(Int.init) { port = v }
        if let v = env["DATABASE_URL"], !v.isEmpty { databaseURL = v }
        if let v = env["LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) { logLevel = v }
        if let v = env["BCRYPT_COST"].flatMap(UInt8.init) { bcryptCost = v }
        if let v = env["VERTEILT_WEB_ROOT"], !v.isEmpty { web.root = v }
        if let v = env["VERTEILT_SMTP_URL"], !v.isEmpty { mail.smtpURL = v }
        if let v = env["VERTEILT_MAIL_FROM"], !v.isEmpty { mail.from = v }
        if let v = env["VERTEILT_PUBLIC_URL"], !v.isEmpty { mail.publicURL = v }
        if let v = env["VERTEILT_DIGEST_DELAY"].flatMap(Self.seconds) { mail.digestDelay = v }
        if let v = env["VERTEILT_WORKERS"].flatMap(Int.init), v > 0 { workers.engine.workers = v }
        if let v = env["VERTEILT_WORKFLOW_LEASE"].flatMap(Self.seconds) { workers.engine.lease = v }
        if let v = env["VERTEILT_REQUEST_TIMEOUT"].flatMap(Self.seconds) { gateway.requestTimeout = v }
    }

    /// A positive, finite number of seconds (at most a year) as a duration; nil for anything else.
    public static func seconds(_ text: String) -> Duration? { Double(text).flatMap(seconds) }

    public static func seconds(_ value: Double) -> Duration? {
        guard value.isFinite, value > 0, value <= 365 * 24 * 3600 else { return nil }
        return .milliseconds(Int64((value * 1000).rounded(.up)))
    }
}
