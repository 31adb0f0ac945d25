import Foundation
import ServiceKit

/// A value bound into or read out of SQL, the same on SQLite and PostgreSQL.
public enum SQLValue: Sendable, Hashable {
    case null
    case int(Int64)
    case double(Double)
    case text(String)
    case blob([UInt8])
}

public protocol SQLBindable: Sendable { var sqlValue: SQLValue { get } }
extension String: SQLBindable { public var sqlValue: SQLValue { .text(self) } }
extension Int: SQLBindable { public var sqlValue: SQLValue { .int(Int64(self)) } }
extension Int64: SQLBindable { public var sqlValue: SQLValue { .int(self) } }
extension Double: SQLBindable { public var sqlValue: SQLValue { .double(self) } }
extension Bool: SQLBindable { public var sqlValue: SQLValue { .int(self ? 1 : 0) } }
extension Timestamp: SQLBindable { public var sqlValue: SQLValue { .int(microseconds) } }
extension SQLValue: SQLBindable { public var sqlValue: SQLValue { self } }
extension Optional: SQLBindable where Wrapped: SQLBindable {
    public var sqlValue: SQLValue { self?.sqlValue ?? .null }
}

/// One result row, columns by name.
public struct Row: Sendable {
    public let values: [String: SQLValue]

    public init(_ values: [String: SQLValue]) { self.values = values }

    public func value(_ column: String) throws -> SQLValue {
        guard let v = values[column] else { throw StorageError.missingColumn(column) }
        return v
    }

    public func string(_ column: String) throws -> String {
        switch try value(column) {
        case .text(let s): return s
        case .int(let i): return String(i)
        case .double(let d): return String(d)
        case .blob(let b): return String(decoding: b, as: UTF8.self)
        case .null: throw StorageError.unexpectedNull(column)
        }
    }

    public func optionalString(_ column: String) throws -> String? {
        if case .null = try value(column) { return nil }
        return try string(column)
    }

    public func int(_ column: String) throws -> Int64 {
        switch try value(column) {
        case .int(let i): return i
        case .double(let d): return Int64(d)
        case .text(let s):
            guard let i = Int64(s) else { throw StorageError.typeMismatch(column) }
            return i
        case .null: throw StorageError.unexpectedNull(column)
        case .blob: throw StorageError.typeMismatch(column)
        }
    }

    public func optionalInt(_ column: String) throws -> Int64? {
        if case .null = try value(column) { return nil }
        return try int(column)
    }

    public func bool(_ column: String) throws -> Bool { try int(column) != 0 }

    public func timestamp(_ column: String) throws -> Timestamp { Timestamp(microseconds: try int(column)) }

    public func optionalTimestamp(_ column: String) throws -> Timestamp? {
        try optionalInt(column).map(Timestamp.init(microseconds:))
    }
}

public enum StorageError: Error, CustomStringConvertible, Equatable {
    case missingColumn(String)
    case unexpectedNull(String)
    case typeMismatch(String)
    /// A unique constraint failed; the caller usually maps it to 409.
    case uniqueViolation(String)
    /// A row refers to one that is gone (deleted by a transaction that committed meanwhile).
    case foreignKeyViolation(String)
    case unsupportedURL(String)
    case closed

    public var description: String {
        switch self {
        case .missingColumn(let c): return "missing column \(c)"
        case .unexpectedNull(let c): return "unexpected NULL in column \(c)"
        case .typeMismatch(let c): return "unexpected type in column \(c)"
        case .uniqueViolation(let m): return "unique constraint failed: \(m)"
        case .foreignKeyViolation(let m): return "foreign key constraint failed: \(m)"
        case .unsupportedURL(let u): return "unsupported database URL: \(u)"
        case .closed: return "database is closed"
        }
    }
}

extension StorageError: ServiceErrorConvertible {
    public var serviceError: ServiceError {
        switch self {
        case .uniqueViolation: return .conflict("already exists")
        case .foreignKeyViolation: return .notFound("it was removed meanwhile")
        default: return ServiceError(.internalServerError, "internal error")
        }
    }
}
