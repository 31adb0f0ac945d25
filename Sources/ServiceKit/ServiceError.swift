import Foundation
import HTTPTypes
import Hummingbird

/// The one error every endpoint throws. The gateway renders it as
/// `{"id","code","detail","status"}` with HTTP status = `code`.
public struct ServiceError: Error, Sendable, Equatable, CustomStringConvertible {
    public var status: HTTPResponse.Status
    public var detail: String
    /// Extra response headers, e.g. `Retry-After` on 429.
    public var headers: [String: String]

    public init(_ status: HTTPResponse.Status, _ detail: String, headers: [String: String] = [:]) {
        self.status = status
        self.detail = detail
        self.headers = headers
    }

    public var description: String { "\(status.code) \(detail)" }

    public static func badRequest(_ detail: String) -> ServiceError { .init(.badRequest, detail) }
    public static func unauthorized(_ detail: String = "authentication required") -> ServiceError {
        .init(.unauthorized, detail)
    }
    public static func forbidden(_ detail: String) -> ServiceError { .init(.forbidden, detail) }
    public static func notFound(_ detail: String) -> ServiceError { .init(.notFound, detail) }
    public static func conflict(_ detail: String) -> ServiceError { .init(.conflict, detail) }
    public static func tooManyRequests(retryAfter seconds: Int) -> ServiceError {
        .init(.tooManyRequests, "too many attempts, retry in \(seconds) s", headers: ["Retry-After": String(seconds)])
    }
    /// A field failed validation: the detail always names the field.
    public static func invalidField(_ field: String, _ problem: String) -> ServiceError {
        .init(.badRequest, "\(field): \(problem)")
    }
}

/// The JSON body of every error response.
public struct ErrorBody: Codable, Sendable, Equatable {
    public var id: String
    public var code: Int
    public var detail: String
    public var status: String

    public init(id: String, code: Int, detail: String, status: String) {
        self.id = id
        self.code = code
        self.detail = detail
        self.status = status
    }
}

/// Errors of lower layers that know which API error they are (e.g. a unique violation is 409).
public protocol ServiceErrorConvertible: Error {
    var serviceError: ServiceError { get }
}
