import Foundation
import NIOCore
import NIOPosix
import NIOSSL

/// Where and how to reach an SMTP server.
public struct SMTPConfiguration: Sendable {
    public enum Security: String, Sendable {
        /// Plain connection, upgraded with STARTTLS; fails if the server does not offer it.
        case startTLS = "starttls"
        /// TLS from the first byte (SMTPS, usually port 465).
        case tls
        /// No encryption (a relay on the same host). AUTH is refused without TLS.
        case none
    }

    public var host: String
    public var port: Int
    public var security: Security
    public var username: String?
    public var password: String?
    /// A PEM file of certificates to trust instead of the system's (a private CA).
    public var caFile: String?
    /// The name this client gives in EHLO.
    public var heloName = "localhost"
    public var timeout: Duration = .seconds(30)

    public init(host: String, port: Int = 587, security: Security = .startTLS, username: String? = nil,
                password: String? = nil, caFile: String? = nil) {
        self.host = host
        self.port = port
        self.security = security
        self.username = username
        self.password = password
        self.caFile = caFile
    }

    /// `smtp://user:pass@host:port?security=starttls|tls|none&ca=/path.pem` (`smtps://` means tls;
    /// plain `smtp://` without `security` means starttls).
    public init(url: String) throws {
        guard let c = URLComponents(string: url), let host = c.host, !host.isEmpty,
              c.scheme == "smtp" || c.scheme == "smtps"
        else { throw MailError("not an smtp:// or smtps:// URL: \(url)", permanent: true) }
        let query = Dictionary((c.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { $1 })
        var security: Security = c.scheme == "smtps" ? .tls : .startTLS
        if let s = query["security"] {
            guard let v = Security(rawValue: s) else { throw MailError("security must be starttls, tls or none", permanent: true) }
            security = v
        }
        self.init(host: host, port: c.port ?? (security == .tls ? 465 : 587), security: security,
                  username: c.user?.removingPercentEncoding, password: c.password?.removingPercentEncoding,
                  caFile: query["ca"])
    }
}

/// Sends mail to an SMTP server (RFC 5321) with STARTTLS (RFC 3207) and AUTH PLAIN (RFC 4954),
/// one connection per mail.
public struct SMTPTransport: MailTransport {
    let configuration: SMTPConfiguration
    let sslContext: NIOSSLContext?
    let group: any EventLoopGroup

    public init(_ configuration: SMTPConfiguration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) throws {
        self.configuration = configuration
        self.group = group
        if configuration.security == .none {
            sslContext = nil
        } else {
            var tls = TLSConfiguration.makeClientConfiguration()
            if let ca = configuration.caFile { tls.trustRoots = .file(ca) }
            sslContext = try NIOSSLContext(configuration: tls)
        }
    }

    public func send(_ mail: Mail) async throws {
        guard let from = MailMessage.address(mail.from) else { throw MailError("bad sender \(mail.from)", permanent: true) }
        let recipients = try mail.to.map { r in
            guard let a = MailMessage.address(r) else { throw MailError("bad recipient \(r)", permanent: true) }
            return a
        }
        let message = MailMessage.render(mail)
        let session = try await SMTPSession.connect(configuration, sslContext: sslContext, group: group)
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await session.deliver(from: from, to: recipients, message: message) }
                group.addTask {
                    try await Task.sleep(for: configuration.timeout)
                    // Closing fails the reply the session waits for (a future ignores cancellation).
                    await session.close()
                    throw MailError("the SMTP server did not answer within \(configuration.timeout)", permanent: false)
                }
                try await group.next()
                group.cancelAll()
            }
            await session.close()
        } catch {
            await session.close()
            throw error
        }
    }
}

/// One reply: its code and the text of every line.
struct SMTPReply: Sendable {
    var code: Int
    var lines: [String]
    var text: String { lines.joined(separator: " ") }
}

/// A conversation with the server over one connection.
final class SMTPSession: Sendable {
    let channel: any Channel
    let handler: SMTPReplyHandler
    let configuration: SMTPConfiguration
    let sslContext: NIOSSLContext?

    private init(channel: any Channel, handler: SMTPReplyHandler, configuration: SMTPConfiguration, sslContext: NIOSSLContext?) {
        self.channel = channel
        self.handler = handler
        self.configuration = configuration
        self.sslContext = sslContext
    }

    static func connect(_ configuration: SMTPConfiguration, sslContext: NIOSSLContext?, group: any EventLoopGroup) async throws -> SMTPSession {
        let handler = SMTPReplyHandler()
        let implicitTLS = configuration.security == .tls
        let host = configuration.host
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: group)
                .connectTimeout(.seconds(10))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if implicitTLS, let sslContext {
                            try channel.pipeline.syncOperations.addHandler(
                                try NIOSSLClientHandler(context: sslContext, serverHostname: Self.sniName(host)))
                        }
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(SMTPLineDecoder()))
                        try channel.pipeline.syncOperations.addHandler(handler)
                    }
                }
                .connect(host: configuration.host, port: configuration.port).get()
        } catch {
            throw MailError("cannot reach the SMTP server \(configuration.host):\(configuration.port): \(error)", permanent: false)
        }
        return SMTPSession(channel: channel, handler: handler, configuration: configuration, sslContext: sslContext)
    }

    /// SNI carries names, not addresses.
    static func sniName(_ host: String) -> String? {
        host.contains(":") || host.allSatisfy({ $0.isNumber || $0 == "." }) ? nil : host
    }

    func deliver(from: String, to recipients: [String], message: String) async throws {
        try expect(try await handler.reply(on: channel), 220, "greeting")
        var extensions = try await ehlo()
        if configuration.security == .startTLS {
            guard extensions.contains("STARTTLS") else {
                throw MailError("the SMTP server does not offer STARTTLS", permanent: false)
            }
            try expect(try await command("STARTTLS"), 220, "STARTTLS")
            guard let sslContext else { throw MailError("no TLS context", permanent: true) }
            let host = configuration.host
            try await channel.eventLoop.submit {
                try self.channel.pipeline.syncOperations.addHandler(
                    try NIOSSLClientHandler(context: sslContext, serverHostname: Self.sniName(host)), position: .first)
            }.get()
            // RFC 3207: forget what was learnt before TLS and ask again.
            extensions = try await ehlo()
        }
        if let user = configuration.username {
            guard configuration.security != .none else {
                throw MailError("refusing to send SMTP credentials without TLS", permanent: true)
            }
            guard extensions.contains(where: { $0.hasPrefix("AUTH") && $0.contains("PLAIN") }) else {
                throw MailError("the SMTP server does not offer AUTH PLAIN", permanent: true)
            }
            let token = Data(([0] + Array(user.utf8) + [0] + Array((configuration.password ?? "").utf8))).base64EncodedString()
            try expect(try await command("AUTH PLAIN " + token, redacted: "AUTH PLAIN ***"), 235, "AUTH")
        }
        try expect(try await command("MAIL FROM:<\(from)>"), 250, "MAIL FROM")
        for r in recipients {
            let reply = try await command("RCPT TO:<\(r)>")
            guard reply.code == 250 || reply.code == 251 else { throw failure(reply, "RCPT TO \(r)") }
        }
        try expect(try await command("DATA"), 354, "DATA")
        // Dot-stuffing (RFC 5321 4.5.2), then the terminating line.
        let body = message.split(separator: "\r\n", omittingEmptySubsequences: false)
            .map { $0.hasPrefix(".") ? "." + $0 : String($0) }.joined(separator: "\r\n")
        try expect(try await handler.send(body + (body.hasSuffix("\r\n") ? "" : "\r\n") + ".", on: channel), 250, "message")
        _ = try? await command("QUIT")
    }

    private func ehlo() async throws -> [String] {
        let reply = try await command("EHLO \(configuration.heloName)")
        try expect(reply, 250, "EHLO")
        return reply.lines.dropFirst().map { $0.uppercased() }
    }

    private func command(_ line: String, redacted: String? = nil) async throws -> SMTPReply {
        try await handler.send(line, on: channel)
    }

    private func expect(_ reply: SMTPReply, _ code: Int, _ what: String) throws {
        guard reply.code == code else { throw failure(reply, what) }
    }

    private func failure(_ reply: SMTPReply, _ what: String) -> MailError {
        MailError("SMTP \(what) failed: \(reply.code) \(reply.text)", permanent: (500..<600).contains(reply.code))
    }

    func close() async {
        try? await channel.close()
    }
}

/// Splits the server's bytes into lines (CRLF or LF).
struct SMTPLineDecoder: ByteToMessageDecoder {
    typealias InboundOut = String

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let newline = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) else {
            if buffer.readableBytes > 64 * 1024 { throw MailError("SMTP reply line too long", permanent: false) }
            return .needMoreData
        }
        let length = newline - buffer.readerIndex
        var line = buffer.readString(length: length) ?? ""
        buffer.moveReaderIndex(forwardBy: 1)
        if line.hasSuffix("\r") { line.removeLast() }
        context.fireChannelRead(wrapInboundOut(line))
        return .continue
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData
    }
}

/// Collects reply lines (`250-...` continues, `250 ...` ends) and hands each complete reply to
/// the oldest waiting command. Touched only on its channel's event loop.
final class SMTPReplyHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = String

    private var lines: [String] = []
    private var waiting: [EventLoopPromise<SMTPReply>] = []
    private var ready: [SMTPReply] = []
    private var failed: (any Error)?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let line = unwrapInboundIn(data)
        let chars = Array(line.utf8)
        guard chars.count >= 3, let code = Int(String(decoding: chars[0..<3], as: UTF8.self)) else {
            fail(MailError("malformed SMTP reply: \(line.prefix(100))", permanent: false))
            context.close(promise: nil)
            return
        }
        lines.append(chars.count > 4 ? String(decoding: chars[4...], as: UTF8.self) : "")
        if chars.count > 3 && chars[3] == UInt8(ascii: "-") { return }
        let reply = SMTPReply(code: code, lines: lines)
        lines = []
        if waiting.isEmpty { ready.append(reply) } else { waiting.removeFirst().succeed(reply) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(MailError("SMTP connection failed: \(error)", permanent: false))
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(MailError("the SMTP server closed the connection", permanent: false))
        context.fireChannelInactive()
    }

    private func fail(_ error: any Error) {
        if failed == nil { failed = error }
        let w = waiting
        waiting = []
        for p in w { p.fail(error) }
    }

    /// The next reply (the greeting, or one already received).
    func reply(on channel: any Channel) async throws -> SMTPReply {
        try await channel.eventLoop.flatSubmit { () -> EventLoopFuture<SMTPReply> in
            self.nextReply(channel.eventLoop)
        }.get()
    }

    /// Writes `line` and waits for its reply.
    func send(_ line: String, on channel: any Channel) async throws -> SMTPReply {
        try await channel.eventLoop.flatSubmit { () -> EventLoopFuture<SMTPReply> in
            let reply = self.nextReply(channel.eventLoop)
            channel.writeAndFlush(ByteBuffer(string: line + "\r\n"), promise: nil)
            return reply
        }.get()
    }

    private func nextReply(_ loop: any EventLoop) -> EventLoopFuture<SMTPReply> {
        if !ready.isEmpty { return loop.makeSucceededFuture(ready.removeFirst()) }
        if let failed { return loop.makeFailedFuture(failed) }
        let p = loop.makePromise(of: SMTPReply.self)
        waiting.append(p)
        return p.futureResult
    }
}
