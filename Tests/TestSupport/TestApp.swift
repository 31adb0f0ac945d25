import App
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import ServiceKit
import Storage
import Users

/// A response as a test sees it: status, headers, and the body parsed as JSON.
public struct APIResponse: @unchecked Sendable {
    public let status: HTTPResponse.Status
    public let headers: HTTPFields
    public let body: Data

    public var json: [String: Any] {
        (try? JSONSerialization.jsonObject(with: body) as? [String: Any]) ?? [:]
    }

    public var text: String { String(decoding: body, as: UTF8.self) }

    public subscript(_ key: String) -> Any? { json[key] }

    /// The `detail` of an error body.
    public var detail: String { json["detail"] as? String ?? "" }

    /// The status line's reason, or RFC 9110's name where NIO still writes the older one.
    static func standardReasons(_ status: HTTPResponse.Status) -> Set<String> {
        status.code == 413 ? [status.reasonPhrase, "Content Too Large"] : [status.reasonPhrase]
    }

    public func decode<T: Decodable>(_ type: T.Type) throws -> T { try JSON.decoder().decode(T.self, from: body) }

    /// Checks the one error shape: `{"id","code","detail","status"}` with code = HTTP status.
    public var isErrorShape: Bool {
        let j = json
        return j.count == 4 && (j["id"] as? String)?.isEmpty == false && (j["code"] as? Int) == Int(status.code)
            && j["detail"] is String && (j["status"] as? String).map(Self.standardReasons(status).contains) == true
    }
}

/// Talks to the real server on its loopback port.
public struct APIClient: Sendable {
    let client: any TestClientProtocol
    public let app: Verteilt

    public var database: any Database { app.database }

    /// The loopback port the server listens on.
    public var port: Int { client.port ?? 0 }

    /// `POST /v1/{path}` with a raw body.
    public func post(
        _ path: String, raw: String, token: String? = nil, headers: HTTPFields = [:]
    ) async throws -> APIResponse {
        try await request(path.hasPrefix("/") ? path : "/v1/" + path, method: .post, body: Data(raw.utf8), token: token, headers: headers)
    }

    /// `POST /v1/{path}` with a JSON object.
    public func post(
        _ path: String, _ json: [String: Any] = [:], token: String? = nil, headers: HTTPFields = [:]
    ) async throws -> APIResponse {
        let data = try JSONSerialization.data(withJSONObject: json)
        return try await request("/v1/" + path, method: .post, body: data, token: token, headers: headers)
    }

    public func request(
        _ uri: String, method: HTTPRequest.Method, body: Data? = nil, token: String? = nil, headers: HTTPFields = [:]
    ) async throws -> APIResponse {
        var headers = headers
        if let token { headers[.authorization] = "Bearer \(token)" }
        if body != nil && headers[.contentType] == nil { headers[.contentType] = "application/json" }
        let response = try await client.executeRequest(
            uri: uri, method: method, headers: headers, body: body.map { ByteBuffer(bytes: $0) })
        return APIResponse(
            status: response.status, headers: response.headers, body: Data(buffer: response.body))
    }

    /// `POST /v1/{path}` on a connection of its own. The shared client has one connection, on
    /// which the server answers one request at a time: calls meant to race each other use this.
    public func postConcurrently(_ path: String, _ json: [String: Any] = [:], token: String? = nil) async throws -> APIResponse {
        let own = TestClient(host: "127.0.0.1", port: port, configuration: .init(timeout: .seconds(30)))
        own.connect()
        var headers: HTTPFields = [.contentType: "application/json"]
        if let token { headers[.authorization] = "Bearer \(token)" }
        let body = ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: json))
        do {
            let r = try await own.execute(.init("/v1/" + path, method: .post, headers: headers, body: body))
            try? await own.shutdown()
            return APIResponse(status: r.status, headers: r.headers, body: r.body.map { Data(buffer: $0) } ?? Data())
        } catch {
            try? await own.shutdown()
            throw error
        }
    }

    public struct Account: Sendable {
        public let id: String
        public let email: String
        public let token: String
        public let password: String
    }

    /// Signs up a new account with a unique email.
    public func signUp(_ first: String = "Test", email: String? = nil, password: String = "password123") async throws -> Account {
        let email = email ?? "\(first.lowercased())-\(UUID().uuidString.prefix(8))@example.com"
        let r = try await post("users/Create", ["first_name": first, "last_name": "User", "email": email, "password": password])
        guard r.status == .ok, let token = r["token"] as? String, let user = r["user"] as? [String: Any],
              let id = user["id"] as? String
        else { throw TestDatabaseError(description: "sign-up failed: \(r.status) \(r.text)") }
        return Account(id: id, email: email, token: token, password: password)
    }

    /// A new service key, as `verteilt keys create` makes it.
    public func serviceKey(_ name: String = "backend") async throws -> String {
        try await ServiceKeys(db: database).create(name: name + "-" + UUID().uuidString.prefix(6))
    }

    /// Gives or takes the admin role, as `verteilt admin grant` / `revoke` do.
    public func setAdmin(_ account: Account, _ admin: Bool = true) async throws {
        guard try await ServiceKeys(db: database).setAdmin(email: account.email, admin) else {
            throw TestDatabaseError(description: "no account with email \(account.email)")
        }
    }
}

/// Builds the whole server on a fresh database of `backend`, runs it on a loopback port, and
/// hands `body` a client. Fast bcrypt (cost 4) unless the test changes it.
public func withTestApp<T: Sendable>(
    _ backend: Backend,
    configure: @Sendable (inout AppConfiguration) -> Void = { _ in },
    _ body: @Sendable @escaping (APIClient) async throws -> T
) async throws -> T {
    let db = try await TestDatabase.make(backend)
    var config = AppConfiguration()
    config.databaseURL = db.url
    config.bcryptCost = 4
    config.logLevel = .warning
    // Tests sign many people up from one address; the rate-limit tests set their own budgets.
    config.users.signupPerAddress = .init(burst: 10_000, refillSeconds: 1)
    config.users.loginPerAddress = .init(burst: 10_000, refillSeconds: 1)
    // The digest logs an internal event per chat message and recipient; tests that count log
    // entries would see them. Its own tests turn it on.
    config.mail.unreadDigest = false
    // Durable workers wake on every commit. Twenty apps each running them against one shared
    // PostgreSQL server on two cores starved sign-ups into 504s; the tests of what workers do
    // turn them on.
    config.workers.enabled = false
    // In the first minute of a run every suite starts at once on two cores, and a sign-up on the
    // shared PostgreSQL server has taken longer than the 10 s deadline (a 504 that says nothing
    // about what the test checks). The deadline's own test sets its own.
    config.gateway.requestTimeout = .seconds(60)
    configure(&config)
    do {
        let app = try await Verteilt.build(config, logger: TestDatabase.logger)
        let result = try await app.application.test(.live) { client in
            try await body(APIClient(client: client, app: app))
        }
        try await db.drop()
        return result
    } catch {
        try? await db.drop()
        throw error
    }
}

/// Chat fixtures: a group with an owner, an admin, a member, and a stranger outside it.
public struct GroupFixture: Sendable {
    public let owner: APIClient.Account
    public let admin: APIClient.Account
    public let member: APIClient.Account
    public let stranger: APIClient.Account
    public let groupID: String
    public let conversationID: String
}

extension APIClient {
    /// Creates a group owned by `owner` and returns its id.
    public func createGroup(_ owner: Account, name: String = "Friends") async throws -> String {
        let r = try await post("groups/Create", ["name": name], token: owner.token)
        guard let id = (r["group"] as? [String: Any])?["id"] as? String else {
            throw TestDatabaseError(description: "groups/Create failed: \(r.status) \(r.text)")
        }
        return id
    }

    /// Creates a conversation in the group on behalf of `creator` and returns its id.
    public func createConversation(in groupID: String, topic: String, by creator: Account) async throws -> String {
        let r = try await post("threads/CreateConversation", ["group_id": groupID, "topic": topic], token: creator.token)
        guard let id = (r["conversation"] as? [String: Any])?["id"] as? String else {
            throw TestDatabaseError(description: "CreateConversation failed: \(r.text)")
        }
        return id
    }

    /// Adds `user` to the group on behalf of `admin`, optionally making them an admin.
    public func add(_ user: Account, to groupID: String, by admin: Account, role: String? = nil) async throws {
        let r = try await post("groups/AddMember", ["group_id": groupID, "member_id": user.id], token: admin.token)
        guard r.status == .ok else { throw TestDatabaseError(description: "AddMember failed: \(r.text)") }
        if let role {
            let s = try await post("groups/SetRole", ["group_id": groupID, "member_id": user.id, "role": role], token: admin.token)
            guard s.status == .ok else { throw TestDatabaseError(description: "SetRole failed: \(s.text)") }
        }
    }

    public func fixture() async throws -> GroupFixture {
        let owner = try await signUp("Owner")
        let admin = try await signUp("Admin")
        let member = try await signUp("Member")
        let stranger = try await signUp("Stranger")
        let group = try await createGroup(owner)
        try await add(admin, to: group, by: owner, role: "admin")
        try await add(member, to: group, by: owner)
        let cid = try await createConversation(in: group, topic: "General", by: owner)
        return GroupFixture(owner: owner, admin: admin, member: member, stranger: stranger, groupID: group, conversationID: cid)
    }

    /// Gives `account` a username (accounts have none after `signUp`).
    public func setUsername(_ account: Account, _ username: String) async throws {
        let r = try await post("users/Update", ["username": username], token: account.token)
        guard r.status == .ok else { throw TestDatabaseError(description: "users/Update failed: \(r.status) \(r.text)") }
    }

    /// Sends a message to a conversation and returns its JSON.
    @discardableResult
    public func say(_ text: String, in conversationID: String, as author: Account, id: String? = nil) async throws -> [String: Any] {
        var body: [String: Any] = ["conversation_id": conversationID, "text": text]
        if let id { body["id"] = id }
        let r = try await post("threads/CreateMessage", body, token: author.token)
        guard r.status == .ok, let m = r["message"] as? [String: Any] else {
            throw TestDatabaseError(description: "CreateMessage failed: \(r.status) \(r.text)")
        }
        return m
    }
}
