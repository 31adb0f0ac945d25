// swift-tools-version:6.0
import PackageDescription

let swiftSettings: [SwiftSetting] = [.enableUpcomingFeature("ExistentialAny")]

let package = Package(
    name: "verteilt",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "verteilt", targets: ["verteilt"])
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-auth", from: "2.5.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket", from: "2.8.1"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.3"),
        // Already in the graph through postgres-nio; the mailer's STARTTLS uses it directly.
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.25.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        // For the SQLite it vendors (module VaporCSQLite), which Storage calls directly.
        .package(url: "https://github.com/vapor/sqlite-nio", from: "1.13.2"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        // Already in the graph (hummingbird-websocket); gzips the web app's files.
        .package(url: "https://github.com/adam-fowler/compress-nio.git", from: "1.3.0"),
    ],
    targets: [
        .target(
            name: "ServiceKit",
            dependencies: [
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "Storage",
            dependencies: [
                "ServiceKit",
                .product(name: "SQLiteNIO", package: "sqlite-nio"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "Users",
            dependencies: [
                "ServiceKit", "Storage", "Codes",
                .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "Codes",
            dependencies: [
                "ServiceKit", "Storage",
            ],
            swiftSettings: swiftSettings
        ),
        .target(name: "Groups", dependencies: ["ServiceKit", "Storage", "Users"], swiftSettings: swiftSettings),
        .target(name: "Messaging", dependencies: ["ServiceKit", "Storage"], swiftSettings: swiftSettings),
        .target(name: "Threads", dependencies: ["ServiceKit", "Storage", "Groups", "Users", "Messaging"], swiftSettings: swiftSettings),
        .target(name: "Chats", dependencies: ["ServiceKit", "Storage", "Groups", "Messaging"], swiftSettings: swiftSettings),
        .target(name: "Seen", dependencies: ["ServiceKit", "Storage", "Groups", "Threads", "Chats"], swiftSettings: swiftSettings),
        .target(name: "Invites", dependencies: ["ServiceKit", "Storage", "Groups", "Users"], swiftSettings: swiftSettings),
        .target(
            name: "Pages",
            dependencies: ["ServiceKit", "Storage", "Users", "Groups", "Messaging", "Threads", "Chats", "Seen"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "Realtime",
            dependencies: [
                "ServiceKit", "Storage", "Gateway", "Groups", "Chats", "Threads",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "Workflows",
            dependencies: [
                "ServiceKit", "Storage",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "Mail",
            dependencies: [
                "ServiceKit", "Storage",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "Emails",
            dependencies: [
                "ServiceKit", "Storage", "Workflows", "Mail", "Users", "Codes", "Groups", "Invites", "Chats", "Threads", "Seen",
                "Messaging",
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "Gateway",
            dependencies: [
                "ServiceKit",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "Web",
            dependencies: [
                "ServiceKit", "Gateway", "Users",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CompressNIO", package: "compress-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            resources: [.copy("Static")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "App",
            dependencies: [
                "ServiceKit", "Storage", "Gateway", "Users", "Codes", "Groups", "Messaging", "Threads", "Chats", "Seen",
                "Invites", "Pages", "Realtime", "Web", "Workflows", "Mail", "Emails",
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "verteilt",
            dependencies: [
                "App",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "group-page-bench",
            dependencies: [
                "App", "Storage", "ServiceKit",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ],
            path: "Benchmarks/GroupPage",
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "fanout-bench",
            dependencies: [
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Benchmarks/Fanout",
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "jobs-bench",
            dependencies: [
                "Workflows", "Storage", "ServiceKit",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            path: "Benchmarks/Jobs",
            swiftSettings: swiftSettings
        ),
        .target(
            name: "TestSupport",
            dependencies: [
                "App", "Storage",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ],
            path: "Tests/TestSupport",
            exclude: ["smtp_sink.py"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "StorageTests",
            dependencies: ["Storage", "TestSupport", .product(name: "NIOConcurrencyHelpers", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "ServiceKitTests", dependencies: ["ServiceKit"], swiftSettings: swiftSettings),
        .testTarget(
            name: "UsersTests",
            dependencies: [
                "TestSupport", "Users", "Codes", "ServiceKit", .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "CodesTests",
            dependencies: ["TestSupport", "ServiceKit", .product(name: "HummingbirdTesting", package: "hummingbird")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ChatTests",
            dependencies: ["TestSupport", "ServiceKit", "Storage", .product(name: "HummingbirdTesting", package: "hummingbird")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "RealtimeTests",
            dependencies: [
                "TestSupport", "ServiceKit", "Realtime", "Storage", "Groups", "Chats",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "WebTests",
            dependencies: [
                "TestSupport", "Web", .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "CompressNIO", package: "compress-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "WorkflowsTests",
            dependencies: [
                "TestSupport", "Workflows", "Storage", "ServiceKit",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "EmailsTests",
            dependencies: [
                "TestSupport", "Emails", "Mail", "Workflows", "Storage", "ServiceKit", "Users",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "MailTests",
            dependencies: [
                "TestSupport", "Mail", "Storage", "ServiceKit",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GatewayTests",
            dependencies: ["TestSupport", "App", .product(name: "HummingbirdTesting", package: "hummingbird")],
            swiftSettings: swiftSettings
        ),
    ]
)
