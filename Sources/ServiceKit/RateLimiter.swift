import Foundation

/// Token buckets keyed by a string (a client address, an account). In memory, per node:
/// with several nodes each enforces its own budget, which still bounds guessing.
public actor RateLimiter {
    public struct Rule: Sendable {
        /// Attempts allowed in a burst.
        public var burst: Int
        /// Seconds to regain one attempt.
        public var refillSeconds: Double

        public init(burst: Int, refillSeconds: Double) {
            self.burst = burst
            self.refillSeconds = refillSeconds
        }
    }

    private struct Bucket { var tokens: Double; var updated: ContinuousClock.Instant }
    private var buckets: [String: Bucket] = [:]
    private let rule: Rule
    private let maxKeys: Int

    public init(_ rule: Rule, maxKeys: Int = 100_000) {
        self.rule = rule
        self.maxKeys = maxKeys
    }

    /// Takes one token for `key`, or throws 429 with the seconds until one is back.
    public func take(_ key: String) throws {
        let now = ContinuousClock.now
        var bucket = refreshed(key, now)
        guard bucket.tokens >= 1 else {
            let wait = (1 - bucket.tokens) * rule.refillSeconds
            throw ServiceError.tooManyRequests(retryAfter: max(1, Int(wait.rounded(.up))))
        }
        bucket.tokens -= 1
        store(key, bucket)
    }

    /// Throws 429 if `key` has no token left, without taking one.
    public func check(_ key: String) throws {
        let bucket = refreshed(key, .now)
        guard bucket.tokens >= 1 else {
            let wait = (1 - bucket.tokens) * rule.refillSeconds
            throw ServiceError.tooManyRequests(retryAfter: max(1, Int(wait.rounded(.up))))
        }
    }

    /// Forgets `key`, e.g. after a successful login.
    public func reset(_ key: String) {
        buckets[key] = nil
    }

    private func refreshed(_ key: String, _ now: ContinuousClock.Instant) -> Bucket {
        guard var bucket = buckets[key] else { return Bucket(tokens: Double(rule.burst), updated: now) }
        let elapsed = bucket.updated.duration(to: now)
        bucket.tokens = min(Double(rule.burst), bucket.tokens + elapsed.seconds / rule.refillSeconds)
        bucket.updated = now
        return bucket
    }

    private func store(_ key: String, _ bucket: Bucket) {
        if buckets.count >= maxKeys {
            // Full buckets carry no information: drop them first to bound memory.
            buckets = buckets.filter { $0.value.tokens < Double(rule.burst) }
            if buckets.count >= maxKeys { buckets.removeAll(keepingCapacity: true) }
        }
        buckets[key] = bucket
    }
}
