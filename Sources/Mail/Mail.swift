import Foundation
import ServiceKit

/// One email: plain text always, HTML optionally (sent as multipart/alternative).
public struct Mail: Codable, Sendable, Equatable {
    public var from: String
    public var to: [String]
    public var subject: String
    public var text: String
    public var html: String?

    public init(from: String, to: [String], subject: String, text: String, html: String? = nil) {
        self.from = from
        self.to = to
        self.subject = subject
        self.text = text
        self.html = html
    }
}

/// Delivers mail somewhere: an SMTP server, or the development mailbox.
public protocol MailTransport: Sendable {
    func send(_ mail: Mail) async throws
}

/// Why a mail was not sent. `permanent` failures (5xx replies, bad addresses) will not go away by
/// trying again; the others (4xx replies, a server that is down) might.
public struct MailError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public let permanent: Bool

    public init(_ description: String, permanent: Bool) {
        self.description = description
        self.permanent = permanent
    }
}

/// Sends mail from the configured sender through one transport.
public struct Mailer: Sendable {
    public let from: String
    public let transport: any MailTransport

    public init(from: String, transport: any MailTransport) {
        self.from = from
        self.transport = transport
    }

    public func send(to: [String], subject: String, text: String, html: String? = nil) async throws {
        guard !to.isEmpty else { throw MailError("a mail needs a recipient", permanent: true) }
        for address in to + [from] where MailMessage.address(address) == nil {
            throw MailError("not a mail address: \(address)", permanent: true)
        }
        try await transport.send(Mail(from: from, to: to, subject: subject, text: text, html: html))
    }
}
