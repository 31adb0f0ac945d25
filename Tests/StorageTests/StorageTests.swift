import CNIOLinux
import Foundation
import NIOConcurrencyHelpers
import ServiceKit
@testable import Storage
import Testing
import TestSupport

struct Note: Codable, Sendable { var text: String }

enum NoteCreated: EventKind {
    typealias Payload = Note
    static let name = "note.created"
}

let notes = Migration(service: "notes", version: 1, [
    "CREATE TABLE notes (id {{serial}}, text TEXT NOT NULL UNIQUE, n BIGINT, score DOUBLE PRECISION, data {{blob}})"
])

@Suite("storage: one code path on SQLite and PostgreSQL")
struct StorageTests {
    @Test(arguments: Backend.all)
    func migrationsApplyOnce(_ backend: Backend) async throws {
        try await TestDatabase.with(backend, migrations: [notes]) { db in
            let first = try await Migrator.migrate(db, [notes])
            #expect(first.isEmpty)  // `with` already applied them
            let rows = try await db.read { try await $0.query("SELECT service, version FROM schema_migrations ORDER BY service, version") }
            #expect(try rows.map { "\(try $0.string("service")) v\(try $0.int("version"))" } == ["events v1", "events v2", "notes v1"])
            let v2 = Migration(service: "notes", version: 2, ["CREATE INDEX notes_n ON notes (n)"])
            #expect(try await Migrator.migrate(db, [notes, v2]) == ["notes v2"])
            #expect(try await Migrator.migrate(db, [notes, v2]).isEmpty)
        }
    }

    @Test(arguments: Backend.all)
    func valuesRoundTrip(_ backend: Backend) async throws {
        try await TestDatabase.with(backend, migrations: [notes]) { db in
            let text = "Zoë 👩🏽‍💻 שלום e\u{0301} 'quoted' $1 \"double\"\nline\ttab"
            try await db.write { tx in
                try await tx.query(
                    "INSERT INTO notes (text, n, score, data) VALUES ($1, $2, $3, $4)",
                    text, Int64.max, 2.5, SQLValue.blob([0, 1, 255]))
                try await tx.query("INSERT INTO notes (text, n, score, data) VALUES ($1, $2, $3, $4)",
                                   "nulls", SQLValue.null, SQLValue.null, SQLValue.null)
            }
            let rows = try await db.read { try await $0.query("SELECT text, n, score, data FROM notes ORDER BY id") }
            #expect(rows.count == 2)
            #expect(try rows[0].string("text") == text)
            #expect(try rows[0].int("n") == Int64.max)
            #expect(try rows[0].value("score") == .double(2.5))
            #expect(try rows[0].value("data") == .blob([0, 1, 255]))
            #expect(try rows[1].optionalInt("n") == nil)
            #expect(try rows[1].optionalString("score") == nil)
            // Placeholders can repeat and come in any order.
            let r = try await db.read { try await $0.query("SELECT $2 AS b, $1 AS a, $2 AS c", "x", "y") }
            #expect(try r[0].string("b") == "y" && r[0].string("a") == "x" && r[0].string("c") == "y")
        }
    }

    @Test(arguments: Backend.all)
    func aFailedTransactionLeavesNothingNotEvenItsEvent(_ backend: Backend) async throws {
        try await TestDatabase.with(backend, migrations: [notes]) { db in
            struct Boom: Error {}
            await #expect(throws: Boom.self) {
                try await db.write { tx in
                    try await tx.query("INSERT INTO notes (text) VALUES ($1)", "half")
                    try await EventLog.append(tx, NoteCreated.event(Note(text: "half"), audience: "user:1"))
                    throw Boom()
                }
            }
            let left = try await db.read { try await $0.query("SELECT id FROM notes") }
            #expect(left.isEmpty)
            let head = try await EventLog.head(db)
            #expect(head == 0)
        }
    }

    /// A request cut off by its deadline is cancelled while its transaction runs: what it wrote
    /// is undone, even when the body itself does not notice the cancellation.
    @Test(arguments: Backend.all)
    func aWriteCancelledBeforeItCommitsIsUndone(_ backend: Backend) async throws {
        try await TestDatabase.with(backend, migrations: [notes]) { db in
            let started = ManagedFlag()
            let write = Task {
                try await db.write { tx in
                    try await tx.query("INSERT INTO notes (text) VALUES ($1)", "late")
                    try await EventLog.append(tx, NoteCreated.event(Note(text: "late"), audience: "user:1"))
                    started.set()
                    // Swallowed: the body goes on as a slow statement would.
                    try? await Task.sleep(for: .seconds(5))
                }
            }
            while !started.isSet { try await Task.sleep(for: .milliseconds(5)) }
            write.cancel()
            await #expect(throws: CancellationError.self) { try await write.value }
            #expect(try await db.read { try await $0.query("SELECT id FROM notes") }.isEmpty)
            #expect(try await EventLog.head(db) == 0)
            // The connection is usable afterwards.
            try await db.write { tx in try await tx.query("INSERT INTO notes (text) VALUES ($1)", "next") }
            #expect(try await db.read { try await $0.query("SELECT id FROM notes") }.count == 1)
        }
    }

    @Test(arguments: Backend.all)
    func uniqueViolationsAreRecognised(_ backend: Backend) async throws {
        try await TestDatabase.with(backend, migrations: [notes]) { db in
            try await db.write { try await $0.query("INSERT INTO notes (text) VALUES ($1)", "same") }
            do {
                try await db.write { try await $0.query("INSERT INTO notes (text) VALUES ($1)", "same") }
                Issue.record("expected a unique violation")
            } catch let error as StorageError {
                guard case .uniqueViolation = error else { Issue.record("wrong error \(error)"); return }
                #expect((error as any ServiceErrorConvertible).serviceError.status == .conflict)
            }
            // The database stays usable after the failed transaction.
            try await db.write { try await $0.query("INSERT INTO notes (text) VALUES ($1)", "other") }
        }
    }

    /// A row referring to one deleted meanwhile is a 404 for the caller, not a 500.
    @Test(arguments: Backend.all)
    func foreignKeyViolationsAreRecognised(_ backend: Backend) async throws {
        let tags = Migration(service: "tags", version: 1, [
            "CREATE TABLE tagged (note TEXT NOT NULL REFERENCES tag_notes (text) ON DELETE CASCADE, tag TEXT NOT NULL)",
        ])
        let parents = Migration(service: "tag_notes", version: 1, ["CREATE TABLE tag_notes (text TEXT PRIMARY KEY)"])
        try await TestDatabase.with(backend, migrations: [parents, tags]) { db in
            try await db.write { try await $0.query("INSERT INTO tag_notes (text) VALUES ($1)", "there") }
            try await db.write { try await $0.query("INSERT INTO tagged (note, tag) VALUES ($1, $2)", "there", "a") }
            do {
                try await db.write { try await $0.query("INSERT INTO tagged (note, tag) VALUES ($1, $2)", "gone", "b") }
                Issue.record("expected a foreign key violation")
            } catch let error as StorageError {
                guard case .foreignKeyViolation = error else { Issue.record("wrong error \(error)"); return }
                #expect((error as any ServiceErrorConvertible).serviceError.status == .notFound)
            }
            #expect(try await db.read { try await $0.query("SELECT tag FROM tagged") }.count == 1)
        }
    }

    @Test(arguments: Backend.all)
    func eventsAreInCommitOrderUnderConcurrentWriters(_ backend: Backend) async throws {
        try await TestDatabase.with(backend, migrations: [notes]) { db in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<40 {
                    group.addTask {
                        try await db.write { tx in
                            try await tx.query("INSERT INTO notes (text, n) VALUES ($1, $2)", "note \(i)", i)
                            try await EventLog.append(tx, NoteCreated.event(Note(text: "\(i)"), audience: "group:g"))
                        }
                    }
                }
                try await group.waitForAll()
            }
            let events = try await EventLog.read(db, after: 0)
            #expect(events.count == 40)
            #expect(events.map(\.seq) == events.map(\.seq).sorted())
            #expect(Set(events.map(\.payload)).count == 40)
            #expect(try await EventLog.head(db) == events.last?.seq)
            let tail = try await EventLog.read(db, after: events[29].seq)
            #expect(tail.map(\.seq) == Array(events[30...].map(\.seq)))
            #expect(try await EventLog.read(db, after: 0, limit: 5).count == 5)
        }
    }

    @Test(arguments: Backend.all)
    func readsRunWhileAWriteIsOpen(_ backend: Backend) async throws {
        try await TestDatabase.with(backend, migrations: [notes]) { db in
            try await db.write { try await $0.query("INSERT INTO notes (text) VALUES ($1)", "committed") }
            let (inside, signal) = AsyncStream<Void>.makeStream()
            let writerDone = ManagedFlag()
            let readDone = ManagedFlag()
            async let writer: Void = db.write { tx in
                try await tx.query("INSERT INTO notes (text) VALUES ($1)", "uncommitted")
                signal.yield()
                // Open until the read is back (not for a fixed time, which a loaded host's read
                // can outlast); a read that waited for the writer comes back after 30 s.
                try? await eventually("the read", seconds: 30) { readDone.isSet }
                writerDone.set()
            }
            for await _ in inside { break }
            // A reader neither waits for the writer nor sees its uncommitted row.
            let rows = try await db.read { try await $0.query("SELECT text FROM notes") }
            #expect(!writerDone.isSet)
            readDone.set()
            #expect(try rows.map { try $0.string("text") } == ["committed"])
            try await writer
            #expect(try await db.read { try await $0.query("SELECT text FROM notes") }.count == 2)
        }
    }

    @Test func sqliteFileIsWALAndSurvivesReopen() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("wal-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("nested/db.sqlite").path
        try await withDatabase(url: path, logger: TestDatabase.logger) { db in
            try await Migrator.migrate(db, [notes])
            let mode = try await db.read { try await $0.query("PRAGMA journal_mode") }
            #expect(try mode.first?.string("journal_mode") == "wal")
            try await db.write { try await $0.query("INSERT INTO notes (text) VALUES ($1)", "kept") }
        }
        try await withDatabase(url: "sqlite://" + path, logger: TestDatabase.logger) { db in
            #expect(try await Migrator.migrate(db, [notes]).isEmpty)
            let rows = try await db.read { try await $0.query("SELECT text FROM notes") }
            #expect(try rows.first?.string("text") == "kept")
        }
    }

    /// Statements are prepared once and kept: what a call binds must not outlive it, values
    /// come back as stored, and a kept statement follows a schema change.
    @Test func keptStatementsBindAndReadExactly() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("stmt-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = try await SQLiteDatabase.open(path: dir.appendingPathComponent("db.sqlite").path, logger: TestDatabase.logger)
        try await db.write { tx in
            try await tx.query("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b BLOB)")
            let insert = "INSERT INTO t (id, a, b) VALUES ($1, $2, $3)"
            try await tx.query(insert, 1, "first", SQLValue.blob([1, 2]))
            // Fewer values than parameters: the rest is NULL, not what the last call bound.
            try await tx.query(insert, 2)
            try await tx.query(insert, 3, "", SQLValue.blob([]))
            try await tx.query(insert, 4, "nul\u{0}inside", SQLValue.null)
        }
        let rows = try await db.read { try await $0.query("SELECT * FROM t ORDER BY id") }
        #expect(rows.map { $0.values["a"] } == [.text("first"), .null, .text(""), .text("nul\u{0}inside")])
        #expect(rows.map { $0.values["b"] } == [.blob([1, 2]), .null, .blob([]), .null])
        await #expect(throws: SQLiteError.self) {
            try await db.read { try await $0.query("SELECT a FROM t WHERE id = $1", 1, 2) }
        }
        // The kept `SELECT *` sees a column added after it was prepared.
        try await db.write { try await $0.query("ALTER TABLE t ADD COLUMN c INTEGER DEFAULT 7") }
        for _ in 0..<2 {  // the reader that ran it before (the pool hands out the last one back)
            let again = try await db.read { try await $0.query("SELECT * FROM t ORDER BY id") }
            #expect(again.first?.values["c"] == .int(7))
        }
        try await db.close()
    }

    /// A lookup runs where its caller runs, on a reader connection no one else holds meanwhile;
    /// closing waits for the lookups in progress instead of closing a connection under them.
    @Test func lookupsRunOnTheCallersThreadAndCloseWaitsForThem() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lookup-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = try await SQLiteDatabase.open(path: dir.appendingPathComponent("db.sqlite").path, logger: TestDatabase.logger)
        try await db.write { tx in
            try await tx.query("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT)")
            try await tx.query("INSERT INTO t (id, a) VALUES (1, 'one')")
        }
        let (value, thread) = try await db.lookup { conn in
            (try await conn.first("SELECT a FROM t WHERE id = $1", 1)?.string("a"), threadName())
        }
        #expect(value == "one")
        #expect(!thread.hasPrefix("SQLite"))
        let readThread = try await db.read { conn in _ = try await conn.query("SELECT 1"); return threadName() }
        #expect(readThread.hasPrefix("SQLite reader"), "\(readThread)")

        // A lookup of a few hundred milliseconds, and a close in the middle of it (the cooperative
        // pool has a thread for each).
        let slow = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000) SELECT SUM(i) AS s FROM n"
        let outcomes = await withTaskGroup(of: String.self) { group in
            group.addTask {
                do {
                    return try await db.lookup { try await $0.first(slow)?.int("s") } == 500_000_500_000 ? "sum" : "wrong"
                } catch {
                    return "\(error)"
                }
            }
            group.addTask {
                try? await Task.sleep(for: .milliseconds(30))
                try? await db.close()
                return "close"
            }
            return await group.reduce(into: [String]()) { $0.append($1) }
        }
        #expect(outcomes.sorted() == ["close", "sum"])
        await #expect(throws: StorageError.self) { try await db.lookup { try await $0.query("SELECT 1") } }
    }

    /// A read waiting for a reader when the database closes is refused (it must neither hang
    /// nor run on a closed connection), and the close still waits for the reader handed out.
    @Test func readsWaitingForAReaderAreRefusedWhenThePoolCloses() async throws {
        let pool = ReaderPool([1])
        let held = await pool.acquire()
        #expect(held == 1)
        let waiter = NIOLockedValueBox<Int??>(.none), closed = NIOLockedValueBox(false)
        Task { let got = await pool.acquire(); waiter.withLockedValue { $0 = .some(got) } }
        // Polled with a deadline: a hang fails the test instead of stopping the suite.
        func until(_ done: @escaping @Sendable () -> Bool) async throws {
            let deadline = ContinuousClock.now + .seconds(20)
            while !done(), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(2)) }
        }
        try await until { pool.waiting == 1 }
        #expect(pool.waiting == 1)
        Task { await pool.close(); closed.withLockedValue { $0 = true } }
        try await until { waiter.withLockedValue { $0 } != nil }
        #expect(waiter.withLockedValue { $0 } == .some(nil), "the waiting read is refused")
        #expect(!closed.withLockedValue { $0 }, "closing waits for the reader handed out")
        pool.release(held!)
        try await until { closed.withLockedValue { $0 } }
        #expect(closed.withLockedValue { $0 })
        #expect(await pool.acquire() == nil)
    }

    /// Commits never checkpoint (that would stall a send for milliseconds); the checkpointer
    /// beside them keeps the WAL from growing without end.
    @Test func theWALIsCheckpointedBesideCommitsAndStopsGrowing() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ckpt-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("db.sqlite").path
        let db = try await SQLiteDatabase.open(path: path, logger: TestDatabase.logger)
        try await Migrator.migrate(db, [notes])
        func walSize() throws -> Int { (try FileManager.default.attributesOfItem(atPath: path + "-wal")[.size] as? Int) ?? 0 }
        func fill(_ prefix: String) async throws {
            for i in 0..<200 {
                try await db.write { try await $0.query("INSERT INTO notes (text) VALUES ($1)", "\(prefix)\(i)" + String(repeating: "x", count: 2000)) }
            }
        }
        try await fill("a")
        try await fill("b")
        let unchecked = try walSize()
        try await fill("c")
        #expect(try walSize() > unchecked, "no checkpoint runs inside commits")
        let checkpointer = Task { await db.checkpoints(every: .milliseconds(20)) }
        // Without checkpoints every round of inserts makes the WAL longer; with them it starts
        // over and soon stops growing. Rounds, not a fixed wait: on a loaded machine the first
        // checkpoint can come late.
        var last = try walSize()
        var round = 0
        try await eventually("the WAL stops growing", seconds: 60) {
            round += 1
            try await Task.sleep(for: .milliseconds(100))
            try await fill("d\(round)-")
            let size = try walSize()
            defer { last = size }
            return size == last
        }
        checkpointer.cancel()
        await checkpointer.value
        try await db.close()
    }
}


final class ManagedFlag: Sendable {
    private let value = NIOLockedValueBox(false)
    func set() { value.withLockedValue { $0 = true } }
    var isSet: Bool { value.withLockedValue { $0 } }
}

/// The system's name of the thread running the caller (a synchronous function: async code may
/// move between threads; here that is the point).
func threadName() -> String {
    var name = [CChar](repeating: 0, count: 32)
    _ = CNIOLinux_pthread_getname_np(pthread_self(), &name, name.count)
    return String(cString: name)
}
