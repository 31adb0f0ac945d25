import App
import Foundation
import HTTPTypes
import Testing
import TestSupport

@Suite("gateway: routing, error shape, request ids, limits, deadlines")
struct GatewayTests {
    @Test(arguments: Backend.all)
    func methodNamesMatchCaseInsensitively(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let acct = try await api.signUp()
            for path in ["users/Validate", "users/validate", "USERS/VALIDATE", "Users/vAlIdAtE"] {
                #expect(try await api.post(path, ["token": acct.token]).status == .ok, "\(path)")
            }
        }
    }

    @Test(arguments: Backend.all)
    func everyErrorHasTheOneShape(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let cases: [(APIResponse, HTTPResponse.Status, String)] = [
                (try await api.post("users/Nope"), .notFound, "unknown method users/Nope"),
                (try await api.post("nope/Create"), .notFound, "unknown service nope"),
                (try await api.post("users/Login", raw: "{\"email\":"), .badRequest, ""),
                (try await api.post("users/Login", raw: "[1,2]"), .badRequest, "request body must be a JSON object"),
                (try await api.post("users/Login", raw: "null"), .badRequest, "request body must be a JSON object"),
                (try await api.post("users/Login", raw: "\"text\""), .badRequest, "request body must be a JSON object"),
                (try await api.post("users/Login", ["email": "a@b.c"]), .badRequest, "password: is required"),
                (try await api.post("users/Login", ["email": ["a"], "password": "x"]), .badRequest, "email: must be a string"),
                (try await api.post("users/Login", ["email": NSNull(), "password": NSNull()]), .badRequest,
                 "password: must be a string, not null"),
                (try await api.post("users/Read", ["ids": []]), .unauthorized, "authentication required"),
                (try await api.request("/v1/users/Read", method: .get), .methodNotAllowed, "service methods are called with POST"),
                (try await api.request("/no/such/page", method: .get), .notFound, ""),
            ]
            for (r, status, detail) in cases {
                #expect(r.status == status, "\(r.text)")
                #expect(r.isErrorShape, "\(r.text)")
                if !detail.isEmpty { #expect(r.detail == detail) }
                #expect(r.headers[.contentType]?.hasPrefix("application/json") == true)
            }
            let malformed = try await api.post("users/Login", raw: "{\"email\":")
            #expect(malformed.detail.hasPrefix("malformed JSON"))
        }
    }

    @Test(arguments: Backend.all)
    func emptyBodyMeansEmptyObject(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let acct = try await api.signUp()
            let r = try await api.request("/v1/users/ListSessions", method: .post, body: Data(), token: acct.token)
            #expect(r.status == .ok)
        }
    }

    @Test(arguments: Backend.all)
    func requestIDIsEchoedOrMade(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let given = try await api.post("users/Nope", headers: [HTTPField.Name("X-Request-Id")!: "trace-123"])
            #expect(given.headers[HTTPField.Name("X-Request-Id")!] == "trace-123")
            #expect(given.json["id"] as? String == "trace-123")
            let made = try await api.request("/healthz", method: .get)
            let id = try #require(made.headers[HTTPField.Name("X-Request-Id")!])
            #expect(id.count >= 32)
            // A hostile id is replaced, not echoed.
            let bad = try await api.post("users/Nope", headers: [HTTPField.Name("X-Request-Id")!: String(repeating: "x", count: 500)])
            #expect(bad.headers[HTTPField.Name("X-Request-Id")!]?.count ?? 0 < 100)
        }
    }

    @Test(arguments: Backend.all)
    func oversizeBodyIs413(_ backend: Backend) async throws {
        try await withTestApp(backend, configure: { $0.gateway.maxBodySize = 1024 }) { api in
            let big = "{\"email\":\"" + String(repeating: "a", count: 2000) + "\",\"password\":\"x\"}"
            let r = try await api.post("users/Login", raw: big)
            #expect(r.status == .contentTooLarge)
            #expect(r.isErrorShape)
            let small = try await api.post("users/Login", ["email": "a@example.com", "password": "password123"])
            #expect(small.status == .unauthorized)
        }
    }

    @Test(arguments: Backend.all)
    func slowRequestsGet504AndWriteNothingPartial(_ backend: Backend) async throws {
        // bcrypt at cost 14 takes far longer than the 50 ms deadline.
        try await withTestApp(backend, configure: {
            $0.gateway.requestTimeout = .milliseconds(50)
            $0.bcryptCost = 14
        }) { api in
            let r = try await api.post("users/Create", ["first_name": "Slow", "email": "slow@example.com", "password": "password123"])
            #expect(r.status == .gatewayTimeout)
            #expect(r.isErrorShape)
            // The hash finishes in the background; the cancelled request must not write after it.
            try await Task.sleep(for: .seconds(3))
            let users = try await api.database.read { try await $0.query("SELECT id FROM users") }
            #expect(users.isEmpty)
            let events = try await api.database.read { try await $0.query("SELECT seq FROM events") }
            #expect(events.isEmpty)
        }
    }

    /// The deadline (and the other durations read from the environment) take a positive, finite
    /// number of seconds; anything else keeps the default rather than crashing the server.
    @Test func durationsFromTheEnvironmentAreCheckedNumbers() {
        var config = AppConfiguration()
        config.applyEnvironment(["VERTEILT_REQUEST_TIMEOUT": "2.5", "VERTEILT_WORKFLOW_LEASE": "inf", "VERTEILT_DIGEST_DELAY": "-3"])
        #expect(config.gateway.requestTimeout == .milliseconds(2500))
        #expect(config.workers.engine.lease == AppConfiguration().workers.engine.lease)
        #expect(config.mail.digestDelay == AppConfiguration().mail.digestDelay)
        for bad in ["inf", "nan", "0", "-1", "1e300", "ten", ""] { #expect(AppConfiguration.seconds(bad) == nil, "\(bad)") }
        #expect(AppConfiguration.seconds("0.0001") == .milliseconds(1))
    }

    @Test(arguments: Backend.all)
    func healthAndReadiness(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let h = try await api.request("/healthz", method: .get)
            #expect(h.status == .ok)
            let r = try await api.request("/readyz", method: .get)
            #expect(r.status == .ok)
            #expect(r.json["status"] as? String == "ok")
        }
    }

    @Test(arguments: Backend.all)
    func openAPIDescribesEveryEndpoint(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let r = try await api.request("/v1/openapi.json", method: .get)
            #expect(r.status == .ok)
            #expect(r.json["openapi"] as? String == "3.0.3")
            let paths = try #require(r.json["paths"] as? [String: Any])
            for method in ["Create", "Login", "Logout", "Validate", "Read", "ReadByEmail", "Update", "Delete", "List"] {
                #expect(paths["/v1/users/\(method)"] != nil, "users/\(method)")
            }
            #expect(paths["/v1/codes/Create"] != nil && paths["/v1/codes/Verify"] != nil)
            let schemas = try #require((r.json["components"] as? [String: Any])?["schemas"] as? [String: [String: Any]])
            let create = try #require(schemas["Users_CreateRequest"])
            #expect((create["required"] as? [String])?.sorted() == ["email", "first_name", "password"])
            let props = try #require(create["properties"] as? [String: Any])
            #expect(Set(props.keys) == ["first_name", "last_name", "email", "password", "username"])
            let user = try #require(schemas["Users_User"]?["properties"] as? [String: [String: Any]])
            #expect(user["created_at"]?["format"] as? String == "date-time")
        }
    }
}
