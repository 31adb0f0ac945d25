import Chats
import Foundation
import Groups
import NIOCore
import ServiceKit
@testable import Storage
import Testing
import TestSupport
@testable import Realtime

@Suite("realtime: the event bus's bounded window")
struct EventBusTests {
    struct Note: Codable, Sendable { var n: Int }
    enum NoteLogged: EventKind {
        typealias Payload = Note
        static let name = "note"
    }

    /// A live reader further behind than the ring is told so (the socket then closes with 4000,
    /// "resume from your cursor"); a replaying reader reads the log instead; memory stays bounded.
    @Test(arguments: Backend.all)
    func slowReadersFallOutOfTheWindow(_ backend: Backend) async throws {
        try await TestDatabase.with(backend) { db in
            let bus = EventBus(db: db, capacity: 5, logger: TestDatabase.logger)
            try await bus.prepare()
            for i in 0..<20 {
                try await db.write { tx in try await EventLog.append(tx, NoteLogged.event(Note(n: i), audience: "user:u")) }
            }
            try await bus.catchUp()
            let head = bus.head
            #expect(head >= 20)

            guard case .behind = bus.window(after: head - 10, limit: 100) else {
                Issue.record("a live reader 10 behind a 5-event window must be told it is behind")
                return
            }
            guard case .events(let replay, let through, true) = try await bus.replay(after: head - 10, limit: 100, audiences: ["user:u"]) else {
                Issue.record("a replaying reader reads the log")
                return
            }
            #expect(replay.map(\.seq) == Array((head - 9)...head) && through == head)
            guard case .events(let recent) = bus.window(after: head - 2, limit: 100) else {
                Issue.record("a reader within the window reads the ring")
                return
            }
            #expect(recent.map(\.seq) == [head - 1, head])
            guard case .events(let none) = bus.window(after: head, limit: 100) else {
                Issue.record("a reader at the head gets nothing")
                return
            }
            #expect(none.isEmpty)
            // A rolled-back append leaves a gap in a PostgreSQL sequence; a reader at the head must
            // not mistake the gap for falling behind.
            // (A bus started now has an empty ring, where the gap would sit right at its start.)
            let fresh = EventBus(db: db, capacity: 5, logger: TestDatabase.logger)
            try await fresh.prepare()
            struct Boom: Error {}
            try? await db.write { tx in
                try await EventLog.append(tx, NoteLogged.event(Note(n: -1), audience: "user:u"))
                throw Boom()
            }
            try await db.write { tx in try await EventLog.append(tx, NoteLogged.event(Note(n: 20), audience: "user:u")) }
            try await fresh.catchUp()
            guard case .events(let afterGap) = fresh.window(after: head, limit: 100) else {
                Issue.record("a gap in the sequence is not falling behind")
                return
            }
            #expect(afterGap.count == 1)
            // The frame is encoded once, with the cursor and the payload as stored.
            let frame = String(buffer: recent[1].frame)
            #expect(frame == #"{"type":"event","cursor":\#(head),"event":"note","data":{"n":19}}"#)
        }
    }

    /// A replay older than the window reads from the log only the reader's audiences' events
    /// and the joins and new chats that could add to them, and says how far it read.
    @Test(arguments: Backend.all)
    func aReplayFromTheLogReadsOnlyWhatMayConcernTheReader(_ backend: Backend) async throws {
        try await TestDatabase.with(backend) { db in
            let bus = EventBus(db: db, capacity: 2, logger: TestDatabase.logger)
            try await bus.prepare()
            let start = bus.head
            var seqs: [String: Int64] = [:]
            for (n, (type, audience)) in [
                ("note", "user:u"), ("note", "group:x"), ("member.joined", "group:x"), ("note", "group:x"),
                ("chat.created", "chat:c"), ("note", "user:u"), ("note", "group:y"), ("note", "group:y"),
            ].enumerated() {
                seqs["\(n)"] = try await db.write { tx in
                    try await EventLog.append(tx, type: type, audience: audience, payload: Note(n: n))
                }
            }
            try await bus.catchUp()
            #expect(bus.head == seqs["7"])
            guard case .events(let mine, let through, true) = try await bus.replay(after: start, limit: 100, audiences: ["user:u"]) else {
                Issue.record("a cursor older than the window is read from the log")
                return
            }
            #expect(mine.map(\.seq) == [seqs["0"], seqs["2"], seqs["4"], seqs["5"]])
            #expect(through == bus.head, "read to the head, past the others' last events")
            // A full page reads only as far as its last event.
            guard case .events(let page, let pageEnd, true) = try await bus.replay(after: start, limit: 2, audiences: ["user:u"]) else {
                Issue.record("a page from the log")
                return
            }
            #expect(page.map(\.seq) == [seqs["0"], seqs["2"], seqs["4"]] && pageEnd == seqs["4"])
            // A span of the log at a time: past it, nothing more is read, and `through` says so.
            let (spanned, spanEnd) = try await EventLog.read(db, after: start, audiences: ["user:u"], limit: 100, span: 3)
            #expect(spanned.map(\.seq) == [seqs["0"], seqs["2"]] && spanEnd == start + 3)
            // The widening events the log indexes are the ones a feed acts on.
            #expect(Set(EventLog.wideningTypes) == [MemberJoined.name, ChatCreated.name])
        }
    }

    /// On SQLite the bus takes committed events from the commit itself, without reading them
    /// back from the log; an event that does not follow its head is left to the log.
    @Test func committedEventsArriveWithoutReadingTheLog() async throws {
        try await TestDatabase.with(.sqlite) { db in
            let bus = EventBus(db: db, logger: TestDatabase.logger)
            try await bus.prepare()
            let start = bus.head
            try await db.write { tx in
                try await EventLog.append(tx, NoteLogged.event(Note(n: 1), audience: "user:u"))
                try await EventLog.append(tx, NoteLogged.event(Note(n: 2), audience: "user:u"))
            }
            #expect(bus.head == start + 2, "taken at the commit: nothing has read the log")
            guard case .events(let taken) = bus.window(after: start, limit: 10) else {
                Issue.record("the committed events are in the window")
                return
            }
            #expect(taken.map { String(buffer: $0.frame) } == [
                #"{"type":"event","cursor":\#(start + 1),"event":"note","data":{"n":1}}"#,
                #"{"type":"event","cursor":\#(start + 2),"event":"note","data":{"n":2}}"#,
            ])
            let stray = Event(seq: start + 5, type: "note", audience: "user:u", payload: #"{"n":5}"#, createdAt: .now())
            bus.ingest([stray])
            #expect(bus.head == start + 2, "an event out of line is not taken")
        }
    }

    /// A cursor the log has but this node's bus has not taken yet (another node committed it, or
    /// a replay read it from the log) is not from the future: the reader waits for the bus
    /// instead of being told to reload (and sent what it already had again).
    @Test(arguments: Backend.all)
    func aCursorAheadOfTheBusButInTheLogIsNoReload(_ backend: Backend) async throws {
        let test = try await TestDatabase.make(backend)
        do {
            try await Self.readAheadOfTheBus(url: test.url)
            try await test.drop()
        } catch {
            try? await test.drop()
            throw error
        }
    }

    static func readAheadOfTheBus(url: String) async throws {
        try await withDatabase(url: url, logger: TestDatabase.logger) { db in
            _ = try await Migrator.migrate(db, [])
            let bus = EventBus(db: db, logger: TestDatabase.logger)
            try await bus.prepare()
            let start = bus.head
            // Another node commits: this bus has not heard of it (nothing runs its log watch).
            try await withDatabase(url: url, logger: TestDatabase.logger) { other in
                for n in 0..<3 {
                    try await other.write { tx in try await EventLog.append(tx, NoteLogged.event(Note(n: n), audience: "user:u")) }
                }
            }
            let logHead = try await EventLog.head(db)
            #expect(bus.head == start && logHead == start + 3)
            guard case .events(let none, through: logHead, _) = try await bus.replay(after: logHead, limit: 100, audiences: ["user:u"]) else {
                Issue.record("a cursor the log has is no reason to reload")
                return
            }
            #expect(none.isEmpty)
            guard case .reload = try await bus.replay(after: logHead + 100, limit: 100, audiences: ["user:u"]) else {
                Issue.record("a cursor past the log's head is from the future")
                return
            }
            try await bus.catchUp()
            guard case .events(let caught) = bus.window(after: start, limit: 100) else {
                Issue.record("once caught up, the bus has them")
                return
            }
            #expect(caught.map(\.seq) == [start + 1, start + 2, start + 3])
        }
    }

    struct Big: Codable, Sendable { var text: String }
    enum BigLogged: EventKind {
        typealias Payload = Big
        static let name = "big"
    }

    /// Big events shrink the window: its memory stays bounded whatever the events' sizes.
    @Test func theWindowIsBoundedInBytes() async throws {
        try await TestDatabase.with(.sqlite) { db in
            // About 20 KB per event (its frame and its wire bytes): five fit in 100 KB.
            let bus = EventBus(db: db, capacity: 1000, capacityBytes: 100_000, logger: TestDatabase.logger)
            try await bus.prepare()
            let text = String(repeating: "x", count: 10_000)
            for _ in 0..<20 {
                try await db.write { tx in try await EventLog.append(tx, BigLogged.event(Big(text: text), audience: "user:u")) }
            }
            let head = bus.head
            guard case .events(let recent) = bus.window(after: head - 4, limit: 100) else {
                Issue.record("the newest events are in the window")
                return
            }
            #expect(recent.count == 4)
            guard case .behind = bus.window(after: head - 6, limit: 100) else {
                Issue.record("six big events do not fit in 100 KB")
                return
            }
        }
    }
}
