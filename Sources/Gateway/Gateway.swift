import Foundation
import HTTPTypes
import Hummingbird
import ServiceKit

/// Exposes every registered endpoint as `POST /v1/{service}/{Method}` (Micro's convention),
/// resolves the caller, limits body size and time, and serves the OpenAPI document.
public struct Gateway: Sendable {
    public struct Configuration: Sendable {
        /// Largest request body accepted (413 past it).
        public var maxBodySize = 1 << 20
        /// Time a request may take before it is answered with 504.
        public var requestTimeout: Duration = .seconds(10)
        public var cookieName = "verteilt_session"
        public init() {}
    }

    let registry: ServiceRegistry
    let authenticator: any Authenticator
    let config: Configuration
    let openAPI: Data

    public init(registry: ServiceRegistry, authenticator: any Authenticator, config: Configuration = .init()) {
        self.registry = registry
        self.authenticator = authenticator
        self.config = config
        self.openAPI = OpenAPI.document(registry)
    }

    public func addRoutes(to router: Router<GatewayContext>) {
        router.post("/v1/:service/:method") { request, context in
            try await self.call(request, context)
        }
        for method in [HTTPRequest.Method.get, .put, .delete, .patch] {
            router.on("/v1/:service/:method", method: method) { _, _ -> Response in
                throw ServiceError(.methodNotAllowed, "service methods are called with POST")
            }
        }
        router.get("/v1/openapi.json") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json"],
                     body: .init(byteBuffer: ByteBuffer(bytes: self.openAPI)))
        }
    }

    /// A read-only page view (`GET`): the caller must be signed in; the output is JSON.
    public func page<Output: Encodable & Sendable>(
        _ path: RouterPath, on router: Router<GatewayContext>,
        _ handler: @escaping @Sendable (Request, GatewayContext, Caller) async throws -> Output
    ) {
        router.get(path) { request, context in
            let (caller, _) = try await self.caller(request)
            guard caller != .anonymous else { throw ServiceError.unauthorized() }
            let output = try await withDeadline(.now.advanced(by: self.config.requestTimeout)) {
                try JSON.encode(try await handler(request, context, caller))
            }
            return Response(status: .ok, headers: [.contentType: "application/json"],
                            body: .init(byteBuffer: ByteBuffer(bytes: output)))
        }
    }

    /// The session token a request carries: the Bearer header first, then the cookie.
    public func token(_ request: Request) -> String? { token(headers: request.headers) }

    public func token(headers: HTTPFields) -> String? {
        if let auth = headers[.authorization] {
            let parts = auth.split(separator: " ", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == "bearer" { return String(parts[1]).trimmingCharacters(in: .whitespaces) }
        }
        let cookies = Cookies(from: headers[values: .cookie])
        return cookies[config.cookieName]?.value
    }

    /// Resolves who is calling; an invalid token is an error only where a caller is required.
    public func caller(_ request: Request) async throws -> (Caller, String?) {
        try await caller(headers: request.headers)
    }

    public func caller(headers: HTTPFields) async throws -> (Caller, String?) {
        guard let token = token(headers: headers), !token.isEmpty else { return (.anonymous, nil) }
        return (try await authenticator.authenticate(token: token) ?? .anonymous, token)
    }

    func call(_ request: Request, _ context: GatewayContext) async throws -> Response {
        let service = context.parameters.get("service") ?? ""
        let method = context.parameters.get("method") ?? ""
        guard let endpoint = registry.endpoint(service: service, method: method) else {
            if registry.hasService(service) { throw ServiceError.notFound("unknown method \(service)/\(method)") }
            throw ServiceError.notFound("unknown service \(service)")
        }
        var request = request
        let body = try await request.collectBody(upTo: config.maxBodySize)
        let (caller, token) = try await self.caller(request)
        if caller == .anonymous, token != nil, endpoint.access != .anyone {
            throw ServiceError.unauthorized("invalid or expired session")
        }
        // The browser sends its session as a cookie, which the browser adds by itself. A page of
        // another site can post a form (text/plain, urlencoded) but not a JSON body without our
        // consent (CORS): so a cookie-authenticated call must say it is JSON.
        if caller != .anonymous, request.headers[.authorization] == nil,
           request.headers[.contentType]?.lowercased().hasPrefix("application/json") != true {
            throw ServiceError.forbidden("a call authenticated by the session cookie must send Content-Type: application/json")
        }
        let proto = request.headers[HTTPField.Name("X-Forwarded-Proto")!]
        let callContext = CallContext(
            caller: caller, requestID: context.requestID, deadline: .now.advanced(by: config.requestTimeout),
            logger: context.logger, clientAddress: context.clientAddress, token: token,
            isSecure: request.uri.scheme == .https || proto == "https",
            userAgent: request.headers[.userAgent])
        let data = Data(buffer: body)
        let output = try await withDeadline(callContext.deadline) {
            try await endpoint.call(body: data, context: callContext)
        }
        var response = Response(status: .ok, headers: [.contentType: "application/json"],
                                body: .init(byteBuffer: ByteBuffer(bytes: output)))
        switch callContext.effects.sessionCookie {
        case .set(let token, let maxAge):
            response.setCookie(.init(name: config.cookieName, value: token, maxAge: maxAge, path: "/",
                                     secure: callContext.isSecure, httpOnly: true, sameSite: .lax))
        case .clear:
            response.setCookie(.init(name: config.cookieName, value: "", maxAge: 0, path: "/",
                                     secure: callContext.isSecure, httpOnly: true, sameSite: .lax))
        case nil:
            break
        }
        return response
    }
}

/// Runs `body`, or answers 504 when `deadline` passes first (the body is cancelled).
func withDeadline<T: Sendable>(
    _ deadline: ContinuousClock.Instant, _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(until: deadline, clock: .continuous)
            throw ServiceError(.gatewayTimeout, "request took longer than its deadline")
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}
