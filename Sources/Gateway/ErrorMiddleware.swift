import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import ServiceKit

extension HTTPField.Name {
    static let requestID = Self("X-Request-Id")!
    static let retryAfter = Self("Retry-After")!
}

/// Gives every request an id (the caller's `X-Request-Id`, or a new one), puts it on every log
/// line and on the response, and turns every error into the one JSON error shape.
public struct RequestIDMiddleware: RouterMiddleware {
    public typealias Context = GatewayContext

    public init() {}

    public func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        var context = context
        let given = request.headers[.requestID].flatMap { id -> String? in
            let ok = !id.isEmpty && id.utf8.count <= 128 && id.unicodeScalars.allSatisfy { $0.value > 32 && $0.value < 127 }
            return ok ? id : nil
        }
        let id = given ?? Secrets.uuid()
        context.requestID = id
        context.logger[metadataKey: "request_id"] = .string(id)
        let start = ContinuousClock.now
        var response: Response
        do {
            response = try await next(request, context)
        } catch {
            response = Self.errorResponse(error, requestID: id, logger: context.logger)
        }
        response.headers[.requestID] = id
        let elapsed = start.duration(to: .now)
        context.logger.info("request", metadata: [
            "method": .string(request.method.rawValue), "path": .string(request.uri.path),
            "status": .stringConvertible(response.status.code),
            "ms": .stringConvertible(elapsed.seconds * 1000),
        ])
        return response
    }

    static func serviceError(for error: any Error) -> ServiceError {
        switch error {
        case let e as ServiceError:
            return e
        case let e as any ServiceErrorConvertible:
            return e.serviceError
        case is NIOTooManyBytesError:
            return ServiceError(.contentTooLarge, "request body too large")
        case let e as HTTPError:
            return ServiceError(e.status, e.body ?? e.status.reasonPhrase.lowercased())
        case let e as any HTTPResponseError:
            return ServiceError(e.status, e.status.reasonPhrase.lowercased())
        case let e as DecodingError:
            return JSON.describe(e)
        default:
            return ServiceError(.internalServerError, "internal error")
        }
    }

    public static func errorResponse(_ error: any Error, requestID: String, logger: Logger) -> Response {
        let e = serviceError(for: error)
        if e.status.code >= 500 {
            logger.error("request failed", metadata: ["error": .string(String(reflecting: error))])
        }
        let body = ErrorBody(id: requestID, code: e.status.code, detail: e.detail, status: e.status.reasonPhrase)
        var headers: HTTPFields = [.contentType: "application/json"]
        for (name, value) in e.headers {
            if let n = HTTPField.Name(name) { headers[n] = value }
        }
        let data = (try? JSON.encode(body)) ?? Data()
        return Response(status: e.status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}
