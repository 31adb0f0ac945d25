import Foundation
import ServiceKit
import Testing
import TestSupport

@Suite("codes: one-time codes for trusted backends")
struct CodesTests {
    @Test(arguments: Backend.all)
    func createAndVerifyOnce(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let key = try await api.serviceKey()
            let c = try await api.post("codes/Create", ["identity": "reset:ada@example.com"], token: key)
            #expect(c.status == .ok)
            let code = try #require(c["code"] as? String)
            #expect(code.count == 6 && code.allSatisfy(\.isNumber))
            #expect(try await api.post("codes/Verify", ["identity": "reset:ada@example.com", "code": code], token: key).status == .ok)
            // One use only.
            let again = try await api.post("codes/Verify", ["identity": "reset:ada@example.com", "code": code], token: key)
            #expect(again.status == .badRequest)
            #expect(again.detail == "code: invalid or expired")
            #expect(again.isErrorShape)
        }
    }

    @Test(arguments: Backend.all)
    func onlyServiceKeys(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let user = try await api.signUp()
            #expect(try await api.post("codes/Create", ["identity": "x"]).status == .unauthorized)
            let r = try await api.post("codes/Create", ["identity": "x"], token: user.token)
            #expect(r.status == .forbidden)
            #expect(r.isErrorShape)
            #expect(try await api.post("codes/Verify", ["identity": "x", "code": "123456"], token: user.token).status == .forbidden)
        }
    }

    @Test(arguments: Backend.all)
    func wrongGuessesDestroyTheCode(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let key = try await api.serviceKey()
            let code = try #require(try await api.post("codes/Create", ["identity": "id"], token: key)["code"] as? String)
            let wrong = code == "000000" ? "000001" : "000000"
            for _ in 0..<5 {
                #expect(try await api.post("codes/Verify", ["identity": "id", "code": wrong], token: key).status == .badRequest)
            }
            // After five wrong guesses even the right code fails.
            #expect(try await api.post("codes/Verify", ["identity": "id", "code": code], token: key).status == .badRequest)
        }
    }

    @Test(arguments: Backend.all)
    func aNewCodeReplacesTheOld(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let key = try await api.serviceKey()
            let first = try #require(try await api.post("codes/Create", ["identity": "id"], token: key)["code"] as? String)
            var second = first
            while second == first {
                second = try #require(try await api.post("codes/Create", ["identity": "id"], token: key)["code"] as? String)
            }
            #expect(try await api.post("codes/Verify", ["identity": "id", "code": first], token: key).status == .badRequest)
            #expect(try await api.post("codes/Verify", ["identity": "id", "code": second], token: key).status == .ok)
        }
    }

    @Test(arguments: Backend.all)
    func expiry(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let key = try await api.serviceKey()
            let past = try await api.post("codes/Create", ["identity": "id", "expires_at": "2020-01-01T00:00:00Z"], token: key)
            #expect(past.status == .badRequest)
            #expect(past.detail == "expires_at: must be in the future")
            let far = try await api.post("codes/Create", ["identity": "id", "expires_at": "2999-01-01T00:00:00Z"], token: key)
            #expect(far.detail == "expires_at: must be at most 24 hours ahead")
            let garbage = try await api.post("codes/Create", ["identity": "id", "expires_at": "tomorrow"], token: key)
            #expect(garbage.status == .badRequest)
            #expect(garbage.detail.hasPrefix("expires_at: must be an RFC 3339 timestamp"))

            // Far enough ahead that the request arrives before it on a loaded host (at 0.5 s one
            // did not, nor at 3 s in the first minute of a CI run); then wait until it has passed.
            let soon = Timestamp.now().adding(seconds: 15)
            let c = try await api.post("codes/Create", ["identity": "id", "expires_at": soon.rfc3339], token: key)
            #expect(c.status == .ok)
            let code = try #require(c["code"] as? String)
            try await sleep(past: soon)
            #expect(try await api.post("codes/Verify", ["identity": "id", "code": code], token: key).status == .badRequest)
        }
    }
}
