// Jobs per second and enqueue-to-start latency of the workflow engine (Sources/Workflows).
//
//   swift build -c release --product jobs-bench
//   .build/release/jobs-bench [--postgres ADMIN_URL] [--jobs N] [--rate JOBS_PER_S] [--seconds S] [--workers 1,2,4]
//
// Each job is one run of a function with one memoised step (`step.run`), triggered by a typed
// event appended to the log, as the product's functions are. For each worker count, on a fresh
// database:
//   1. burn-down: N events are logged first, then the workers start; jobs/s = N / time until
//      every run is stored as completed (dispatch, claim, step, completion: all included);
//   2. latency: events are logged one per transaction at a steady rate (open loop, below
//      capacity) and the time from logging an event to its function starting is recorded.
// SQLite runs one engine with W concurrent runs (one node is all SQLite has); PostgreSQL runs W
// engines with one run each, every engine on its own connection pool, as W worker processes.
import Foundation
import Logging
import NIOConcurrencyHelpers
import ServiceKit
import Storage
import Workflows

struct Options {
    var postgres: String?
    var jobs = 2000
    var rate = 50.0
    var seconds = 10.0
    var workers = [1, 2, 4]

    init() {
        var args = CommandLine.arguments.dropFirst().makeIterator()
        while let a = args.next() {
            switch a {
            case "--postgres": postgres = args.next()!
            case "--jobs": jobs = Int(args.next()!)!
            case "--rate": rate = Double(args.next()!)!
            case "--seconds": seconds = Double(args.next()!)!
            case "--workers": workers = args.next()!.split(separator: ",").map { Int($0)! }
            default: fatalError("unknown option \(a)")
            }
        }
    }
}

struct Job: DomainEvent {
    static let name = "bench.job"
    var n: Int
    /// When the event was logged, in microseconds since 1970.
    var enqueuedAt: Int64
}

/// First start of each job, as latency in milliseconds.
final class Recorder: Sendable {
    private let starts = NIOLockedValueBox<[Int: Double]>([:])

    func started(_ job: Job) {
        let ms = Double(Timestamp.now().microseconds - job.enqueuedAt) / 1000
        starts.withLockedValue { s in if s[job.n] == nil { s[job.n] = ms } }
    }

    func latencies(from: Int) -> [Double] {
        starts.withLockedValue { $0.filter { $0.key >= from }.map(\.value) }.sorted()
    }

    var count: Int { starts.withLockedValue { $0.count } }
}

func percentile(_ sorted: [Double], _ p: Double) -> Double {
    guard !sorted.isEmpty else { return .nan }
    return sorted[min(sorted.count - 1, Int((Double(sorted.count) * p).rounded(.up)) - 1)]
}

let logger: Logger = {
    var l = Logger(label: "jobs-bench")
    l.logLevel = .error
    return l
}()

/// A fresh database: a SQLite file, or a new database on the PostgreSQL server.
func freshDatabase(_ options: Options) async throws -> (url: String, drop: @Sendable () async throws -> Void) {
    guard let admin = options.postgres else {
        let path = NSTemporaryDirectory() + "jobs-bench-\(UUID().uuidString).sqlite"
        return (path, { for s in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + s) } })
    }
    let name = "jobs_bench_" + UUID().uuidString.prefix(8).lowercased()
    try await withDatabase(url: admin, logger: logger) { db in try await db.read { try await $0.query("CREATE DATABASE \(name)") } }
    var c = URLComponents(string: admin)!
    c.path = "/" + name
    return (c.string!, {
        try await withDatabase(url: admin, logger: logger) { db in
            try await db.read { try await $0.query("DROP DATABASE IF EXISTS \(name) WITH (FORCE)") }
        }
    })
}

/// Opens `count` databases on `url` (separate pools) and runs `body` with them.
func withDatabases<T: Sendable>(_ url: String, _ count: Int, _ opened: [any Database] = [],
                                _ body: @Sendable ([any Database]) async throws -> T) async throws -> T {
    if opened.count == count { return try await body(opened) }
    return try await withDatabase(url: url, logger: logger) { db in
        try await withDatabases(url, count, opened + [db], body)
    }
}

func completed(_ db: any Database) async throws -> Int {
    Int(try await db.read { try await $0.first("SELECT COUNT(*) AS n FROM workflow_runs WHERE status = 'completed'")?.int("n") ?? 0 })
}

struct Result {
    var jobsPerSecond: Double
    var p50: Double
    var p99: Double
    var latencySamples: Int
}

func measure(_ options: Options, workers: Int) async throws -> Result {
    let (url, drop) = try await freshDatabase(options)
    do {
        let result = try await run(options, workers: workers, url: url)
        try await drop()
        return result
    } catch {
        try? await drop()
        throw error
    }
}

func run(_ options: Options, workers: Int, url: String) async throws -> Result {
    let jobs = options.jobs
    // The burn-down's jobs are logged before any worker runs.
    try await withDatabase(url: url, logger: logger) { db in
        try await Migrator.migrate(db, WorkflowEngine.migrations)
        var n = 0
        while n < jobs {
            let batch = min(500, jobs - n)
            let first = n
            try await db.write { tx in
                for i in first..<(first + batch) {
                    try await EventLog.append(tx, Job(n: i, enqueuedAt: Timestamp.now().microseconds))
                }
            }
            n += batch
        }
    }
    let recorder = Recorder()
    let function = WorkflowFunction("bench", on: Job.self) { job, step in
        recorder.started(job)
        try await step.run("work") { job.n }
    }
    let postgres = options.postgres != nil
    let engineCount = postgres ? workers : 1
    let config: WorkflowEngine.Configuration = {
        var c = WorkflowEngine.Configuration()
        c.workers = postgres ? 1 : workers
        return c
    }()
    let rate = options.rate, seconds = options.seconds
    return try await withDatabases(url, engineCount) { dbs in
        let engines = dbs.map { WorkflowEngine(db: $0, functions: [function], configuration: config, logger: logger) }
        return try await withThrowingTaskGroup(of: Result?.self) { group in
            let start = ContinuousClock.now
            for e in engines {
                try await e.prepare()
                group.addTask { () -> Result? in
                    try await e.run()
                    return nil
                }
            }
            group.addTask {
                let db = dbs[0]
                while try await completed(db) < jobs { try await Task.sleep(for: .milliseconds(20)) }
                let elapsed = ContinuousClock.now - start
                let jobsPerSecond = Double(jobs) / elapsed.seconds
                // Steady arrivals, one event per transaction, on a fixed schedule.
                let total = Int(rate * seconds)
                let interval = 1.0 / rate
                let begin = ContinuousClock.now
                try await withThrowingTaskGroup(of: Void.self) { senders in
                    for i in 0..<total {
                        try await Task.sleep(until: begin.advanced(by: .milliseconds(Int64(Double(i) * interval * 1000))))
                        senders.addTask { () -> Void in
                            _ = try await db.write { tx in
                                try await EventLog.append(tx, Job(n: jobs + i, enqueuedAt: Timestamp.now().microseconds))
                            }
                        }
                    }
                    try await senders.waitForAll()
                }
                while recorder.count < jobs + total { try await Task.sleep(for: .milliseconds(20)) }
                let latencies = recorder.latencies(from: jobs)
                return Result(jobsPerSecond: jobsPerSecond, p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99),
                              latencySamples: latencies.count)
            }
            defer { group.cancelAll() }
            while let r = try await group.next() { if let r { return r } }
            fatalError("engines stopped")
        }
    }
}

let options = Options()
let engine = options.postgres == nil ? "SQLite" : "PostgreSQL"
print("| database | workers | burn-down jobs | jobs/s | steady rate (jobs/s) | enqueue-to-start p50 ms | p99 ms |")
print("|---|---|---|---|---|---|---|")
for w in options.workers {
    let r = try await measure(options, workers: w)
    print(String(format: "| %@ | %d | %d | %.0f | %.0f (%d jobs) | %.1f | %.1f |",
                 engine, w, options.jobs, r.jobsPerSecond, options.rate, r.latencySamples, r.p50, r.p99))
}
