import Crypto
import Foundation

/// Random tokens (stored only as SHA-256 hashes) and random identifiers.
public enum Secrets {
    /// `count` bytes from the system's generator, eight per call. (Foundation's `UUID()` opens,
    /// reads and closes /dev/urandom on Linux, and `UInt8.random(using:)` draws eight bytes for
    /// each byte it returns.)
    public static func randomBytes(_ count: Int) -> [UInt8] {
        var rng = SystemRandomNumberGenerator()
        var out: [UInt8] = []
        out.reserveCapacity(count + 7)
        while out.count < count { withUnsafeBytes(of: rng.next() as UInt64) { out.append(contentsOf: $0) } }
        out.removeLast(out.count - count)
        return out
    }

    /// A new identifier: a random (version 4) UUID in lower case, the form every id of the API has.
    public static func uuid() -> String {
        var b = randomBytes(16)
        b[6] = (b[6] & 0x0f) | 0x40
        b[8] = (b[8] & 0x3f) | 0x80
        let h = Array(hex(b).utf8)
        var out: [UInt8] = []
        out.reserveCapacity(36)
        for (i, c) in h.enumerated() {
            if i == 8 || i == 12 || i == 16 || i == 20 { out.append(UInt8(ascii: "-")) }
            out.append(c)
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Random bits (256 by default), base64url without padding.
    public static func token(prefix: String = "", bytes count: Int = 32) -> String {
        let b64 = Data(randomBytes(count)).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
        return prefix + b64
    }

    public static func sha256(_ text: String) -> String {
        hex(SHA256.hash(data: Data(text.utf8)))
    }

    /// Lower-case hexadecimal. (`String(format: "%02x")` per byte cost about 45 µs per token
    /// hash, on every authenticated request.)
    public static func hex<Bytes: Sequence>(_ bytes: Bytes) -> String where Bytes.Element == UInt8 {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(64)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
