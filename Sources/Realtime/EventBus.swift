import DequeModule
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceKit
import ServiceLifecycle
import Storage
import Synchronization

/// Tails the event log and wakes every connection of this node when events commit, here or on
/// another node. Keeps the newest events, encoded, in a ring that connections read from; a
/// connection that falls further behind than the ring reads the log itself while it catches up
/// after a reconnect, and is told to resume later if it falls behind while live.
public final class EventBus: Service, Sendable {
    struct State {
        var ring: Deque<FeedEvent> = []
        /// What the ring's events hold in memory (`FeedEvent.bytes`).
        var ringBytes = 0
        /// The ring holds every event after this sequence number. Not `ring.first.seq - 1`:
        /// a rolled-back transaction leaves a gap in a PostgreSQL sequence.
        var ringBase: Int64 = 0
        var head: Int64 = 0
        /// `streams/Subscribe` sockets: told that new events are in the window, they pull.
        var listeners: [UUID: AsyncStream<Void>.Continuation] = [:]
        /// Caught-up feeds, by event loop: the bus pushes to them.
        var live: [ObjectIdentifier: LoopFeeds] = [:]
    }

    /// The live feeds on one event loop. At most one push task per loop is queued: events that
    /// commit while it waits ride along, so a busy server writes several frames per flush.
    struct LoopFeeds {
        let loop: any EventLoop
        /// An array, not a dictionary: a push pass takes it as it is (one reference to its
        /// storage) instead of building a new one and retaining every feed.
        var feeds: [LiveFeed] = []
        /// Where each feed is in `feeds`, for removal.
        var index: [ObjectIdentifier: Int] = [:]
        var scheduled = false
        /// Every feed on this loop has been handed the events up to here.
        var pushedThrough: Int64

        mutating func add(_ feed: LiveFeed) {
            guard index[ObjectIdentifier(feed)] == nil else { return }
            index[ObjectIdentifier(feed)] = feeds.count
            feeds.append(feed)
        }

        mutating func remove(_ feed: LiveFeed) {
            guard let i = index.removeValue(forKey: ObjectIdentifier(feed)) else { return }
            let last = feeds.removeLast()
            if i < feeds.count {
                feeds[i] = last
                index[ObjectIdentifier(last)] = i
            }
        }
    }

    enum WindowRead {
        case events([FeedEvent])
        /// The cursor is older than the window.
        case behind
    }

    public enum ReplayRead: Sendable {
        /// Events after the cursor, through `through`: every one from the window; from the log
        /// (`filtered`) only those to the reader's audiences and the membership changes that
        /// could widen them.
        case events([FeedEvent], through: Int64, filtered: Bool)
        /// The cursor is older than the retained log, or from the future: reload.
        case reload
    }

    let db: any Database
    let capacity: Int
    /// The ring's bound in bytes besides its count: big messages (16 KiB stream messages) must
    /// not make it hold gigabytes.
    let capacityBytes: Int
    let pollInterval: Duration
    let logger: Logger
    let retention: Duration
    /// How often live connections are pinged; one silent for two periods is dropped.
    let heartbeat: Duration
    public let nodeID = Secrets.uuid()
    private let state = NIOLockedValueBox(State())
    /// `State.head`, readable without the lock (stored with it, under it): every live connection
    /// looks at it once per push.
    private let newestSeq = Atomic<Int64>(0)
    /// One string per audience name for the events it hands out (see `Audiences.admit`).
    let audienceNames = AudienceNames()
    /// `prepare()` has read the head; `run()` waits for it.
    private let readiness = Readiness()
    private let wakeStream: AsyncStream<Void>
    private let wakeContinuation: AsyncStream<Void>.Continuation
    static let ephemeralChannel = "verteilt_ephemeral"

    public init(
        db: any Database, capacity: Int = 10_000, capacityBytes: Int = 64 << 20, pollInterval: Duration = .seconds(1),
        retention: Duration = .seconds(7 * 24 * 3600), heartbeat: Duration = .seconds(20), logger: Logger
    ) {
        self.db = db
        self.retention = retention
        self.heartbeat = heartbeat
        self.capacity = capacity
        self.capacityBytes = capacityBytes
        self.pollInterval = pollInterval
        self.logger = logger
        (wakeStream, wakeContinuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    /// Reads the log's head. Runs before the server accepts connections.
    public func prepare() async throws {
        let head = try await EventLog.head(db)
        state.withLockedValue {
            $0.head = head
            $0.ringBase = head
            newestSeq.store(head, ordering: .releasing)
        }
        db.commits.observe { self.ingest($0) }
        readiness.markReady()
    }

    public var head: Int64 { newestSeq.load(ordering: .acquiring) }
    public var connectionCount: Int {
        state.withLockedValue { s in s.listeners.count + s.live.values.reduce(0) { $0 + $1.feeds.count } }
    }

    public func run() async throws {
        guard await readiness.wait() else { return }
        let db = self.db
        await withTaskGroup(of: Void.self) { group in
            // A missed notification delays delivery by at most the poll interval; it never loses it.
            // Where commits hand their events over (`ingest`), reading them back would find nothing.
            let ownCommits = !db.commits.handsOverEvents
            group.addTask { await EventLog.watch(db, poll: self.pollInterval, ownCommits: ownCommits) { self.wake() } }
            group.addTask { try? await db.listen(Self.ephemeralChannel) { self.receiveRemote($0) } }
            group.addTask {
                // One timer for every live connection, not a task per socket.
                while !Task.isCancelled {
                    try? await Task.sleep(for: self.heartbeat)
                    self.pingLive()
                }
            }
            group.addTask {
                // Events older than the retention period go; clients holding older cursors reload.
                while !Task.isCancelled {
                    try? await self.prune(before: Timestamp.now().adding(seconds: -self.retention.seconds))
                    try? await Task.sleep(for: .seconds(3600))
                }
            }
            group.addTask {
                for await _ in self.wakeStream {
                    do { try await self.catchUp() } catch {
                        self.logger.warning("reading the event log failed", metadata: ["error": .string("\(error)")])
                    }
                }
            }
            try? await gracefulShutdown()
            wakeContinuation.finish()
            group.cancelAll()
        }
        for c in state.withLockedValue({ Array($0.listeners.values) }) { c.finish() }
    }

    func wake() { wakeContinuation.yield() }

    /// Drops events older than `before` from the log and from the ring alike, so a cursor from
    /// before them is told to reload wherever it is read.
    public func prune(before: Timestamp) async throws {
        try await EventLog.prune(db, before: before)
        let oldest = try await EventLog.oldest(db) ?? 0
        state.withLockedValue { s in
            while let first = s.ring.first, first.seq < oldest { Self.dropOldest(&s) }
            s.ringBase = max(s.ringBase, oldest - 1)
        }
    }

    /// Moves the ring up to the log's head.
    func catchUp() async throws {
        while true {
            let events = try await EventLog.read(db, after: head, limit: 1000).map { FeedEvent($0, names: audienceNames) }
            guard !events.isEmpty else { break }
            take(events, contiguous: false)
            if events.count < 1000 { break }
        }
    }

    /// Takes events committed in this process straight from the commit, on the committing
    /// thread, sparing the read back from the log and the hand-offs between (the send path of
    /// every message). Events that do not follow the head directly are left to the log.
    func ingest(_ committed: [Event]) {
        if !take(committed.map { FeedEvent($0, names: audienceNames) }, contiguous: true) { wake() }
    }

    /// Moves the ring up by `events` (those it has not got yet), wakes the connections that
    /// pull and pushes to the live ones, one task per event loop. With `contiguous`, takes
    /// nothing unless the first event directly follows the head.
    @discardableResult
    private func take(_ events: [FeedEvent], contiguous: Bool) -> Bool {
        let taken = state.withLockedValue { s -> ([AsyncStream<Void>.Continuation], [any EventLoop])? in
            if contiguous, events.first?.seq != s.head + 1 { return nil }
            for e in events where e.seq > s.head {
                s.ring.append(e)
                s.ringBytes += e.bytes
                s.head = e.seq
            }
            newestSeq.store(s.head, ordering: .releasing)
            while s.ring.count > capacity || (s.ringBytes > capacityBytes && s.ring.count > 1) { Self.dropOldest(&s) }
            return (Array(s.listeners.values), Self.schedule(&s))
        }
        guard let (listeners, loops) = taken else { return false }
        for l in listeners { l.yield() }
        for loop in loops { loop.execute { self.pushLive(on: loop) } }
        return true
    }

    private static func dropOldest(_ s: inout State) {
        let e = s.ring.removeFirst()
        s.ringBytes -= e.bytes
        s.ringBase = e.seq
    }

    /// Marks the loops that have no push queued as scheduled and returns them.
    private static func schedule(_ s: inout State) -> [any EventLoop] {
        var loops: [any EventLoop] = []
        for (id, group) in s.live where !group.scheduled && group.pushedThrough < s.head {
            s.live[id]!.scheduled = true
            loops.append(group.loop)
        }
        return loops
    }

    /// Runs on `loop`: hands every live feed there the events since the last push.
    private func pushLive(on loop: any EventLoop) {
        let id = ObjectIdentifier(loop)
        let work = state.withLockedValue { s -> (feeds: [LiveFeed], base: Int64, batch: [FeedEvent], windowBase: Int64)? in
            guard let group = s.live[id] else { return nil }
            s.live[id]!.scheduled = false
            let batch = Self.window(s, after: group.pushedThrough, limit: LiveFeed.chunk) ?? []
            s.live[id]!.pushedThrough = batch.last?.seq ?? s.head
            return (group.feeds, group.pushedThrough, batch, s.ringBase)
        }
        guard let work else { return }
        for f in work.feeds { f.push(batch: work.batch[...], batchBase: work.base, windowBase: work.windowBase, bus: self) }
        // More than one chunk behind: go again, after whatever else the loop has to do.
        let again = state.withLockedValue { s in
            s.live[id].map { !$0.scheduled && $0.pushedThrough < s.head } == true ? Self.schedule(&s) : []
        }
        for l in again { l.execute { self.pushLive(on: l) } }
    }

    /// Events after `cursor` from the window of recent events, at most `limit`.
    func window(after cursor: Int64, limit: Int) -> WindowRead {
        state.withLockedValue { s in Self.window(s, after: cursor, limit: limit).map(WindowRead.events) ?? .behind }
    }

    /// nil when `cursor` is older than the window.
    private static func window(_ s: State, after cursor: Int64, limit: Int) -> [FeedEvent]? {
        if cursor >= s.head { return [] }
        guard cursor >= s.ringBase else { return nil }
        // First index with seq > cursor.
        var lo = 0, hi = s.ring.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if s.ring[mid].seq <= cursor { lo = mid + 1 } else { hi = mid }
        }
        return Array(s.ring[lo..<min(s.ring.count, lo + limit)])
    }

    /// What a replay from `cursor` reads next, at most `limit` events: from the window when it
    /// reaches back that far, else from the log, where only the events that may concern a reader
    /// in `audiences` are read (a week-old cursor must not make the node decode everyone's).
    func replay(after cursor: Int64, limit: Int, audiences: [String]) async throws -> ReplayRead {
        if cursor > head {
            // Ahead of this node's bus is not the future: the log may hold it already (read during
            // a replay, or a cursor from another node that saw the commit first). Nothing to read
            // until the bus gets there.
            guard cursor <= (try await EventLog.head(db)) else { return .reload }
            return .events([], through: cursor, filtered: false)
        }
        if case .events(let e) = window(after: cursor, limit: limit) {
            return .events(e, through: e.last?.seq ?? cursor, filtered: false)
        }
        func pruned() async throws -> Bool { (try await EventLog.oldest(db)).map { cursor < $0 - 1 } ?? false }
        if try await pruned() { return .reload }
        // Very many audiences (thousands of chats) would outgrow a statement's parameters: such
        // a reader reads everyone's events.
        let filtered = audiences.count <= Self.filteredAudiences
        var (events, through) = ([Event](), cursor)
        if filtered {
            (events, through) = try await EventLog.read(db, after: cursor, audiences: audiences, limit: limit)
        } else {
            events = try await EventLog.read(db, after: cursor, limit: limit)
            through = events.last?.seq ?? cursor
        }
        // Pruned between the two reads: what was read may start after a gap.
        if try await pruned() { return .reload }
        return .events(events.map { FeedEvent($0, names: audienceNames) }, through: through, filtered: filtered)
    }

    static let filteredAudiences = 2000

    /// Pings every live connection and drops those that have sent nothing (not even a pong)
    /// for two heartbeats.
    func pingLive() {
        let silence = TimeAmount(heartbeat) * 2
        for group in state.withLockedValue({ Array($0.live.values) }) {
            let feeds = group.feeds
            group.loop.execute {
                for f in feeds { f.heartbeat(silence: silence) }
            }
        }
    }

    /// Hands a caught-up connection to the bus, which writes to it from now on.
    func attach(_ feed: LiveFeed) {
        state.withLockedValue { s in
            s.live[ObjectIdentifier(feed.eventLoop), default: LoopFeeds(loop: feed.eventLoop, pushedThrough: s.head)].add(feed)
        }
        feed.eventLoop.execute { self.pushPending(feed) }
    }

    func detach(_ feed: LiveFeed) {
        state.withLockedValue { s in
            let loop = ObjectIdentifier(feed.eventLoop)
            s.live[loop]?.remove(feed)
            if s.live[loop]?.feeds.isEmpty == true { s.live.removeValue(forKey: loop) }
        }
    }

    /// Writes whatever `feed` has not had yet (after it attached, or once its channel drains).
    func pushPending(_ feed: LiveFeed) {
        let windowBase = state.withLockedValue { $0.ringBase }
        feed.push(batch: [], batchBase: -1, windowBase: windowBase, bus: self)
    }

    func subscribe() -> (UUID, AsyncStream<Void>) {
        let (stream, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let id = UUID()
        state.withLockedValue { $0.listeners[id] = continuation }
        return (id, stream)
    }

    func unsubscribe(_ id: UUID) {
        state.withLockedValue { $0.listeners.removeValue(forKey: id) }?.finish()
    }

    // MARK: Ephemeral frames

    struct Remote: Codable {
        var node: String
        var audience: String
        var frame: String
        var except: String?
    }

    /// Sends a frame that is never stored to every connection in `audience` on every node.
    func publish(audience: String, frame: String, except: String?) async {
        deliver(audience: audience, frame: ByteBuffer(string: frame), except: except)
        let remote = Remote(node: nodeID, audience: audience, frame: frame, except: except)
        if let payload = try? JSON.encode(remote) {
            try? await db.notify(Self.ephemeralChannel, payload: String(decoding: payload, as: UTF8.self))
        }
    }

    func receiveRemote(_ payload: String) {
        guard let r = try? JSON.decoder().decode(Remote.self, from: Data(payload.utf8)), r.node != nodeID else { return }
        deliver(audience: r.audience, frame: ByteBuffer(string: r.frame), except: r.except)
    }

    func deliver(audience: String, frame: ByteBuffer, except: String?) {
        let loops = state.withLockedValue { Array($0.live.values) }
        guard !loops.isEmpty else { return }
        let wire = WireFrame.text(frame)
        for group in loops {
            let feeds = group.feeds
            group.loop.execute {
                for f in feeds { f.send(ephemeral: wire, audience: audience, except: except) }
            }
        }
    }
}
