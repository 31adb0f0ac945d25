import Hummingbird
import Logging
import NIOCore

/// The request context of every gateway route: Hummingbird's core context plus the peer address.
public struct GatewayContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let remoteAddress: SocketAddress?
    /// Set by `RequestIDMiddleware`.
    public var requestID: String = ""

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.remoteAddress = source.channel.remoteAddress
    }

    public var clientAddress: String { remoteAddress?.ipAddress ?? "unknown" }
}
