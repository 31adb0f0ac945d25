// The senders: each a thread with one keep-alive HTTP/1.1 connection that posts
// `threads/CreateMessage` at its share of the rate and waits for each answer. The send time
// written into a message is taken just before the request's bytes go to the socket, so what is
// measured starts when a client sends, not while this harness prepares a request.
import Foundation
import NIOConcurrencyHelpers
#if canImport(Glibc)
import Glibc
#endif

final class Senders: @unchecked Sendable {
    private let port: Int
    private let path = "/v1/threads/CreateMessage"

    init(port: Int) { self.port = port }

    /// Posts `total` messages at `rate` per second overall, spread over `tokens.count` senders
    /// (sender `s` posts messages s, s + k, s + 2k, ...); returns when all are answered.
    func run(total: Int, rate: Double, conversationID: String, tokens: [String]) throws {
        let start = nanos()
        let firstError = NIOLockedValueBox<(any Error)?>(nil)
        let finished = DispatchSemaphore(value: 0)
        for s in tokens.indices {
            Thread {
                defer { finished.signal() }
                do {
                    let fd = try connectLoopback(port: self.port)
                    defer { close(fd) }
                    var response = ResponseReader(fd: fd)
                    for i in stride(from: s, to: total, by: tokens.count) {
                        let due = start + UInt64(Double(i) / rate * 1e9)
                        let now = nanos()
                        if due > now {
                            var ts = timespec(tv_sec: Int((due - now) / 1_000_000_000), tv_nsec: Int((due - now) % 1_000_000_000))
                            nanosleep(&ts, nil)
                        }
                        let body = "{\"conversation_id\":\"\(conversationID)\",\"text\":\"t=\(nanos())\"}"
                        let request = Array(("POST \(self.path) HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(tokens[s])\r\n"
                            + "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)").utf8)
                        guard write(fd, request, request.count) == request.count else {
                            throw HarnessError(description: "send: \(String(cString: strerror(errno)))")
                        }
                        let status = try response.next()
                        guard status == 200 else { throw HarnessError(description: "CreateMessage answered \(status)") }
                    }
                } catch {
                    firstError.withLockedValue { $0 = $0 ?? error }
                }
            }.start()
        }
        for _ in tokens.indices { finished.wait() }
        if let error = firstError.withLockedValue({ $0 }) { throw error }
    }

    /// Reads HTTP/1.1 responses with a Content-Length body off a blocking socket.
    struct ResponseReader {
        let fd: Int32
        var buffer: [UInt8] = []

        /// The next response's status code (its body is read and dropped).
        mutating func next() throws -> Int {
            var headEnd: Int?
            while true {
                if let end = buffer.firstRange(of: [13, 10, 13, 10]) { headEnd = end.upperBound; break }
                try fill()
            }
            let head = String(decoding: buffer[..<headEnd!], as: UTF8.self)
            let status = Int(head.split(separator: " ").dropFirst().first ?? "") ?? 0
            var length = 0
            for line in head.split(separator: "\r\n") where line.lowercased().hasPrefix("content-length:") {
                length = Int(line.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) ?? 0
            }
            while buffer.count < headEnd! + length { try fill() }
            buffer.removeFirst(headEnd! + length)
            return status
        }

        private mutating func fill() throws {
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = read(fd, &chunk, chunk.count)
            guard n > 0 else { throw HarnessError(description: "the server closed the sender's connection") }
            buffer += chunk[0..<n]
        }
    }
}
