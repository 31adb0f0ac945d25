import Chats
import Foundation
import Groups
import HummingbirdWebSocket
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOWebSocket
import ServiceKit
import ServiceLifecycle
import Storage
import Threads

/// Close codes the client acts on.
public enum FeedCloseCode {
    /// The connection fell behind: reconnect with `?since=<last cursor>`.
    public static let resume: UInt16 = 4000
    /// The session the feed was opened with ended, or the account is gone: sign in again.
    public static let signedOut: UInt16 = 4001
}

/// One `/v1/events` connection: every event its user may see, in log order, then live; typing
/// relayed; presence kept.
struct FeedSocket: Sendable {
    let bus: EventBus
    let groups: any GroupsClient
    let chats: any ChatsClient
    let threads: any ThreadsClient
    let presence: Presence
    let limits: RealtimeLimits
    let descriptors = SocketDescriptors()

    /// `start` is the bus's head from before the request was authenticated and the user's groups
    /// read: a connection without `since` goes through the events after it, so a membership
    /// change or sign-out committed meanwhile still applies to it.
    func serve(user: String, session: String?, since: Int64?, start: Int64, channel: any Channel,
               inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, logger: Logger) async {
        await presence.connected(user)
        defer { presence.disconnected(user) }
        let roles: [String: Role]
        let chatIDs: [String]
        do {
            let groupIDs = try await groups.groupIDs(of: user)
            roles = try await groups.roles(of: user, in: groupIDs)
            chatIDs = try await chats.chatIDs(of: user)
        } catch {
            try? await outbound.close(.unexpectedServerError, reason: "try again")
            return
        }
        let audiences = Audiences(user: user, groups: roles, chats: chatIDs)
        // One task per connection, no more (each costs memory when thousands sit idle): replay
        // what was missed, let the bus write live events, then read client frames. Frames a
        // client sends during the replay wait in the socket until it is done. The bus holds the
        // connection from the start, so heartbeats and ephemeral frames cover the replay too.
        let closeTimeout = TimeAmount(limits.closeTimeout)
        let wire = FeedWire(eventLoop: channel.eventLoop, descriptors: descriptors)
        let feed = LiveFeed(user: user, session: session, wire: wire, audiences: audiences, closeTimeout: closeTimeout)
        let bus = self.bus
        do {
            try await channel.eventLoop.submit { try feed.install(in: channel, bus: bus) }.get()
        } catch {
            return
        }
        bus.attach(feed)
        defer { bus.detach(feed) }
        // A server shutting down closes its sockets rather than waiting for clients to leave.
        await withGracefulShutdownHandler {
            guard await replay(feed, from: since ?? start, outbound: outbound, logger: logger) else { return }
            await receive(user: user, inbound: inbound, outbound: outbound, feed: feed, logger: logger)
        } onGracefulShutdown: {
            channel.eventLoop.scheduleTask(in: closeTimeout) { channel.close(promise: nil) }
        }
    }

    // MARK: Server to client

    /// Replays the events after `start` through the socket's writer (from the log itself when
    /// they are older than the bus's window), then lets the bus write to it. False when the
    /// connection was closed instead.
    func replay(_ feed: LiveFeed, from start: Int64, outbound: WebSocketOutboundWriter, logger: Logger) async -> Bool {
        var cursor = start
        do {
            try await outbound.writeTextMessage(#"{"type":"ready","cursor":\#(cursor)}"#)
            replay: while true {
                let audiences = feed.audiences.withLock { Array($0.names) }
                switch try await bus.replay(after: cursor, limit: 500, audiences: audiences) {
                case .reload:
                    cursor = bus.head
                    try await outbound.writeTextMessage(#"{"type":"reload","cursor":\#(cursor)}"#)
                case .events(let events, let through, let filtered):
                    if events.isEmpty && through <= cursor { break replay }
                    for e in events {
                        if e.change?.ends(user: feed.user, session: feed.session) == true {
                            await feed.end(code: FeedCloseCode.signedOut, reason: "signed out")
                            return false
                        }
                        if feed.audiences.withLock({ $0.admit(e) }) {
                            try await outbound.write(.custom(.init(fin: true, opcode: .text, data: e.frame)))
                        }
                        cursor = e.seq
                        // What follows was read for the audiences before this event: read it again.
                        if filtered, e.change?.widens(user: feed.user) == true { continue replay }
                    }
                    cursor = max(cursor, through)
                }
            }
            await feed.goLive(from: cursor, bus: bus)
            return true
        } catch {
            // The socket closed under the replay (the client left, or a heartbeat went unanswered).
            logger.debug("feed replay ended", metadata: ["error": .string("\(error)")])
            return false
        }
    }

    // MARK: Client to server

    struct ClientFrame: Decodable {
        var type: String
        var conversationId: String?
        var chatId: String?
    }

    func receive(user: String, inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter,
                 feed: LiveFeed, logger: Logger) async {
        var budget = FrameBudget(perSecond: limits.framesPerSecond)
        var lastTyping: [String: ContinuousClock.Instant] = [:]
        do {
            for try await message in inbound.messages(maxSize: limits.maxClientFrame) {
                guard budget.take() else {
                    try await outbound.close(.policyViolation, reason: "too many frames")
                    return
                }
                // One-frame messages are only held to the socket's frame limit: hold them to ours.
                let size: Int
                switch message {
                case .text(let t): size = t.utf8.count
                case .binary(let b): size = b.readableBytes
                }
                guard size <= limits.maxClientFrame else {
                    try await outbound.close(.messageTooLarge, reason: "frame too large")
                    return
                }
                guard case .text(let text) = message,
                      let frame = try? JSON.decoder().decode(ClientFrame.self, from: Data(text.utf8))
                else {
                    try await outbound.writeTextMessage(#"{"type":"error","detail":"frames are JSON objects with a type"}"#)
                    continue
                }
                switch frame.type {
                case "ping":
                    try await outbound.writeTextMessage(#"{"type":"pong"}"#)
                case "typing":
                    guard let (audience, target) = try await typingTarget(frame, feed) else {
                        try await outbound.writeTextMessage(#"{"type":"error","detail":"typing: no such conversation or chat"}"#)
                        continue
                    }
                    // Throttled: one relay per place every two seconds is enough for an indicator.
                    let now = ContinuousClock.now
                    if let last = lastTyping[target], last.duration(to: now) < limits.typingInterval { continue }
                    // Only the places typed in lately are remembered.
                    if lastTyping.count >= 64 { lastTyping = lastTyping.filter { $0.value.duration(to: now) < limits.typingInterval } }
                    lastTyping[target] = now
                    let field = frame.conversationId != nil ? "conversation_id" : "chat_id"
                    await bus.publish(
                        audience: audience, frame: #"{"type":"typing","\#(field)":"\#(target)","user_id":"\#(user)"}"#, except: user)
                default:
                    try await outbound.writeTextMessage(#"{"type":"error","detail":"unknown frame type"}"#)
                }
            }
        } catch {
            // An oversized frame ends the stream with an error: say why before closing.
            try? await outbound.close(.messageTooLarge, reason: "frame too large")
            logger.debug("feed receive ended", metadata: ["error": .string("\(error)")])
        }
    }

    /// The audience a typing notice goes to, if the user may see the place.
    func typingTarget(_ f: ClientFrame, _ feed: LiveFeed) async throws -> (String, String)? {
        if let cid = f.conversationId, cid.utf8.count <= 128 {
            guard let c = try await threads.conversations(ids: [cid])[cid] else { return nil }
            let audience = "group:\(c.groupId)"
            return feed.audiences.withLock { $0.contains(audience) } ? (audience, cid) : nil
        }
        if let chat = f.chatId, chat.utf8.count <= 128 {
            let audience = "chat:\(chat)"
            return feed.audiences.withLock { $0.contains(audience) } ? (audience, chat) : nil
        }
        return nil
    }
}

/// A token bucket for client frames: bursts are fine, floods are not.
struct FrameBudget {
    let perSecond: Double
    var tokens: Double
    var updated = ContinuousClock.now

    init(perSecond: Double) {
        self.perSecond = perSecond
        self.tokens = perSecond * 2
    }

    mutating func take() -> Bool {
        let now = ContinuousClock.now
        tokens = min(perSecond * 2, tokens + updated.duration(to: now).seconds * perSecond)
        updated = now
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }
}

public struct RealtimeLimits: Sendable {
    public var maxClientFrame = 4096
    public var framesPerSecond = 20.0
    public var typingInterval: Duration = .seconds(2)
    /// How many recent events the bus keeps for live connections; one further behind (a reader
    /// that stopped reading) is closed with 4000 "resume from your cursor".
    public var window = 10_000
    /// The window's bound in memory, whatever the events' sizes.
    public var windowBytes = 64 << 20
    /// How long a `streams/Subscribe` socket may take to send its subscription frame.
    public var subscribeTimeout: Duration = .seconds(10)
    /// How long a close frame may wait behind unread data before the connection is dropped.
    public var closeTimeout: Duration = .seconds(5)
    /// How often the server pings; a socket silent for two periods is closed.
    public var heartbeat: Duration = .seconds(20)
    /// How long a `streams/Token` token (a feed ticket too) may wait for its one use.
    public var tokenLifetime: Duration = .seconds(60)
    public init() {}
}
