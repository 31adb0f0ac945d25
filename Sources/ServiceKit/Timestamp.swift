import Foundation

/// A point in time with microsecond precision. Stored as integer microseconds since 1970,
/// spoken as an RFC 3339 UTC string with milliseconds (`2021-04-28T10:00:00.123Z`).
public struct Timestamp: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
    public var microseconds: Int64

    public init(microseconds: Int64) { self.microseconds = microseconds }
    public init(_ date: Date) { self.microseconds = Int64((date.timeIntervalSince1970 * 1_000_000).rounded()) }
    public static func now() -> Timestamp { Timestamp(Date()) }

    public var date: Date { Date(timeIntervalSince1970: Double(microseconds) / 1_000_000) }
    public static func < (a: Timestamp, b: Timestamp) -> Bool { a.microseconds < b.microseconds }
    public func adding(seconds: Double) -> Timestamp {
        Timestamp(microseconds: microseconds + Int64(seconds * 1_000_000))
    }
    public func adding(_ duration: Duration) -> Timestamp { adding(seconds: duration.seconds) }

    public var description: String { rfc3339 }

    public var rfc3339: String {
        // Built from the integer microseconds: going through Date's Double would turn .123 into .122.
        let seconds = microseconds >= 0 ? microseconds / 1_000_000 : (microseconds - 999_999) / 1_000_000
        let millis = (microseconds - seconds * 1_000_000) / 1000
        let base = Date(timeIntervalSince1970: Double(seconds)).formatted(Date.ISO8601FormatStyle(timeZone: .gmt))
        let millisText = String(millis)
        return String(base.dropLast()) + "." + String(repeating: "0", count: 3 - millisText.count) + millisText + "Z"
    }

    public init?(rfc3339 text: String) {
        let withFraction = Date.ISO8601FormatStyle(includingFractionalSeconds: true, timeZone: .gmt)
        let plain = Date.ISO8601FormatStyle(timeZone: .gmt)
        if let d = try? withFraction.parse(text) {
            self.init(d)
        } else if let d = try? plain.parse(text) {
            self.init(d)
        } else {
            return nil
        }
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        let text = try c.decode(String.self)
        guard let t = Timestamp(rfc3339: text) else {
            throw DecodingError.dataCorrupted(.init(
                codingPath: decoder.codingPath,
                debugDescription: "must be an RFC 3339 timestamp such as 2021-04-28T10:00:00.123Z"))
        }
        self = t
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rfc3339)
    }
}

extension Duration {
    /// The duration in seconds, fractions included (what rates and `Timestamp.adding` take).
    public var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
