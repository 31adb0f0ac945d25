import Foundation
import HTTPTypes
import HummingbirdWSClient
import Logging
import NIOConcurrencyHelpers
import NIOCore
import TestSupport

/// A real WebSocket client for tests: frames arrive in order on `next()`.
final class WSClient: Sendable {
    private let frames: AsyncStream<String>
    private let writer = NIOLockedValueBox<WebSocketOutboundWriter?>(nil)
    private let task: Task<WebSocketCloseFrame?, any Error>
    /// Set when the connection has ended: the server's close code, or nil for none.
    private let ended = NIOLockedValueBox<UInt16??>(nil)
    private let finish: AsyncStream<Void>.Continuation
    private let iterator: NIOLockedValueBox<Unchecked<AsyncStream<String>.AsyncIterator>>

    struct Timeout: Error, CustomStringConvertible {
        let description: String
    }

    /// Connects and waits until the socket is open (or fails).
    init(port: Int, path: String, headers: HTTPFields = [:]) async throws {
        let (frames, frameSink) = AsyncStream<String>.makeStream()
        let (done, finish) = AsyncStream<Void>.makeStream()
        let (opened, openedSink) = AsyncStream<Void>.makeStream()
        self.frames = frames
        self.finish = finish
        self.iterator = NIOLockedValueBox(Unchecked(frames.makeAsyncIterator()))
        var logger = Logger(label: "ws-test")
        logger.logLevel = .warning
        let writer = self.writer
        let ended = self.ended
        var config = WebSocketClientConfiguration()
        config.additionalHeaders = headers
        config.maxFrameSize = 1 << 20
        task = Task {
            defer {
                frameSink.finish()
                openedSink.finish()
            }
            do {
                let frame = try await Self.run(port: port, path: path, config: config, logger: logger, writer: writer,
                                               frameSink: frameSink, openedSink: openedSink, done: done)
                ended.withLockedValue {
                    switch frame?.closeCode {
                    case .unknown(let code)?: $0 = .some(code)
                    case let code?: $0 = .some(UInt16(webSocketErrorCode: code))
                    case nil: $0 = .some(nil)
                    }
                }
                return frame
            } catch {
                ended.withLockedValue { $0 = .some(nil) }
                throw error
            }
        }
        for await _ in opened { break }
        if writer.withLockedValue({ $0 }) == nil {
            // The upgrade was refused: surface the error.
            _ = try await task.value
            throw Timeout(description: "upgrade refused")
        }
    }

    private static func run(
        port: Int, path: String, config: WebSocketClientConfiguration, logger: Logger,
        writer: NIOLockedValueBox<WebSocketOutboundWriter?>, frameSink: AsyncStream<String>.Continuation,
        openedSink: AsyncStream<Void>.Continuation, done: AsyncStream<Void>
    ) async throws -> WebSocketCloseFrame? {
            try await WebSocketClient.connect(url: "ws://127.0.0.1:\(port)\(path)", configuration: config, logger: logger) {
                inbound, outbound, _ in
                writer.withLockedValue { $0 = outbound }
                openedSink.yield()
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        for try await message in inbound.messages(maxSize: 1 << 20) {
                            if case .text(let t) = message { frameSink.yield(t) }
                        }
                    }
                    group.addTask {
                        for await _ in done { break }
                        try await outbound.close(.normalClosure, reason: nil)
                    }
                    try await group.next()
                    group.cancelAll()
                }
            }
    }

    /// The next frame as JSON, skipping presence notices (they come whenever people connect),
    /// or a failure after `timeout`: generous, as a frame that is due arrives in milliseconds
    /// and a starved CI host once took over 5 s.
    func next(timeout: Duration = .seconds(15)) async throws -> [String: Any] {
        try await next(where: { $0["type"] as? String != "presence" }, timeout: timeout)
    }

    func nextAny(timeout: Duration = .seconds(15)) async throws -> [String: Any] {
        let text = try await nextText(timeout: timeout)
        return (try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]) ?? [:]
    }

    func nextText(timeout: Duration = .seconds(15)) async throws -> String {
        let box = iterator
        return try await withThrowingTaskGroup(of: String?.self) { group in
            group.addTask {
                // One reader at a time: tests read a client's frames from one task.
                var it = box.withLockedValue { $0 }
                let value = await it.value.next()
                box.withLockedValue { $0 = it }
                return value
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let text = first else {
                throw Timeout(description: "no frame within \(timeout)")
            }
            return text
        }
    }

    /// Frames until one matches, failing on a timeout.
    func next(where match: ([String: Any]) -> Bool, timeout: Duration = .seconds(15)) async throws -> [String: Any] {
        while true {
            let f = try await nextAny(timeout: timeout)
            if match(f) { return f }
        }
    }

    func send(_ text: String) async throws {
        guard let w = writer.withLockedValue({ $0 }) else { throw Timeout(description: "not connected") }
        try await w.writeTextMessage(text)
    }

    func sendBinary(_ bytes: [UInt8]) async throws {
        guard let w = writer.withLockedValue({ $0 }) else { throw Timeout(description: "not connected") }
        try await w.writeBinaryMessage(ByteBuffer(bytes: bytes))
    }

    /// Closes from our side and waits (a while) for the connection to end.
    func close() async {
        finish.yield()
        _ = try? await closeCode()
    }

    /// Waits for the connection to end and returns the server's close code.
    func closeCode(timeout: Duration = .seconds(15)) async throws -> UInt16? {
        let deadline = ContinuousClock.now.advanced(by: timeout)
        while ContinuousClock.now < deadline {
            if let result = ended.withLockedValue({ $0 }) { return result }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw Timeout(description: "still open")
    }
}

extension APIClient {
    /// The event feed of `account`, authenticated by bearer header.
    func feed(_ account: Account, since: Int64? = nil) async throws -> WSClient {
        try await WSClient(port: port, path: "/v1/events" + (since.map { "?since=\($0)" } ?? ""),
                           headers: [.authorization: "Bearer \(account.token)"])
    }
}

/// Lets a test hand an iterator between its own sequential steps.
struct Unchecked<T>: @unchecked Sendable {
    var value: T
    init(_ value: T) { self.value = value }
}
