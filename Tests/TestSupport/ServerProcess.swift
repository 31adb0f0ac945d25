import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import ServiceKit
#if canImport(Glibc)
import Glibc
#endif

/// A real `verteilt serve` process on a loopback port, for tests that kill servers or run several.
public final class ServerProcess: @unchecked Sendable {
    public let port: Int
    public let database: String
    /// Extra arguments for `verteilt serve` (or the whole command line when `command` is set).
    public var arguments: [String] = []
    public var environment: [String: String] = [:]
    private var process: Process?

    /// The binary `scripts/test` built (`VERTEILT_BIN`), or the debug build's.
    public static var binary: String {
        ProcessInfo.processInfo.environment["VERTEILT_BIN"] ?? FileManager.default.currentDirectoryPath + "/.build/debug/verteilt"
    }

    public init(database: String, port: Int? = nil) {
        self.database = database
        self.port = port ?? Self.freePort()
    }

    public static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    /// Starts the server and waits until it answers `/healthz`.
    public func start() async throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.binary)
        p.arguments = ["serve", "--port", String(port), "--database", database, "--bcrypt-cost", "4", "--log-level", "warning"]
            + arguments
        var env = ProcessInfo.processInfo.environment
        env["DATABASE_URL"] = nil
        env.merge(environment) { $1 }
        p.environment = env
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        process = p
        for _ in 0..<200 {
            if (try? await request(.get, "/healthz")) != nil { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw ServerProcessError(description: "server on port \(port) did not start")
    }

    /// kill -9: no shutdown, no flush, no goodbye.
    public func kill9() {
        guard let p = process else { return }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        process = nil
    }

    public func stop() {
        guard let p = process else { return }
        p.terminate()
        p.waitUntilExit()
        process = nil
    }

    /// One request on a fresh connection (a killed server breaks kept-alive ones).
    public func request(_ method: HTTPRequest.Method, _ path: String, json: [String: Any]? = nil, token: String? = nil) async throws -> [String: Any] {
        let client = TestClient(host: "127.0.0.1", port: port, configuration: .init(timeout: .seconds(10)))
        client.connect()
        defer { Task { try? await client.shutdown() } }
        var headers: HTTPFields = [:]
        if let token { headers[.authorization] = "Bearer \(token)" }
        let body = try json.map { ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: $0)) }
        let r = try await client.execute(.init(path, method: method, headers: headers, body: body))
        let data = r.body.map { Data(buffer: $0) } ?? Data()
        guard r.status == .ok else { throw ServerProcessError(description: "\(path): \(r.status) \(String(decoding: data, as: UTF8.self))") }
        return (try JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:]
    }

    public func post(_ method: String, _ json: [String: Any], token: String? = nil) async throws -> [String: Any] {
        try await request(.post, "/v1/" + method, json: json, token: token)
    }

    deinit { if let p = process { kill(p.processIdentifier, SIGKILL) } }
}

public struct ServerProcessError: Error, CustomStringConvertible {
    public let description: String
    public init(description: String) { self.description = description }
}

/// A user with a token on a server process.
public struct ProcessUser: Sendable {
    public let id: String
    public let token: String

    public static func signUp(_ server: ServerProcess, _ name: String) async throws -> ProcessUser {
        let r = try await server.post("users/Create", [
            "first_name": name, "email": "\(name.lowercased())-\(UUID().uuidString.prefix(8))@example.com", "password": "password123",
        ])
        return ProcessUser(id: (r["user"] as! [String: Any])["id"] as! String, token: r["token"] as! String)
    }
}

/// Polls `condition` until it holds, failing after `seconds`: for what real processes, timers and
/// mail servers do in their own time.
public func eventually(_ what: String, seconds: Double = 20, _ condition: () async throws -> Bool) async throws {
    let end = Date().addingTimeInterval(seconds)
    // Soon at first, then less often: a wait of seconds (a workflow run, a digest) polled fifty
    // times a second by a dozen tests at once is load that starves the other tests on two cores.
    var pause = 20
    while Date() < end {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(pause))
        pause = min(pause * 3 / 2, 250)
    }
    throw ServerProcessError(description: "timed out waiting for \(what)")
}

/// Sleeps until `time` (an expiry the test set) has passed on the wall clock, with a margin for
/// the server's clock reading.
public func sleep(past time: Timestamp) async throws {
    try await Task.sleep(for: .microseconds(max(0, time.microseconds - Timestamp.now().microseconds) + 200_000))
}
