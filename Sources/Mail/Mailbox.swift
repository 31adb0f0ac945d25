import Foundation
import ServiceKit
import Storage

/// The development transport: mails are stored in the database instead of sent, and read at
/// `POST /v1/mail/List`. The default when no SMTP server is configured.
public struct Mailbox: MailTransport {
    let db: any Database

    public init(db: any Database) { self.db = db }

    public static let migrations = [
        Migration(service: "mail", version: 1, [
            """
            CREATE TABLE mailbox (
                id TEXT PRIMARY KEY,
                sender TEXT NOT NULL,
                recipients TEXT NOT NULL,
                subject TEXT NOT NULL,
                text_body TEXT NOT NULL,
                html_body TEXT,
                created_at BIGINT NOT NULL)
            """,
            "CREATE INDEX mailbox_created ON mailbox (created_at)",
        ])
    ]

    public func send(_ mail: Mail) async throws {
        let recipients = String(decoding: try JSON.encode(mail.to), as: UTF8.self)
        _ = try await db.write { tx in
            try await tx.query(
                """
                INSERT INTO mailbox (id, sender, recipients, subject, text_body, html_body, created_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7)
                """,
                Secrets.uuid(), mail.from, recipients, mail.subject, mail.text, mail.html, Timestamp.now())
        }
    }
}

public struct StoredMail: Codable, Sendable {
    public var id: String
    public var from: String
    public var to: [String]
    public var subject: String
    public var text: String
    public var html: String?
    public var createdAt: Timestamp
}

public struct ListMailRequest: Codable, Sendable {
    /// Only mails to this address.
    public var to: String?
    public var limit: Int?
}

public struct MailListResponse: Codable, Sendable {
    public var mails: [StoredMail]
    /// `mailbox` when mails are stored here; `smtp` when they go to a server (the list is then empty).
    public var transport: String
}

/// `mail/List`: the development mailbox, newest first (administrators and service keys).
public struct MailService: ServiceDefinition {
    public let name = "mail"
    let db: any Database
    let transport: String

    public init(db: any Database, transport: any MailTransport) {
        self.db = db
        self.transport = transport is Mailbox ? "mailbox" : "smtp"
    }

    public var endpoints: [Endpoint] {
        [
            Endpoint(service: name, method: "List", summary: "Mails kept by the development mailbox, newest first.",
                     access: .administrator, handler: list)
        ]
    }

    func list(_ req: ListMailRequest, _ ctx: CallContext) async throws -> MailListResponse {
        let limit = req.limit ?? 50
        guard (1...500).contains(limit) else { throw ServiceError.invalidField("limit", "must be between 1 and 500") }
        // Recipients are a JSON array; filter after reading, from a bounded window.
        let wanted = try req.to.flatMap { $0.isEmpty ? nil : try Validate.email($0, field: "to").lowercased() }
        let rows = try await db.read { conn in
            try await conn.query(
                "SELECT id, sender, recipients, subject, text_body, html_body, created_at FROM mailbox ORDER BY created_at DESC, id LIMIT $1",
                wanted == nil ? limit : 5000)
        }
        var mails: [StoredMail] = []
        for r in rows {
            let to = try JSON.decoder().decode([String].self, from: Data(try r.string("recipients").utf8))
            if let wanted, !to.contains(where: { (MailMessage.address($0) ?? $0).lowercased() == wanted }) { continue }
            mails.append(StoredMail(
                id: try r.string("id"), from: try r.string("sender"), to: to, subject: try r.string("subject"),
                text: try r.string("text_body"), html: try r.optionalString("html_body"), createdAt: try r.timestamp("created_at")))
            if mails.count == limit { break }
        }
        return MailListResponse(mails: mails, transport: transport)
    }
}
