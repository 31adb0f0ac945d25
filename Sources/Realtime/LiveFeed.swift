import Synchronization
import NIOConcurrencyHelpers
import NIOCore
import NIOWebSocket

/// A WebSocket text frame as it goes on the wire from a server (unmasked, no extensions), so one
/// encoding serves every connection.
enum WireFrame {
    static func text(_ payload: ByteBuffer) -> ByteBuffer {
        frame(opcode: 0x1, payload)
    }

    static let ping = frame(opcode: 0x9, ByteBuffer())

    static func close(code: UInt16, reason: String) -> ByteBuffer {
        var payload = ByteBuffer()
        payload.writeInteger(code)
        payload.writeString(reason)
        return frame(opcode: 0x8, payload)
    }

    private static func frame(opcode: UInt8, _ payload: ByteBuffer) -> ByteBuffer {
        let n = payload.readableBytes
        var out = ByteBufferAllocator().buffer(capacity: n + 10)
        out.writeInteger(0x80 | opcode)  // FIN
        if n < 126 {
            out.writeInteger(UInt8(n))
        } else if n <= Int(UInt16.max) {
            out.writeInteger(UInt8(126))
            out.writeInteger(UInt16(n))
        } else {
            out.writeInteger(UInt8(127))
            out.writeInteger(UInt64(n))
        }
        var p = payload
        out.writeBuffer(&p)
        return out
    }
}

/// A `/v1/events` connection that has caught up. The bus writes the already-encoded frames of
/// new events straight to its socket on the channel's event loop: no task wakes per connection
/// per event, no per-connection encoding, and whatever the bus hands over in one go leaves in one
/// flush.
///
/// `cursor`, `ending` and the wire's context are only touched on the channel's event loop; that
/// is the invariant that makes the unchecked `Sendable` sound.
final class LiveFeed: @unchecked Sendable {
    // What a push reads first, together: a pass over a loop's feeds finds each of them out of
    // the processor's cache, so the fewer places it reads, the fewer misses per delivery.
    let wire: FeedWire
    /// The last event this connection has been handed (written, or skipped as not its audience).
    private var cursor: Int64 = 0
    /// Until the replay through the socket's writer is done, the bus only pings and sends
    /// ephemeral frames.
    private var replaying = true
    private var ending = false
    /// Read by the push on the event loop and by the connection's task (replay, typing); held
    /// here rather than in a box of its own, for the same reason.
    let audiences: Mutex<Audiences>
    let user: String
    /// The session the feed was opened with (a ticket's issuing session); its end closes the feed.
    let session: String?
    let closeTimeout: TimeAmount

    init(user: String, session: String?, wire: FeedWire, audiences: Audiences, closeTimeout: TimeAmount) {
        self.user = user
        self.session = session
        self.wire = wire
        self.audiences = Mutex(audiences)
        self.closeTimeout = closeTimeout
    }

    /// Puts the feed's wire into `channel`'s pipeline; the bus writes to the feed again whenever
    /// the channel drains. On the channel's event loop. The wire holds the feed weakly, as the
    /// feed holds the wire: a closed connection's feed is freed.
    func install(in channel: any Channel, bus: EventBus) throws {
        wire.onWritable = { [weak self] in
            guard let feed = self else { return }
            feed.eventLoop.execute { bus.pushPending(feed) }
        }
        try wire.install(in: channel)
    }

    /// Ends the replay at `cursor`: from here the bus writes everything after it.
    func goLive(from cursor: Int64, bus: EventBus) async {
        try? await eventLoop.submit {
            self.cursor = cursor
            self.replaying = false
            bus.pushPending(self)
        }.get()
    }

    /// Closes from the connection's task (the replay), the same way the bus does.
    func end(code: UInt16, reason: String) async {
        try? await eventLoop.submit { self.end(code: code, reason: reason) }.get()
    }

    var eventLoop: any EventLoop { wire.eventLoop }

    /// Writes what this connection has not had yet. `batch` holds the events after `batchBase`,
    /// the common case; a connection elsewhere (it was not writable a moment ago) reads the
    /// bus's window. Writes stop when the channel stops being writable, so what waits in memory
    /// for a slow reader is bounded by the channel's high-water mark plus one write; the
    /// connection resumes when the channel drains or, if the window has moved past it by then,
    /// is told to resume from its cursor.
    func push(batch: ArraySlice<FeedEvent>, batchBase: Int64, windowBase: Int64, bus: EventBus) {
        eventLoop.preconditionInEventLoop()
        guard !ending, !replaying else { return }
        // Checked even when the channel cannot take writes: a reader that stopped reading must
        // not hold its place for ever.
        guard cursor >= windowBase else { return end(code: FeedCloseCode.resume, reason: "resume from your cursor") }
        // Everything this connection has waiting goes out in one write (one system call and one
        // TCP segment, up to `Frames.limit`), not one per event: a connection several events
        // behind (the server fell behind, or one commit logged several) catches up for the
        // cost of one, so a backlog drains faster than it formed.
        var frames = Frames()
        var wrote = false
        func send() {
            guard let bytes = frames.take() else { return }
            wire.write(bytes)
            wrote = true
        }
        defer {
            send()
            if wrote { wire.flush() }
        }
        // Up to the newest event, not only the pass's batch: one that committed while this
        // loop's pass was on its way to this connection rides along in the same write.
        while wire.isWritable, cursor < bus.head {
            let events: ArraySlice<FeedEvent>
            if cursor == batchBase, !batch.isEmpty {
                events = batch
            } else {
                switch bus.window(after: cursor, limit: Self.chunk) {
                case .events(let e):
                    if e.isEmpty { return }
                    events = e[...]
                case .behind:
                    send()
                    return end(code: FeedCloseCode.resume, reason: "resume from your cursor")
                }
            }
            // One lock for the whole run of events, not one per event.
            let signedOut = audiences.withLock { a -> Bool? in
                for e in events {
                    guard wire.isWritable else { return nil }
                    if e.change?.ends(user: user, session: session) == true { return true }
                    if a.admit(e) {
                        frames.add(e.wire)
                        // Bounded, so what a slow reader makes wait in memory stays the channel's
                        // high-water mark plus one write.
                        if frames.bytes >= Frames.limit { send() }
                    }
                    cursor = e.seq
                }
                return false
            }
            switch signedOut {
            case true?:
                send()
                return end(code: FeedCloseCode.signedOut, reason: "signed out")
            case nil: return
            case false?: continue
            }
        }
    }

    static let chunk = 1000

    /// Wire frames to send in one write. One frame is passed on as it is (the frame every
    /// connection shares); a second starts a buffer of this connection's own.
    struct Frames {
        static let limit = 64 * 1024
        private var first: ByteBuffer?
        private var joined: ByteBuffer?
        private(set) var bytes = 0

        mutating func add(_ frame: ByteBuffer) {
            bytes += frame.readableBytes
            if joined != nil {
                joined!.writeImmutableBuffer(frame)
            } else if let one = first {
                var buffer = ByteBufferAllocator().buffer(capacity: max(4 * one.readableBytes, one.readableBytes + frame.readableBytes))
                buffer.writeImmutableBuffer(one)
                buffer.writeImmutableBuffer(frame)
                joined = buffer
                first = nil
            } else {
                first = frame
            }
        }

        /// What was added since the last take, if anything.
        mutating func take() -> ByteBuffer? {
            defer { (first, joined, bytes) = (nil, nil, 0) }
            return joined ?? first
        }
    }

    /// A frame that is never stored (typing, presence); dropped for a connection that cannot
    /// take it now, as a missed typing notice is harmless and presence is re-read on resume.
    func send(ephemeral wireFrame: ByteBuffer, audience: String, except: String?) {
        eventLoop.preconditionInEventLoop()
        guard !ending, wire.isWritable, except != user, audiences.withLock({ $0.contains(audience) }) else { return }
        wire.write(wireFrame)
        wire.flush()
    }

    /// Pings, or ends a connection that has been silent since `silentSince`.
    func heartbeat(silence: TimeAmount) {
        eventLoop.preconditionInEventLoop()
        guard !ending else { return }
        guard !wire.hasBeenSilent(for: silence) else {
            return end(code: FeedCloseCode.resume, reason: "no answer to pings")
        }
        wire.write(WireFrame.ping)
        wire.flush()
    }

    /// Sends the close frame (after whatever is still queued) and drops the connection if the
    /// client has not completed the close by the timeout: a reader that stopped reading never
    /// will. The connection's task ends when the socket does.
    private func end(code: UInt16, reason: String) {
        guard !ending else { return }
        ending = true
        wire.write(WireFrame.close(code: code, reason: reason))
        wire.flush()
        wire.close(after: closeTimeout)
    }
}
