// Resume: what a reconnect from an old cursor costs the server when the log between holds mostly
// other people's events (a user back after a busy day elsewhere on the server).
import Foundation
#if canImport(Glibc)
import Glibc
#endif

enum Resume {
    /// Opens `/v1/events?since=cursor` `times` times, one after another, each until `expected`
    /// message events have arrived; returns the mean wall time per resume (ms).
    static func measure(port: Int, token: String, since cursor: Int64, expected: Int, times: Int) throws -> Double {
        var total: UInt64 = 0
        for _ in 0..<times {
            let start = nanos()
            let (fd, rest, _) = try FeedClients.open(port: port, token: token, since: cursor)
            defer { close(fd) }
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
            var bytes = rest
            var messages = 0
            var chunk = [UInt8](repeating: 0, count: 1 << 16)
            while messages < expected {
                var offset = 0
                while let frame = bytes.withUnsafeBytes({ wholeFrame($0, at: offset) }) {
                    let text = String(decoding: bytes[frame.payload], as: UTF8.self)
                    if text.contains(#""type":"reload""#) { throw HarnessError(description: "told to reload") }
                    if text.contains(#""event":"message.created""#) { messages += 1 }
                    offset = frame.payload.upperBound
                }
                bytes.removeFirst(offset)
                guard messages < expected else { break }
                let n = read(fd, &chunk, chunk.count)
                guard n > 0 else { throw HarnessError(description: "the server closed the resume after \(messages) messages") }
                bytes += chunk[0..<n]
            }
            total += nanos() - start
        }
        return Double(total) / Double(times) / 1e6
    }
}
