import Foundation
import HTTPTypes
import Testing
import TestSupport

@Suite("gateway: cookie-authenticated calls must be JSON (request forgery)")
struct CookieRequestForgeryTests {
    @Test(arguments: Backend.all)
    func aFormPostWithTheCookieIsRefused(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let acct = try await api.signUp()
            let cookie: HTTPFields = [.cookie: "verteilt_session=\(acct.token)"]
            // What a cross-site form could send: the cookie, but no JSON content type.
            for type in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
                var headers = cookie
                headers[.contentType] = type
                let r = try await api.post("groups/Create", raw: #"{"name":"Forged"}"#, headers: headers)
                #expect(r.status == .forbidden, "\(type)")
                #expect(r.isErrorShape)
                #expect(r.detail.contains("Content-Type: application/json"))
            }
            let groups = try await api.post("groups/List", [:], token: acct.token)
            #expect((groups["groups"] as? [Any])?.isEmpty == true, "nothing was created")
            // The app's own calls (JSON) and bearer-token clients without a content type work.
            var json = cookie
            json[.contentType] = "application/json; charset=utf-8"
            #expect(try await api.post("groups/Create", raw: #"{"name":"Mine"}"#, headers: json).status == .ok)
            #expect(try await api.post("groups/List", raw: "{}", token: acct.token, headers: [.contentType: "text/plain"]).status == .ok)
        }
    }
}
