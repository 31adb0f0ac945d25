import Foundation

/// A JSON schema for a Codable type, found by running its `init(from:)` against a decoder that
/// records what it asks for. No hand-written schema can drift from the code this way.
public indirect enum Schema: Sendable, Equatable {
    case string(format: String?)
    case enumeration([String])
    case integer
    case number
    case boolean
    case array(Schema)
    case map(Schema)
    case object(name: String, properties: [Property])
    case any

    public struct Property: Sendable, Equatable {
        public var name: String
        public var schema: Schema
        public var required: Bool
    }

    public static func of(_ type: any Decodable.Type) -> Schema {
        let recorder = SchemaRecorder()
        return (try? recorder.schema(type)) ?? .any
    }
}

/// Types whose schema is a string enumeration.
public protocol SchemaEnumeration: CaseIterable, RawRepresentable, Decodable where RawValue == String {}

private protocol ArrayMarker { static var elementType: any Decodable.Type { get }; static var empty: Any { get } }
extension Array: ArrayMarker where Element: Decodable {
    static var elementType: any Decodable.Type { Element.self }
    static var empty: Any { [Element]() }
}
private protocol DictionaryMarker { static var valueType: any Decodable.Type { get }; static var empty: Any { get } }
extension Dictionary: DictionaryMarker where Key == String, Value: Decodable {
    static var valueType: any Decodable.Type { Value.self }
    static var empty: Any { [String: Value]() }
}
private protocol OptionalMarker { static var wrappedType: any Decodable.Type { get } }
extension Optional: OptionalMarker where Wrapped: Decodable {
    static var wrappedType: any Decodable.Type { Wrapped.self }
}

private final class SchemaRecorder {
    func schema(_ type: any Decodable.Type) throws -> Schema {
        switch type {
        case is String.Type: return .string(format: nil)
        case is Timestamp.Type: return .string(format: "date-time")
        case is Bool.Type: return .boolean
        case is Int.Type, is Int64.Type, is Int32.Type, is UInt.Type: return .integer
        case is Double.Type, is Float.Type: return .number
        default: break
        }
        if let e = type as? any SchemaEnumeration.Type { return .enumeration(Self.cases(e)) }
        if let a = type as? any ArrayMarker.Type { return .array(try schema(a.elementType)) }
        if let d = type as? any DictionaryMarker.Type { return .map(try schema(d.valueType)) }
        if let o = type as? any OptionalMarker.Type { return try schema(o.wrappedType) }
        let decoder = RecordingDecoder(recorder: self)
        _ = try type.init(from: decoder)
        return .object(name: String(reflecting: type), properties: decoder.properties.value)
    }

    static func cases<E: SchemaEnumeration>(_: E.Type) -> [String] { E.allCases.map(\.rawValue) }

    /// A value of `type` to hand back to the decoding initialiser.
    func placeholder<T: Decodable>(_ type: T.Type) throws -> T {
        switch type {
        case is String.Type: return "" as! T
        case is Timestamp.Type: return Timestamp(microseconds: 0) as! T
        case is Bool.Type: return false as! T
        case is Int.Type: return 0 as! T
        case is Int64.Type: return Int64(0) as! T
        case is Int32.Type: return Int32(0) as! T
        case is UInt.Type: return UInt(0) as! T
        case is Double.Type: return 0.0 as! T
        case is Float.Type: return Float(0) as! T
        default: break
        }
        if let e = type as? any SchemaEnumeration.Type { return Self.firstCase(e) as! T }
        if let a = type as? any ArrayMarker.Type { return a.empty as! T }
        if let d = type as? any DictionaryMarker.Type { return d.empty as! T }
        return try T(from: RecordingDecoder(recorder: self))
    }

    static func firstCase<E: SchemaEnumeration>(_: E.Type) -> E { E.allCases.first! }
}

private final class Box<T> { var value: T; init(_ v: T) { value = v } }

private struct RecordingDecoder: Decoder {
    let recorder: SchemaRecorder
    let properties = Box<[Schema.Property]>([])
    var codingPath: [any CodingKey] = []
    var userInfo: [CodingUserInfoKey: Any] = [:]

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        KeyedDecodingContainer(RecordingKeyed<Key>(decoder: self))
    }
    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        throw DecodingError.typeMismatch([Any].self, .init(codingPath: [], debugDescription: "unsupported"))
    }
    func singleValueContainer() throws -> any SingleValueDecodingContainer {
        throw DecodingError.typeMismatch(Any.self, .init(codingPath: [], debugDescription: "unsupported"))
    }

    func record(_ key: some CodingKey, _ type: any Decodable.Type, required: Bool) {
        let schema = (try? recorder.schema(type)) ?? .any
        properties.value.append(.init(name: JSON.snakeCase(key.stringValue), schema: schema, required: required))
    }
}

private struct RecordingKeyed<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let decoder: RecordingDecoder
    var codingPath: [any CodingKey] { [] }
    var allKeys: [Key] { [] }
    func contains(_ key: Key) -> Bool { true }
    func decodeNil(forKey key: Key) throws -> Bool { false }
    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
        decoder.record(key, type, required: true)
        return try decoder.recorder.placeholder(type)
    }
    func decodeIfPresent<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? { optional(type, key) }
    // The standard library has one requirement per primitive type; each must be implemented
    // or its default (which calls `decode`) would record the field as required.
    func decodeIfPresent(_ type: String.Type, forKey key: Key) throws -> String? { optional(type, key) }
    func decodeIfPresent(_ type: Bool.Type, forKey key: Key) throws -> Bool? { optional(type, key) }
    func decodeIfPresent(_ type: Int.Type, forKey key: Key) throws -> Int? { optional(type, key) }
    func decodeIfPresent(_ type: Int8.Type, forKey key: Key) throws -> Int8? { optional(type, key) }
    func decodeIfPresent(_ type: Int16.Type, forKey key: Key) throws -> Int16? { optional(type, key) }
    func decodeIfPresent(_ type: Int32.Type, forKey key: Key) throws -> Int32? { optional(type, key) }
    func decodeIfPresent(_ type: Int64.Type, forKey key: Key) throws -> Int64? { optional(type, key) }
    func decodeIfPresent(_ type: UInt.Type, forKey key: Key) throws -> UInt? { optional(type, key) }
    func decodeIfPresent(_ type: UInt8.Type, forKey key: Key) throws -> UInt8? { optional(type, key) }
    func decodeIfPresent(_ type: UInt16.Type, forKey key: Key) throws -> UInt16? { optional(type, key) }
    func decodeIfPresent(_ type: UInt32.Type, forKey key: Key) throws -> UInt32? { optional(type, key) }
    func decodeIfPresent(_ type: UInt64.Type, forKey key: Key) throws -> UInt64? { optional(type, key) }
    func decodeIfPresent(_ type: Double.Type, forKey key: Key) throws -> Double? { optional(type, key) }
    func decodeIfPresent(_ type: Float.Type, forKey key: Key) throws -> Float? { optional(type, key) }
    private func optional<T: Decodable>(_ type: T.Type, _ key: Key) -> T? {
        decoder.record(key, type, required: false)
        return nil
    }
    func nestedContainer<N: CodingKey>(keyedBy type: N.Type, forKey key: Key) throws -> KeyedDecodingContainer<N> {
        KeyedDecodingContainer(RecordingKeyed<N>(decoder: decoder))
    }
    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        try decoder.unkeyedContainer()
    }
    func superDecoder() throws -> any Decoder { decoder }
    func superDecoder(forKey key: Key) throws -> any Decoder { decoder }
}
