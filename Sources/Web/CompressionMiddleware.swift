import CompressNIO
import Gateway
import HTTPTypes
import Hummingbird
import NIOCore

/// Gzips JSON answers of 1 KiB or more for clients that say they accept it. The web app's group
/// page is about 32 KB of JSON and compresses to a fraction of that; a client that does not send
/// `Accept-Encoding: gzip` (curl, the test clients) gets plain JSON as before.
public struct CompressionMiddleware: RouterMiddleware {
    public typealias Context = GatewayContext

    static let threshold = 1024

    public init() {}

    public func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        var response = try await next(request, context)
        guard response.headers[.contentEncoding] == nil,
              response.headers[.contentType]?.hasPrefix("application/json") == true,
              let length = response.body.contentLength, length >= Self.threshold
        else { return response }
        // Whether or not this client gets gzip, a cache must keep the two apart.
        response.headers[.vary] = "Accept-Encoding"
        guard WebApp.acceptsGzip(request.headers[.acceptEncoding]) else { return response }
        let collector = BodyCollector()
        try await response.body.write(collector)
        var plain = collector.buffer
        let compressed = try plain.compress(with: .gzip(configuration: .init(windowSize: 15, compressionLevel: 6)))
        response.headers[.contentEncoding] = "gzip"
        response.body = .init(byteBuffer: compressed)
        return response
    }
}

/// Gathers a response body that is already in memory (its length was known).
final class BodyCollector: ResponseBodyWriter {
    var buffer = ByteBuffer()

    func write(_ part: ByteBuffer) async throws {
        var part = part
        buffer.writeBuffer(&part)
    }

    func finish(_ trailingHeaders: HTTPFields?) async throws {}
}
