import Foundation
import ServiceKit
import Storage
import Testing
import TestSupport
import Workflows

@Suite("workflows: cron schedules")
struct CronTests {
    func at(_ text: String) -> Timestamp { Timestamp(rfc3339: text)! }

    @Test func schedulesNameTheNextMinute() throws {
        let every5 = try CronSchedule("*/5 * * * *")
        #expect(every5.next(after: at("2026-01-01T00:03:10Z")) == at("2026-01-01T00:05:00Z"))
        #expect(every5.next(after: at("2026-01-01T00:05:00Z")) == at("2026-01-01T00:10:00Z"))
        let mondays = try CronSchedule("30 9 * * 1")
        #expect(mondays.next(after: at("2026-01-01T00:00:00Z")) == at("2026-01-05T09:30:00Z"))
        let lists = try CronSchedule("0 8-10/2,23 1 2 *")
        #expect(lists.next(after: at("2026-01-15T00:00:00Z")) == at("2026-02-01T08:00:00Z"))
        #expect(lists.next(after: at("2026-02-01T08:00:00Z")) == at("2026-02-01T10:00:00Z"))
        #expect(lists.next(after: at("2026-02-01T10:00:00Z")) == at("2026-02-01T23:00:00Z"))
        for bad in ["* * * *", "61 * * * *", "*/0 * * * *", "5-1 * * * *", "a * * * *"] {
            #expect(throws: CronSchedule.ParseError.self) { try CronSchedule(bad) }
        }
    }

    /// Due ticks fire once, however many engines look; missed ticks are not made up.
    @Test(arguments: Backend.all)
    func ticksRunOnceOnEveryNode(_ backend: Backend) async throws {
        let probe = Probe()
        let clock = ManualClock(start: at("2026-01-01T00:03:00Z"))
        let f = try WorkflowFunction("every-5-minutes", cron: "*/5 * * * *") { tick, step in
            try await step.run("tick") { probe.note(tick.scheduledAt.rfc3339) }
        }
        let engines = backend == .postgres ? 3 : 1
        try await withEngines(backend, count: engines, clock: clock, [f]) { db, _ in
            // An engine counts a schedule from when it first sees it: move the clock only after.
            try await eventually("the schedule seen") {
                try await db.read { try await $0.first("SELECT last_at FROM workflow_schedules WHERE function_id = 'every-5-minutes'") } != nil
            }
            try await Task.sleep(for: .milliseconds(300))
            #expect(probe.log.isEmpty)
            clock.advance(by: .seconds(120))
            try await eventually("the 00:05 tick") { probe.log == ["2026-01-01T00:05:00.000Z"] }
            clock.advance(by: .seconds(60))
            try await Task.sleep(for: .milliseconds(300))
            #expect(probe.log.count == 1)
            // 00:10 and 00:15 passed while nobody looked: only the latest runs.
            clock.advance(by: .seconds(540))
            try await eventually("the 00:15 tick") { probe.log.count == 2 }
            try await Task.sleep(for: .milliseconds(300))
            #expect(probe.log == ["2026-01-01T00:05:00.000Z", "2026-01-01T00:15:00.000Z"])
            try await eventually("completed") {
                try await runs(db, function: "every-5-minutes").map(\.status) == ["completed", "completed"]
            }
        }
    }
}
