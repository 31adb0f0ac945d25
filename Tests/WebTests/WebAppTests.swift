import CompressNIO
import Foundation
import NIOCore
import HTTPTypes
import Testing
import TestSupport
import Web

/// The web app's HTTP side against the real server: the shell for deep links, `/config.json`,
/// the static files with their types, caching and compression, and `/api/session`.
/// (The app itself is tested in a real browser: Tests/Browser, run by scripts/test.)
@Suite("web: shell, config, static files, session")
struct WebAppTests {
    static func get(_ api: APIClient, _ path: String, _ headers: HTTPFields = [:]) async throws -> APIResponse {
        try await api.request(path, method: .get, headers: headers)
    }

    /// The asset URL prefix the shell points at: `/static/{version}/`.
    static func assetPrefix(_ shell: String) throws -> String {
        let range = try #require(shell.range(of: #"/static/[0-9a-f]+/"#, options: .regularExpression))
        return String(shell[range])
    }

    @Test
    func deepLinksGetTheShell() async throws {
        try await withTestApp(.sqlite) { api in
            for path in ["/", "/account/login", "/groups", "/groups/abc/def", "/chats/x", "/settings/sessions", "/invite/CODE123",
                         "/admin", "/admin/mail", "/admin/runs/abc"] {
                let r = try await Self.get(api, path)
                #expect(r.status == .ok, "\(path)")
                #expect(r.headers[.contentType] == "text/html; charset=utf-8", "\(path)")
                #expect(r.text.contains("bootstrap.js"), "\(path)")
                #expect(r.headers[.cacheControl] == "no-cache", "\(path)")
                #expect(r.headers[.contentSecurityPolicy]?.contains("script-src 'self'") == true, "\(path)")
                #expect(r.headers[HTTPField.Name("Referrer-Policy")!] == "no-referrer", "\(path)")
            }
        }
    }

    @Test
    func unknownPathsStillAnswerInTheErrorShape() async throws {
        try await withTestApp(.sqlite) { api in
            for path in ["/nope", "/api/nope", "/groupsx", "/static/abc/nope.js", "/static/abc/../index.html"] {
                let r = try await Self.get(api, path)
                #expect(r.status == .notFound, "\(path)")
                #expect(r.isErrorShape, "\(path): \(r.text)")
            }
            let r = try await api.post("nope/Create")
            #expect(r.status == .notFound && r.isErrorShape)
        }
    }

    @Test
    func configCarriesFlagsLimitsAndLabels() async throws {
        try await withTestApp(.sqlite, configure: { $0.maxTextLength = 123 }) { api in
            let r = try await Self.get(api, "/config.json")
            #expect(r.status == .ok)
            #expect(r.headers[.contentType] == "application/json")
            let limits = try #require(r["limits"] as? [String: Any])
            #expect(limits["max_text_length"] as? Int == 123)
            #expect(limits["max_body_size"] as? Int == 1 << 20)
            #expect((r["features"] as? [String: Bool])?["private_chats"] == true)
            #expect((r["labels"] as? [String: String])?["app_name"] == "Verteilt")
            let version = try #require(r["version"] as? String)
            let shell = try await Self.get(api, "/")
            #expect(try Self.assetPrefix(shell.text) == "/static/\(version)/")
        }
    }

    @Test
    func assetsHaveTheirTypesAndAreCachedForever() async throws {
        try await withTestApp(.sqlite) { api in
            let prefix = try Self.assetPrefix(try await Self.get(api, "/").text)
            let cases = [
                ("bootstrap.js", "text/javascript; charset=utf-8"), ("app.css", "text/css; charset=utf-8"),
                ("chat/index.html", "text/html; charset=utf-8"), ("chat/chat.js", "text/javascript; charset=utf-8"),
                ("account/account.css", "text/css; charset=utf-8"), ("shared/realtime.js", "text/javascript; charset=utf-8"),
                ("admin/index.html", "text/html; charset=utf-8"), ("admin/admin.js", "text/javascript; charset=utf-8"),
                ("admin/admin.css", "text/css; charset=utf-8"),
            ]
            for (file, type) in cases {
                let r = try await Self.get(api, prefix + file)
                #expect(r.status == .ok, "\(file)")
                #expect(r.headers[.contentType] == type, "\(file)")
                #expect(r.headers[.cacheControl] == "public, max-age=31536000, immutable", "\(file)")
                #expect(r.headers[HTTPField.Name("X-Content-Type-Options")!] == "nosniff")
            }
            // An older version's URL still answers (a page open across a deployment), revalidated.
            let old = try await Self.get(api, "/static/000000/bootstrap.js")
            #expect(old.status == .ok && old.headers[.cacheControl] == "no-cache")
        }
    }

    @Test
    func revalidationAnswersNotModified() async throws {
        try await withTestApp(.sqlite) { api in
            for path in ["/", "/config.json", try Self.assetPrefix(try await Self.get(api, "/").text) + "bootstrap.js"] {
                let first = try await Self.get(api, path)
                let tag = try #require(first.headers[.eTag], "\(path)")
                let again = try await Self.get(api, path, [.ifNoneMatch: tag])
                #expect(again.status == .notModified, "\(path)")
                #expect(again.body.isEmpty)
                let changed = try await Self.get(api, path, [.ifNoneMatch: "\"other\""])
                #expect(changed.status == .ok, "\(path)")
            }
        }
    }

    @Test
    func textIsGzippedWhenTheClientAcceptsIt() async throws {
        try await withTestApp(.sqlite) { api in
            let path = try Self.assetPrefix(try await Self.get(api, "/").text) + "chat/chat.js"
            let plain = try await Self.get(api, path)
            #expect(plain.headers[.contentEncoding] == nil)
            #expect(plain.headers[.vary] == "Accept-Encoding")
            let gz = try await Self.get(api, path, [.acceptEncoding: "gzip, deflate, br"])
            #expect(gz.headers[.contentEncoding] == "gzip")
            #expect(gz.body.count < plain.body.count / 2)
            #expect(Array(gz.body.prefix(2)) == [0x1f, 0x8b], "a gzip stream")
            #expect(gz.headers[.eTag] != plain.headers[.eTag], "each encoding has its own tag")
            let refused = try await Self.get(api, path, [.acceptEncoding: "gzip;q=0, identity"])
            #expect(refused.headers[.contentEncoding] == nil)
        }
    }

    @Test(arguments: Backend.all)
    func sessionSaysWhoIsSignedIn(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let none = try await Self.get(api, "/api/session")
            #expect(none.status == .unauthorized && none.isErrorShape)
            let forged = try await Self.get(api, "/api/session", [.cookie: "verteilt_session=forged"])
            #expect(forged.status == .unauthorized && forged.isErrorShape)
            let acct = try await api.signUp("Ada")
            let r = try await Self.get(api, "/api/session", [.cookie: "verteilt_session=\(acct.token)"])
            #expect(r.status == .ok)
            #expect(r.headers[.cacheControl] == "no-store")
            let user = try #require(r["user"] as? [String: Any])
            #expect(user["id"] as? String == acct.id)
            #expect(user["email"] as? String == acct.email)
            #expect(r["is_admin"] as? Bool == false)
            // The role is read on every request: granted, the next answer says so; revoked, no more.
            try await api.setAdmin(acct)
            let admin = try await Self.get(api, "/api/session", [.cookie: "verteilt_session=\(acct.token)"])
            #expect(admin.status == .ok && admin["is_admin"] as? Bool == true)
            try await api.setAdmin(acct, false)
            let revoked = try await Self.get(api, "/api/session", [.cookie: "verteilt_session=\(acct.token)"])
            #expect(revoked.status == .ok && revoked["is_admin"] as? Bool == false)
            let key = try await api.serviceKey()
            let byKey = try await api.request("/api/session", method: .get, token: key)
            #expect(byKey.status == .forbidden && byKey.isErrorShape)
        }
    }
}

@Suite("web: JSON answers are gzipped for clients that accept it")
struct CompressionTests {
    @Test
    func theGroupPageIsGzippedAndDecompressesToTheSameJSON() async throws {
        try await withTestApp(.sqlite) { api in
            let acct = try await api.signUp("Ada")
            let group = try #require((try await api.post("groups/Create", ["name": "Friends"], token: acct.token))["group"] as? [String: Any])
            let groupID = try #require(group["id"] as? String)
            let conv = try await api.post("threads/CreateConversation", ["group_id": groupID, "topic": "General"], token: acct.token)
            let convID = try #require((conv["conversation"] as? [String: Any])?["id"] as? String)
            for i in 0..<25 {
                _ = try await api.post("threads/CreateMessage", ["conversation_id": convID, "text": "Message number \(i)"], token: acct.token)
            }
            let plain = try await api.request("/api/groups/\(groupID)", method: .get, token: acct.token)
            #expect(plain.status == .ok && plain.headers[.contentEncoding] == nil)
            #expect(plain.headers[.vary] == "Accept-Encoding")
            #expect(plain.body.count > 1024)
            let gz = try await api.request("/api/groups/\(groupID)", method: .get, token: acct.token,
                                           headers: [.acceptEncoding: "gzip, deflate"])
            #expect(gz.status == .ok && gz.headers[.contentEncoding] == "gzip")
            #expect(gz.body.count < plain.body.count / 3)
            var buffer = ByteBuffer(bytes: gz.body)
            let json = try buffer.decompress(with: .gzip())
            let page = try JSONSerialization.jsonObject(with: Data(json.readableBytesView)) as? [String: Any]
            let plainPage = try JSONSerialization.jsonObject(with: plain.body) as? [String: Any]
            #expect(page?["id"] as? String == groupID)
            #expect((page?["threads"] as? [Any])?.count == (plainPage?["threads"] as? [Any])?.count)
            // Small answers and errors stay as they are.
            let small = try await api.post("groups/List", [:], token: acct.token, headers: [.acceptEncoding: "gzip"])
            #expect(small.headers[.contentEncoding] == nil)
            let missing = try await api.request("/api/groups/nope", method: .get, token: acct.token, headers: [.acceptEncoding: "gzip"])
            #expect(missing.status == .notFound && missing.isErrorShape)
        }
    }
}

@Suite("web: where the files come from")
struct WebFilesTests {
    @Test
    func aMissingDirectoryIsAClearErrorAtStart() throws {
        var config = WebApp.Configuration()
        config.root = "/nonexistent/web"
        #expect(throws: (any Error).self) { try WebApp(configuration: config, limits: .init(maxTextLength: 10, maxBodySize: 10)) }
    }

    @Test
    func theSourceDirectoryServesTheSameVersionAsTheBundle() throws {
        let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../Sources/Web/Static").standardizedFileURL.path
        var config = WebApp.Configuration()
        config.root = source
        let fromSource = try WebApp(configuration: config, limits: .init(maxTextLength: 10, maxBodySize: 10))
        let bundled = try WebApp(limits: .init(maxTextLength: 10, maxBodySize: 10))
        #expect(fromSource.version == bundled.version, "the build copied every file")
    }
}
