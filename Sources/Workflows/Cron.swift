import Foundation
import ServiceKit
import Storage

/// A five-field cron schedule in UTC: minute hour day-of-month month day-of-week, each `*`, a
/// number, a range `a-b`, a step `*/n` or `a-b/n`, or a comma list of those. Day of week 0-6
/// (0 or 7 is Sunday). As in classic cron, when both day fields are restricted either may match.
public struct CronSchedule: Sendable, Equatable, CustomStringConvertible {
    public let description: String
    let minutes: Set<Int>, hours: Set<Int>, days: Set<Int>, months: Set<Int>, weekdays: Set<Int>
    let daysRestricted: Bool, weekdaysRestricted: Bool

    public struct ParseError: Error, CustomStringConvertible {
        public let description: String
    }

    public init(_ text: String) throws {
        let fields = text.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        guard fields.count == 5 else { throw ParseError(description: "a cron schedule has 5 fields: \(text)") }
        description = text
        minutes = try Self.field(fields[0], 0...59)
        hours = try Self.field(fields[1], 0...23)
        days = try Self.field(fields[2], 1...31)
        months = try Self.field(fields[3], 1...12)
        weekdays = Set(try Self.field(fields[4], 0...7).map { $0 % 7 })
        daysRestricted = fields[2] != "*"
        weekdaysRestricted = fields[4] != "*"
    }

    static func field(_ text: String, _ range: ClosedRange<Int>) throws -> Set<Int> {
        var out: Set<Int> = []
        for part in text.split(separator: ",") {
            let pieces = part.split(separator: "/", maxSplits: 1).map(String.init)
            let step = pieces.count == 2 ? Int(pieces[1]) : 1
            guard let step, step > 0 else { throw ParseError(description: "bad step in \(text)") }
            var lo = range.lowerBound, hi = range.upperBound
            if pieces[0] != "*" {
                let bounds = pieces[0].split(separator: "-", maxSplits: 1).map { Int($0) }
                guard let a = bounds.first ?? nil, range.contains(a) else { throw ParseError(description: "bad value in \(text)") }
                lo = a
                hi = pieces.count == 2 && bounds.count == 1 ? range.upperBound : a
                if bounds.count == 2 {
                    guard let b = bounds[1], range.contains(b), b >= a else { throw ParseError(description: "bad range in \(text)") }
                    hi = b
                }
            }
            out.formUnion(stride(from: lo, through: hi, by: step))
        }
        return out
    }

    /// The first minute strictly after `time` that the schedule names (within eight years).
    public func next(after time: Timestamp) -> Timestamp? {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let startSeconds = (time.microseconds / 1_000_000 / 60 + 1) * 60
        var date = Date(timeIntervalSince1970: Double(startSeconds))
        let limit = date.addingTimeInterval(8 * 366 * 86400)
        while date < limit {
            let c = calendar.dateComponents([.minute, .hour, .day, .month, .weekday], from: date)
            guard let month = c.month, months.contains(month) else {
                // Skip to the first minute of the next month.
                let start = calendar.date(from: calendar.dateComponents([.year, .month], from: date))!
                date = calendar.date(byAdding: .month, value: 1, to: start)!
                continue
            }
            let dayOK: Bool
            let dom = days.contains(c.day!), dow = weekdays.contains(c.weekday! - 1)
            if daysRestricted && weekdaysRestricted { dayOK = dom || dow } else { dayOK = dom && dow }
            guard dayOK else {
                date = calendar.date(byAdding: .day, value: 1, to: calendar.startOfDay(for: date))!
                continue
            }
            guard hours.contains(c.hour!) else {
                let hourStart = calendar.date(from: calendar.dateComponents([.year, .month, .day, .hour], from: date))!
                date = hourStart.addingTimeInterval(3600)
                continue
            }
            if minutes.contains(c.minute!) { return Timestamp(date) }
            date = date.addingTimeInterval(60)
        }
        return nil
    }
}

/// The trigger of a scheduled run: the time it was due.
public struct CronTick: DomainEvent {
    public static let name = "cron.tick"
    public var scheduledAt: Timestamp
}

extension WorkflowFunction {
    /// A function run on a cron schedule (UTC). Missed ticks are not made up: after downtime the
    /// latest one due runs once. Every node may fire it; the tick's time makes it run once.
    public init(
        _ id: String, cron: String, retries: Int = 3, backoff: Backoff = Backoff(), timeout: Duration? = nil,
        _ body: @escaping @Sendable (CronTick, Step) async throws -> Void
    ) throws {
        let schedule = try CronSchedule(cron)
        self.init(id, on: CronTick.self, retries: retries, backoff: backoff, timeout: timeout,
                  idempotencyKey: { "cron:\($0.scheduledAt.microseconds)" }, body)
        self.schedule = schedule
    }
}

extension RunStore {
    /// Starts the run of each scheduled function whose latest tick up to `now` has not run yet.
    func fireSchedules(_ functions: [WorkflowFunction], now: Timestamp) async throws -> Bool {
        var fired = false
        for f in functions {
            guard let schedule = f.schedule else { continue }
            fired = try await db.write { tx -> Bool in
                let lock = tx.dialect == .postgres ? " FOR UPDATE" : ""
                guard let row = try await tx.first("SELECT last_at FROM workflow_schedules WHERE function_id = $1\(lock)", f.id) else {
                    // First sight of this schedule: start counting from now.
                    try await tx.query(
                        "INSERT INTO workflow_schedules (function_id, last_at) VALUES ($1, $2) ON CONFLICT (function_id) DO NOTHING",
                        f.id, now)
                    return false
                }
                var due: Timestamp?
                var cursor = try row.timestamp("last_at")
                while let next = schedule.next(after: cursor), next <= now {
                    due = next
                    cursor = next
                }
                guard let due else { return false }
                let tick = CronTick(scheduledAt: due)
                let payload = String(decoding: try JSON.encode(tick), as: UTF8.self)
                let head = try await EventLog.head(in: tx)
                try await tx.query(
                    """
                    INSERT INTO workflow_runs (id, function_id, event_type, event_payload, event_seq, idempotency_key,
                        status, run_at, created_at)
                    VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7, $7)
                    ON CONFLICT (function_id, idempotency_key) DO NOTHING
                    """,
                    Secrets.uuid(), f.id, CronTick.name, payload, head, "cron:\(due.microseconds)", now)
                try await tx.query("UPDATE workflow_schedules SET last_at = $2 WHERE function_id = $1", f.id, due)
                return true
            } || fired
        }
        return fired
    }
}
