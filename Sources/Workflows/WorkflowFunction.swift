import Foundation
import ServiceKit
import Storage

/// An error that retrying cannot fix (a bad address, a deleted record): the run fails at once.
public struct NonRetryableError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// How long to wait before retry `n` (1-based): `base * 2^(n-1)` capped at `max`, then a random
/// point in its upper half, so runs that failed together do not retry together.
public struct Backoff: Sendable {
    public var base: Duration
    public var max: Duration

    public init(base: Duration = .seconds(2), max: Duration = .seconds(600)) {
        self.base = base
        self.max = max
    }

    /// The delay before retry `n` without jitter.
    public func ceiling(_ n: Int) -> Double {
        min(base.seconds * pow(2, Double(min(n, 40) - 1)), max.seconds)
    }

    func delay(_ n: Int) -> Double {
        let c = ceiling(n)
        return Double.random(in: (c / 2)...c)
    }
}

/// Runs of a function that share a key run at most `limit` at a time (e.g. one per user).
public struct Concurrency<E: DomainEvent>: Sendable {
    public let limit: Int
    public let key: @Sendable (E) -> String
    public init(limit: Int, key: @escaping @Sendable (E) -> String) {
        self.limit = limit
        self.key = key
    }
}

/// A run is cancelled when an event of type `C` arrives whose JSON fields equal `match(trigger)`.
public struct CancelOn<E: DomainEvent>: Sendable {
    let event: String
    let match: @Sendable (E) -> [String: String]
    public init<C: DomainEvent>(_ type: C.Type, match: @escaping @Sendable (E) -> [String: String]) {
        self.event = C.name
        self.match = match
    }
}

/// A durable function: triggered by an event type, written as plain async Swift whose `step`s
/// are stored, so a retried or resumed run skips what already finished.
public struct WorkflowFunction: Sendable {
    public let id: String
    public let trigger: String
    public let retries: Int
    public let backoff: Backoff
    public let timeout: Duration?
    /// Set for functions run on a schedule rather than by events.
    public internal(set) var schedule: CronSchedule?
    let cancelEvent: String?
    /// Decodes the trigger's payload into what the dispatcher stores with the run; nil when the
    /// filter rejects it.
    let admit: @Sendable (_ payload: String, _ seq: Int64) throws -> Admission?
    let body: @Sendable (_ payload: String, _ step: Step) async throws -> Void

    struct Admission: Sendable {
        var idempotencyKey: String
        var concurrencyKey: String?
        var concurrencyLimit: Int
        var cancelMatch: [String: String]?
    }

    /// A function run for every `E` in the log that passes `filter`.
    /// - idempotencyKey: runs with equal keys run once (default: once per log entry).
    public init<E: DomainEvent>(
        _ id: String,
        on type: E.Type,
        retries: Int = 3,
        backoff: Backoff = Backoff(),
        timeout: Duration? = nil,
        concurrency: Concurrency<E>? = nil,
        idempotencyKey: (@Sendable (E) -> String)? = nil,
        cancelOn: CancelOn<E>? = nil,
        filter: (@Sendable (E) -> Bool)? = nil,
        _ body: @escaping @Sendable (E, Step) async throws -> Void
    ) {
        precondition(retries >= 0, "retries must not be negative")
        self.id = id
        self.trigger = E.name
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.cancelEvent = cancelOn?.event
        self.admit = { payload, seq in
            let event = try JSON.decoder().decode(E.self, from: Data(payload.utf8))
            if let filter, !filter(event) { return nil }
            return Admission(
                idempotencyKey: idempotencyKey.map { "key:" + $0(event) } ?? "seq:\(seq)",
                concurrencyKey: concurrency.map { $0.key(event) },
                concurrencyLimit: concurrency?.limit ?? 0,
                cancelMatch: cancelOn.map { $0.match(event) })
        }
        self.body = { payload, step in
            let event: E
            do {
                event = try JSON.decoder().decode(E.self, from: Data(payload.utf8))
            } catch {
                throw NonRetryableError("the event does not decode as \(E.self): \(error)")
            }
            try await body(event, step)
        }
    }
}

/// Whether an event's JSON has every field of `match` with that value (compared as text).
enum EventMatch {
    static func matches(_ payload: String, _ match: [String: String]) -> Bool {
        guard let object = try? JSONSerialization.jsonObject(with: Data(payload.utf8)) as? [String: Any] else {
            return false
        }
        for (field, want) in match {
            guard let have = object[field] else { return false }
            switch have {
            case let s as String: if s != want { return false }
            case let n as NSNumber: if n.stringValue != want { return false }
            default: return false
            }
        }
        return true
    }
}
