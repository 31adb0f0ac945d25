import CompressNIO
import Crypto
import Foundation
import Gateway
import HTTPTypes
import Hummingbird
import NIOCore
import ServiceKit
import Users

/// The browser app: the shell page for every deep link, `/config.json`, `/api/session`, and the
/// static files (bootstrap.js, the micro-frontends, CSS) under `/static/{version}/`.
///
/// Files are read once at start. The version in the asset URLs is a hash of every file, so asset
/// responses are `immutable` for a year; the shell and `/config.json` are revalidated by ETag on
/// every load, so a new deployment is picked up on the next page load.
public struct WebApp: Sendable {
    public struct Configuration: Sendable {
        /// A directory to serve instead of the bundled files (env `VERTEILT_WEB_ROOT`).
        public var root: String?
        /// Feature switches the app reads from `/config.json`.
        public var features: [String: Bool] = [
            "private_chats": true, "search": true, "email_invites": true, "reactions": true, "typing": true,
        ]
        /// Texts an operator may change without touching the app.
        public var labels: [String: String] = ["app_name": "Verteilt"]
        public init() {}
    }

    /// The limits the app checks before the server does (it checks again).
    public struct Limits: Codable, Sendable {
        public var maxTextLength: Int
        public var maxBodySize: Int
        public var pageSize = 25
        public init(maxTextLength: Int, maxBodySize: Int) {
            self.maxTextLength = maxTextLength
            self.maxBodySize = maxBodySize
        }
    }

    struct Asset: Sendable {
        let contentType: String
        let body: ByteBuffer
        let gzipped: ByteBuffer?
        let etag: String
    }

    /// The first path segments that are app pages: each gets the shell.
    public static let appSections = ["account", "groups", "chats", "settings", "invite", "admin"]

    let files: [String: Asset]
    let shell: Asset
    let config: Asset
    public let version: String

    public init(configuration: Configuration = .init(), limits: Limits) throws {
        let root = try configuration.root.map { URL(fileURLWithPath: $0, isDirectory: true) } ?? Self.bundledRoot()
        var raw: [String: Data] = [:]
        let rootPath = root.standardizedFileURL.path
        guard let walker = FileManager.default.enumerator(at: root, includingPropertiesForKeys: [.isRegularFileKey]) else {
            throw WebError("web files not found at \(rootPath)")
        }
        for case let url as URL in walker where (try? url.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true {
            let path = String(url.standardizedFileURL.path.dropFirst(rootPath.count + 1))
            raw[path] = try Data(contentsOf: url)
        }
        guard let index = raw.removeValue(forKey: "index.html") else { throw WebError("index.html missing in \(rootPath)") }
        // One version for the whole set: a changed file changes every asset URL.
        var hasher = SHA256()
        for key in raw.keys.sorted() {
            hasher.update(data: Data(key.utf8))
            hasher.update(data: raw[key]!)
        }
        let version = Secrets.hex(hasher.finalize().prefix(6))
        self.version = version
        self.files = raw.reduce(into: [:]) { $0[$1.key] = Self.asset($1.value, type: Self.contentType(of: $1.key)) }
        let page = String(decoding: index, as: UTF8.self).replacingOccurrences(of: "{{VERSION}}", with: version)
        self.shell = Self.asset(Data(page.utf8), type: "text/html; charset=utf-8")
        struct ConfigBody: Encodable {
            var version: String
            var features: [String: Bool]
            var labels: [String: String]
            var limits: Limits
        }
        let body = try JSON.encode(ConfigBody(
            version: version, features: configuration.features, labels: configuration.labels, limits: limits))
        self.config = Self.asset(body, type: "application/json")
    }

    /// The files SwiftPM copied next to the executable (`verteilt_Web.resources/Static`).
    /// Looked up by hand on Linux: `Bundle.module` stops the process when the bundle is missing
    /// (a binary copied without its resources), and this should be an error that says what to do.
    static func bundledRoot() throws -> URL {
        let missing = WebError(
            "the web app's files are missing: keep verteilt_Web.resources next to the binary, or set VERTEILT_WEB_ROOT to a copy of Sources/Web/Static")
        #if os(Linux)
        let url = Bundle.main.bundleURL.appendingPathComponent("verteilt_Web.resources/Static", isDirectory: true)
        guard FileManager.default.fileExists(atPath: url.appendingPathComponent("index.html").path) else { throw missing }
        return url
        #else
        guard let url = Bundle.module.url(forResource: "Static", withExtension: nil) else { throw missing }
        return url
        #endif
    }

    static func asset(_ data: Data, type: String) -> Asset {
        let body = ByteBuffer(bytes: data)
        var gzipped: ByteBuffer?
        let compressible = type.hasPrefix("text/") || type.hasPrefix("application/json") || type.contains("javascript")
            || type.hasPrefix("image/svg")
        if compressible, data.count > 256 {
            var input = body
            if let out = try? input.compress(with: .gzip(configuration: .init(windowSize: 15, compressionLevel: 9))),
               out.readableBytes < data.count {
                gzipped = out
            }
        }
        let tag = Secrets.hex(SHA256.hash(data: data).prefix(8))
        return Asset(contentType: type, body: body, gzipped: gzipped, etag: tag)
    }

    static func contentType(of path: String) -> String {
        switch path.split(separator: ".").last.map({ $0.lowercased() }) ?? "" {
        case "html": return "text/html; charset=utf-8"
        case "js", "mjs": return "text/javascript; charset=utf-8"
        case "css": return "text/css; charset=utf-8"
        case "json": return "application/json"
        case "svg": return "image/svg+xml"
        case "png": return "image/png"
        case "ico": return "image/x-icon"
        case "woff2": return "font/woff2"
        case "txt": return "text/plain; charset=utf-8"
        default: return "application/octet-stream"
        }
    }

    /// The shell for `/` and every app section, `/config.json`, the assets, and `GET /api/session`
    /// (who the cookie or bearer token belongs to, and whether they have the admin role: how the app
    /// learns it is signed in and whether to offer its admin view).
    public func addRoutes(to router: Router<GatewayContext>, gateway: Gateway, users: any UsersClient) {
        router.get("/config.json") { request, _ in
            self.respond(self.config, request, cache: "no-cache")
        }
        router.get("/static/:version/**") { request, context -> Response in
            let path = context.parameters.getCatchAll().joined(separator: "/")
            guard let asset = self.files[path] else { throw ServiceError.notFound("no such file: \(path)") }
            // An older version's URL (a page loaded before a deployment) gets today's file, revalidated.
            let current = context.parameters.get("version") == self.version
            return self.respond(asset, request, cache: current ? "public, max-age=31536000, immutable" : "no-cache")
        }
        let shell: @Sendable (Request, GatewayContext) async throws -> Response = { request, _ in
            var response = self.respond(self.shell, request, cache: "no-cache")
            for (name, value) in Self.shellHeaders { response.headers[name] = value }
            return response
        }
        router.get("/", use: shell)
        for section in Self.appSections {
            router.get("/\(section)", use: shell)
            router.get("/\(section)/**", use: shell)
        }
        router.get("/api/session") { request, _ -> Response in
            let (caller, _) = try await gateway.caller(request)
            switch caller {
            case .anonymous: throw ServiceError.unauthorized()
            case .serviceKey: throw ServiceError.forbidden("the session is for user sessions")
            case .user(let id, _, let isAdmin):
                guard let user = try await users.users(ids: [id])[id] else { throw ServiceError.unauthorized() }
                let body = try JSON.encode(SessionBody(user: user, isAdmin: isAdmin))
                return Response(status: .ok, headers: [.contentType: "application/json", .cacheControl: "no-store"],
                                body: .init(byteBuffer: ByteBuffer(bytes: body)))
            }
        }
    }

    /// The shell runs only our own scripts and styles, is never framed, and leaks no invite code
    /// through the Referer header.
    static let shellHeaders: [(HTTPField.Name, String)] = [
        (.contentSecurityPolicy,
         "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
            + "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
        (HTTPField.Name("Referrer-Policy")!, "no-referrer"),
        (HTTPField.Name("X-Content-Type-Options")!, "nosniff"),
    ]

    func respond(_ asset: Asset, _ request: Request, cache: String) -> Response {
        let gzip = asset.gzipped != nil && Self.acceptsGzip(request.headers[.acceptEncoding])
        // The two encodings are different representations, so they get different tags.
        let etag = "\"\(asset.etag)\(gzip ? "-gz" : "")\""
        var headers: HTTPFields = [
            .contentType: asset.contentType, .cacheControl: cache, .eTag: etag,
            HTTPField.Name("X-Content-Type-Options")!: "nosniff",
        ]
        if asset.gzipped != nil { headers[.vary] = "Accept-Encoding" }
        if let match = request.headers[.ifNoneMatch],
           match.split(separator: ",").contains(where: { $0.trimmingCharacters(in: .whitespaces) == etag || $0 == "*" }) {
            return Response(status: .notModified, headers: headers)
        }
        if gzip { headers[.contentEncoding] = "gzip" }
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: gzip ? asset.gzipped! : asset.body))
    }

    static func acceptsGzip(_ header: String?) -> Bool {
        guard let header else { return false }
        return header.split(separator: ",").contains { part in
            let fields = part.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
            guard fields.first == "gzip" || fields.first == "*" else { return false }
            return !fields.dropFirst().contains { $0.replacingOccurrences(of: " ", with: "") == "q=0" }
        }
    }
}

struct SessionBody: Encodable {
    let user: User
    /// The role as of this request (`verteilt admin grant` takes effect on the next one).
    let isAdmin: Bool
}

struct WebError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
