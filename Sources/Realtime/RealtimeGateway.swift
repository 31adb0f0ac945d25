import Chats
import Foundation
import Gateway
import Groups
import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdWebSocket
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOWebSocket
import ServiceKit
import ServiceLifecycle
import Storage
import Threads

/// The WebSocket side of the gateway: `/v1/events` and `/v1/streams/Subscribe`.
public struct RealtimeGateway: Sendable {
    let gateway: Gateway
    let bus: EventBus
    let streams: StreamsService
    let feed: FeedSocket

    public init(gateway: Gateway, bus: EventBus, streams: StreamsService, groups: any GroupsClient, chats: any ChatsClient,
                threads: any ThreadsClient, presence: Presence, limits: RealtimeLimits = .init()) {
        self.gateway = gateway
        self.bus = bus
        self.streams = streams
        self.feed = FeedSocket(bus: bus, groups: groups, chats: chats, threads: threads, presence: presence, limits: limits)
    }

    public typealias Handler = WebSocketDataHandler<HTTP1WebSocketUpgradeChannel.Context>

    enum FeedRequest {
        case accepted(user: String, session: String?, since: Int64?)
        case rejected(ServiceError)
    }

    /// Decides a `/v1/events` request: who (ticket, bearer or cookie) and from where (`since`).
    func feedRequest(headers: HTTPFields, authority: String?, query: [String: String]) async -> FeedRequest {
        var since: Int64?
        if let s = query["since"] {
            guard let v = Int64(s), v >= 0 else { return .rejected(.invalidField("since", "must be a cursor from an event or a page")) }
            since = v
        }
        if let ticket = query["ticket"] {
            guard let owner = try? await streams.redeem(ticket, topic: ""), let user = owner.user else {
                return .rejected(.unauthorized("invalid or expired ticket"))
            }
            return .accepted(user: user, session: owner.session, since: since)
        }
        guard Self.cookieUseIsSameSite(headers, authority: authority) else {
            return .rejected(.forbidden("a WebSocket signed in by the session cookie must come from this site's pages; use a ticket from streams/Token"))
        }
        guard let (caller, _) = try? await gateway.caller(headers: headers) else { return .rejected(.unauthorized()) }
        switch caller {
        case .user(let id, let session, _): return .accepted(user: id, session: session, since: since)
        case .serviceKey: return .rejected(.forbidden("the event feed is for user sessions"))
        case .anonymous: return .rejected(.unauthorized())
        }
    }

    /// Browsers send the session cookie with a WebSocket handshake that any page opens (no CORS
    /// applies to WebSockets). SameSite keeps other sites out, but not other hosts of the same
    /// site, so an upgrade carried by the cookie alone must come from a page of this host.
    /// Bearer headers and tickets are never attached by a browser on its own.
    static func cookieUseIsSameSite(_ headers: HTTPFields, authority: String?) -> Bool {
        guard headers[.authorization] == nil, let origin = headers[.origin] else { return true }
        func hostname(_ authority: Substring) -> Substring {
            authority.hasPrefix("[") ? authority.prefix { $0 != "]" } : authority.prefix { $0 != ":" }
        }
        let host = headers[HTTPField.Name("X-Forwarded-Host")!]?.split(separator: ",").first ?? authority?[...]
        // Browsers always send Host; a client without it is not a browser page.
        guard let host else { return true }
        let expected = hostname(host.drop { $0 == " " }).lowercased()
        // Browsers send one origin; a list must be ours throughout.
        return origin.split(separator: ",").allSatisfy { value in
            guard let schemeEnd = value.range(of: "://") else { return false }
            return hostname(value[schemeEnd.upperBound...]).lowercased() == expected
        }
    }

    /// The server's upgrade decision. A refused upgrade falls through to the HTTP routes below,
    /// which answer with the reason in the one error shape.
    @Sendable
    public func shouldUpgrade(_ head: HTTPRequest, _ channel: any Channel, _ logger: Logger) async throws -> ShouldUpgradeResult<Handler> {
        let uri = URI(head.path ?? "")
        switch uri.path {
        case "/v1/events":
            let query = Dictionary(uri.queryParameters.map { (String($0.key), String($0.value)) }, uniquingKeysWith: { $1 })
            // Before the session is checked: a sign-out committed after this reaches the feed.
            let start = bus.head
            guard case .accepted(let user, let session, let since) = await feedRequest(headers: head.headerFields, authority: head.authority, query: query) else {
                return .dontUpgrade
            }
            return .upgrade([:]) { inbound, outbound, context in
                await feed.serve(user: user, session: session, since: since, start: start, channel: channel,
                                 inbound: inbound, outbound: outbound, logger: context.logger)
            }
        case "/v1/streams/Subscribe", "/v1/streams/subscribe":
            return .upgrade([:]) { inbound, outbound, context in
                try? await cancelWhenGracefulShutdown {
                    await subscribe(channel: channel, inbound: inbound, outbound: outbound, logger: context.logger)
                }
                if Task.isShuttingDownGracefully { try? await outbound.close(.goingAway, reason: "server shutting down") }
            }
        default:
            return .dontUpgrade
        }
    }

    /// HTTP answers for WebSocket paths reached without an upgrade.
    public func addRoutes(to router: Router<GatewayContext>) {
        router.get("/v1/events") { request, _ -> Response in
            let query = Dictionary(request.uri.queryParameters.map { (String($0.key), String($0.value)) }, uniquingKeysWith: { $1 })
            if case .rejected(let error) = await feedRequest(headers: request.headers, authority: request.head.authority, query: query) { throw error }
            throw ServiceError(.upgradeRequired, "connect with a WebSocket")
        }
        router.get("/v1/streams/Subscribe") { _, _ -> Response in
            throw ServiceError(.upgradeRequired, "connect with a WebSocket")
        }
    }

    // MARK: M3O streams/Subscribe

    struct SubscribeFrame: Decodable {
        var topic: String
        var token: String
    }

    func subscribe(channel: any Channel, inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter,
                   logger: Logger) async {
        var messages = inbound.messages(maxSize: 4096).makeAsyncIterator()
        // The first frame names the topic and carries a token for it, within the time allowed.
        // (A server's close finishes the channel's writer, which closes the socket.)
        let answered = NIOLockedValueBox(false)
        let timeout = feed.limits.subscribeTimeout
        let timer = Task {
            try await Task.sleep(for: timeout)
            if !answered.withLockedValue({ $0 }) { try? await outbound.close(.policyViolation, reason: "no subscription frame") }
        }
        let first = try? await messages.next()
        answered.withLockedValue { $0 = true }
        timer.cancel()
        guard case .text(let text)?? = first,
              let frame = try? JSON.decoder().decode(SubscribeFrame.self, from: Data(text.utf8)),
              (try? StreamsService.validTopic(frame.topic)) != nil
        else {
            try? await outbound.close(.policyViolation, reason: "first frame must be {\"topic\",\"token\"}")
            return
        }
        guard case .some(let owner) = try? await streams.redeem(frame.token, topic: frame.topic) else {
            try? await outbound.close(.policyViolation, reason: "invalid or expired token for this topic")
            return
        }
        let wire = FeedWire(eventLoop: channel.eventLoop)
        guard (try? await channel.eventLoop.submit({ try wire.install(in: channel) }).get()) != nil
        else { return }
        // The head before subscribing: a message committed in between is read, not skipped.
        let start = bus.head
        let (id, signals) = bus.subscribe()
        defer { bus.unsubscribe(id) }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await self.forward(topic: frame.topic, owner: owner, after: start, signals: signals, outbound: outbound, logger: logger)
            }
            group.addTask {
                let heartbeat = self.bus.heartbeat
                while !Task.isCancelled {
                    try? await Task.sleep(for: heartbeat)
                    let silent = try? await channel.eventLoop.submit { wire.hasBeenSilent(for: TimeAmount(heartbeat) * 2) }.get()
                    guard silent == false else {
                        try? await channel.close()
                        return
                    }
                    try? await outbound.write(.custom(.init(fin: true, opcode: .ping, data: ByteBuffer())))
                }
            }
            // Reading lets the socket see pongs and the client's close.
            do { while try await messages.next() != nil {} } catch {}
            group.cancelAll()
        }
    }

    /// Writes the topic's messages committed after `start` as they commit, until the owner may
    /// no longer use the topic: a user's subscription ends with their session or account, and a
    /// group's topics with their membership (a service key's last).
    func forward(topic: String, owner: StreamsService.TokenOwner, after start: Int64, signals: AsyncStream<Void>,
                 outbound: WebSocketOutboundWriter, logger: Logger) async {
        var cursor = start
        let root = String(topic.split(separator: "/", maxSplits: 1).first ?? "")
        do {
            var iterator = signals.makeAsyncIterator()
            while true {
                drain: while true {
                    switch bus.window(after: cursor, limit: 500) {
                    case .behind:
                        try await outbound.close(.unknown(FeedCloseCode.resume), reason: "too slow")
                        return
                    case .events(let events):
                        if events.isEmpty { break drain }
                        for e in events {
                            if let user = owner.user, let change = e.change {
                                if change.ends(user: user, session: owner.session) {
                                    try await outbound.close(.unknown(FeedCloseCode.signedOut), reason: "signed out")
                                    return
                                }
                                if change.revokes(topicRoot: root, of: user) {
                                    try await outbound.close(.policyViolation, reason: "no longer entitled to this topic")
                                    return
                                }
                            }
                            if let s = e.stream, s.topic == topic {
                                try await outbound.write(.custom(.init(fin: true, opcode: .text, data: s.frame)))
                            }
                            cursor = e.seq
                        }
                    }
                }
                guard await iterator.next() != nil else { return }
            }
        } catch {
            logger.debug("subscribe ended", metadata: ["error": .string("\(error)")])
        }
    }
}

