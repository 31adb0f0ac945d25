import Foundation
import NIOCore

/// Who may call an endpoint at all. Finer rules (whose data) live in the handler.
public enum Access: String, Sendable {
    /// Anyone, signed in or not.
    case anyone
    /// A user session or a service key.
    case signedIn
    /// Service keys and admin users.
    case administrator
    /// Service keys only.
    case serviceKey
}

/// A typed service method, exposed as `POST /v1/{service}/{method}`.
public struct Endpoint: Sendable {
    public let service: String
    public let method: String
    public let summary: String
    public let access: Access
    public let requestSchema: Schema
    public let responseSchema: Schema
    let handler: @Sendable (Data, CallContext) async throws -> Data

    public init<Request: Decodable & Sendable, Response: Codable & Sendable>(
        service: String,
        method: String,
        summary: String,
        access: Access,
        request: Request.Type = Request.self,
        response: Response.Type = Response.self,
        handler: @escaping @Sendable (Request, CallContext) async throws -> Response
    ) {
        self.service = service
        self.method = method
        self.summary = summary
        self.access = access
        self.requestSchema = Schema.of(Request.self)
        self.responseSchema = Schema.of(Response.self)
        self.handler = { body, context in
            let request: Request
            do {
                // An empty body means `{}`, as Micro clients send for parameterless calls.
                request = try JSON.decoder().decode(Request.self, from: body.isEmpty ? Data("{}".utf8) : body)
            } catch let error as DecodingError {
                throw JSON.describe(error)
            }
            let response = try await handler(request, context)
            return try JSON.encode(response)
        }
    }

    /// Decodes the body, checks access, runs the handler, encodes the response.
    public func call(body: Data, context: CallContext) async throws -> Data {
        try Self.check(access, context.caller)
        return try await handler(body, context)
    }

    static func check(_ access: Access, _ caller: Caller) throws {
        switch (access, caller) {
        case (.anyone, _): return
        case (_, .anonymous): throw ServiceError.unauthorized()
        case (.signedIn, _): return
        case (.administrator, _) where caller.isAdministrator: return
        case (.administrator, _): throw ServiceError.forbidden("this method is for administrators")
        case (.serviceKey, .serviceKey): return
        case (.serviceKey, _): throw ServiceError.forbidden("this method is for service keys")
        }
    }
}

/// An empty request or response: `{}`.
public struct Empty: Codable, Sendable, Equatable {
    public init() {}
}

/// A service: a name and its endpoints.
public protocol ServiceDefinition: Sendable {
    var name: String { get }
    var endpoints: [Endpoint] { get }
}

/// All endpoints of all services, looked up case-insensitively (Micro's convention).
public struct ServiceRegistry: Sendable {
    public private(set) var endpoints: [Endpoint] = []
    private var index: [String: Int] = [:]

    public init(_ services: [any ServiceDefinition] = []) {
        for service in services { register(service) }
    }

    public mutating func register(_ service: any ServiceDefinition) {
        for endpoint in service.endpoints {
            let key = Self.key(endpoint.service, endpoint.method)
            precondition(index[key] == nil, "endpoint \(endpoint.service)/\(endpoint.method) registered twice")
            index[key] = endpoints.count
            endpoints.append(endpoint)
        }
    }

    public func endpoint(service: String, method: String) -> Endpoint? {
        index[Self.key(service, method)].map { endpoints[$0] }
    }

    public func hasService(_ service: String) -> Bool {
        let prefix = service.lowercased() + "/"
        return index.keys.contains { $0.hasPrefix(prefix) }
    }

    static func key(_ service: String, _ method: String) -> String {
        service.lowercased() + "/" + method.lowercased()
    }
}
