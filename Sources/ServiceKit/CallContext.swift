import Foundation
import HTTPTypes
import Logging
import NIOConcurrencyHelpers

/// What an endpoint knows about the call besides its request body.
public struct CallContext: Sendable {
    public var caller: Caller
    public var requestID: String
    public var deadline: ContinuousClock.Instant
    public var logger: Logger
    /// The client's address, for rate limits.
    public var clientAddress: String
    /// The raw bearer token or cookie the call came with, if any.
    public var token: String?
    /// Whether the request reached us over TLS (directly or via a proxy): cookies get `Secure`.
    public var isSecure: Bool
    public var userAgent: String?
    /// Things an endpoint asks the transport to do with the response (cookies).
    public let effects: ResponseEffects

    public init(
        caller: Caller = .anonymous,
        requestID: String = Secrets.uuid(),
        deadline: ContinuousClock.Instant = .now.advanced(by: .seconds(10)),
        logger: Logger = Logger(label: "verteilt"),
        clientAddress: String = "unknown",
        token: String? = nil,
        isSecure: Bool = false,
        userAgent: String? = nil,
        effects: ResponseEffects = ResponseEffects()
    ) {
        self.caller = caller
        self.requestID = requestID
        self.deadline = deadline
        self.logger = logger
        self.clientAddress = clientAddress
        self.token = token
        self.isSecure = isSecure
        self.userAgent = userAgent
        self.effects = effects
    }
}

/// Session cookie changes an endpoint wants on its response.
public final class ResponseEffects: Sendable {
    public enum SessionCookie: Sendable, Equatable {
        case set(token: String, maxAge: Int)
        case clear
    }

    private let state = NIOLockedValueBox<SessionCookie?>(nil)

    public init() {}

    public var sessionCookie: SessionCookie? {
        get { state.withLockedValue { $0 } }
        set { state.withLockedValue { $0 = newValue } }
    }
}
