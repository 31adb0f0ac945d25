import Foundation
import Testing
@testable import ServiceKit

struct Inner: Codable, Sendable { var when: Timestamp }
struct Sample: Codable, Sendable {
    var userIds: [String]
    var name: String?
    var count: Int
    var nested: Inner
    var byId: [String: Inner]?
    var flag: Bool?
}

@Suite("servicekit: schemas, JSON errors, validation, rate limits, timestamps")
struct ServiceKitTests {
    @Test func schemaIsInferredFromCodable() throws {
        guard case .object(let name, let props) = Schema.of(Sample.self) else { Issue.record("not an object"); return }
        #expect(name.hasSuffix("Sample"))
        let byName = Dictionary(uniqueKeysWithValues: props.map { ($0.name, $0) })
        #expect(byName["user_ids"]?.schema == .array(.string(format: nil)))
        #expect(byName["user_ids"]?.required == true)
        #expect(byName["name"]?.required == false)
        #expect(byName["count"]?.schema == .integer)
        #expect(byName["flag"]?.schema == .boolean && byName["flag"]?.required == false)
        guard case .object(_, let inner)? = byName["nested"]?.schema else { Issue.record("nested"); return }
        #expect(inner.first?.schema == .string(format: "date-time"))
        guard case .map(.object)? = byName["by_id"]?.schema else { Issue.record("map"); return }
    }

    @Test func snakeCaseMatchesFoundation() throws {
        struct Key: CodingKey {
            var stringValue: String
            init(stringValue: String) { self.stringValue = stringValue }
            var intValue: Int? { nil }
            init?(intValue: Int) { nil }
        }
        struct One: Encodable {
            let name: String
            func encode(to encoder: any Encoder) throws {
                var c = encoder.container(keyedBy: Key.self)
                try c.encode(1, forKey: Key(stringValue: name))
            }
        }
        for name in ["userIds", "byID", "myURLValue", "id", "createdAt", "a"] {
            let encoder = JSONEncoder()
            encoder.keyEncodingStrategy = .convertToSnakeCase
            let data = try encoder.encode(One(name: name))
            let foundation = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Int]).keys.first
            #expect(JSON.snakeCase(name) == foundation, "\(name)")
        }
    }

    @Test func decodingErrorsNameTheField() throws {
        func detail(_ json: String) -> String {
            do {
                _ = try JSON.decoder().decode(Sample.self, from: Data(json.utf8))
                return "no error"
            } catch let e as DecodingError {
                return JSON.describe(e).detail
            } catch { return "\(error)" }
        }
        #expect(detail(#"{"count":1,"nested":{"when":"2021-04-28T10:00:00Z"}}"#) == "user_ids: is required")
        #expect(detail(#"{"user_ids":[1],"count":1}"#) == "user_ids[0]: must be a string")
        #expect(detail(#"{"user_ids":[],"count":"1"}"#) == "count: must be an integer")
        #expect(detail(#"{"user_ids":[],"count":1,"nested":{"when":"yesterday"}}"#).hasPrefix("nested.when: must be an RFC 3339"))
        #expect(detail("[]") == "request body must be a JSON object")
    }

    @Test func timestampsSpeakRFC3339WithMilliseconds() throws {
        let t = try #require(Timestamp(rfc3339: "2021-04-28T10:00:00.123Z"))
        #expect(t.rfc3339 == "2021-04-28T10:00:00.123Z")
        #expect(Timestamp(rfc3339: "2021-04-28T10:00:00Z")?.rfc3339 == "2021-04-28T10:00:00.000Z")
        #expect(Timestamp(rfc3339: "2021-04-28") == nil)
        let json = try JSON.encode(Inner(when: t))
        #expect(String(decoding: json, as: UTF8.self) == #"{"when":"2021-04-28T10:00:00.123Z"}"#)
    }

    @Test func textRules() throws {
        #expect(try Validate.text("hi\n\tthere 👋", field: "text", maxLength: 20) == "hi\n\tthere 👋")
        #expect(throws: ServiceError.invalidField("text", "must not contain control characters other than newline and tab")) {
            try Validate.text("bell\u{7}", field: "text", maxLength: 20)
        }
        #expect(throws: ServiceError.invalidField("text", "must be at most 3 characters")) {
            try Validate.text("four", field: "text", maxLength: 3)
        }
        // Length counts what a person sees: one family emoji is one character.
        #expect(try Validate.text("👨‍👩‍👧‍👦", field: "text", maxLength: 1) == "👨‍👩‍👧‍👦")
        #expect(throws: ServiceError.self) { try Validate.id(String(repeating: "a", count: 200), field: "id") }
    }

    @Test func rateLimiterRefills() async throws {
        let limiter = RateLimiter(.init(burst: 2, refillSeconds: 0.1))
        try await limiter.take("k")
        try await limiter.take("k")
        await #expect(throws: ServiceError.self) { try await limiter.take("k") }
        try await limiter.take("other")
        try await Task.sleep(for: .milliseconds(150))
        try await limiter.take("k")
    }

    @Test func callerActingRules() throws {
        let user = Caller.user(id: "u1", sessionID: "s", isAdmin: false)
        #expect(try user.actingUser(nil, field: "user_id") == "u1")
        #expect(try user.actingUser("u1", field: "user_id") == "u1")
        #expect(throws: ServiceError.forbidden("user_id: a user session may only act for itself")) {
            try user.actingUser("u2", field: "user_id")
        }
        let key = Caller.serviceKey(name: "k")
        #expect(try key.actingUser("u2", field: "user_id") == "u2")
        #expect(throws: ServiceError.self) { try key.actingUser(nil, field: "user_id") }
        #expect(throws: ServiceError.unauthorized()) { try Caller.anonymous.actingUser("u", field: "user_id") }
    }

    @Test func tokenHashesAreLowerCaseHex() {
        // Stored session and key hashes were written in this form: it must not change.
        #expect(Secrets.sha256("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(Secrets.hex([0x00, 0x0f, 0xa0, 0xff]) == "000fa0ff")
    }

    @Test func identifiersAreLowerCaseVersion4UUIDs() throws {
        var seen = Set<String>()
        for _ in 0..<1000 {
            let id = Secrets.uuid()
            // The API's ids are validated and compared in this form.
            #expect(id.count == 36)
            #expect(id == id.lowercased())
            let parsed = try #require(UUID(uuidString: id))
            #expect(parsed.uuidString.lowercased() == id)
            let chars = Array(id)
            #expect(chars[14] == "4")
            #expect("89ab".contains(chars[19]))
            seen.insert(id)
        }
        #expect(seen.count == 1000)
        #expect(Secrets.randomBytes(5).count == 5)
        #expect(Secrets.token(bytes: 16).count == 22)
    }
}
