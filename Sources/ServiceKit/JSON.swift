import Foundation

/// JSON as the API speaks it: snake_case keys, RFC 3339 timestamps (see `Timestamp`).
public enum JSON {
    public static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.keyEncodingStrategy = .convertToSnakeCase
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }

    public static func decoder() -> JSONDecoder {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        return d
    }

    public static func encode(_ value: some Encodable) throws -> Data {
        try encoder().encode(value)
    }

    /// Swift property name -> JSON field name, as `.convertToSnakeCase` spells it
    /// (`userIds` -> `user_ids`, `myURLValue` -> `my_url_value`).
    public static func snakeCase(_ name: String) -> String {
        let chars = Array(name)
        var out = ""
        for (i, ch) in chars.enumerated() {
            if ch.isUppercase && i > 0 {
                let prevLower = !chars[i - 1].isUppercase
                let nextLower = i + 1 < chars.count && chars[i + 1].isLowercase
                if prevLower || nextLower { out.append("_") }
            }
            out.append(contentsOf: ch.lowercased())
        }
        return out
    }

    /// Turns a decoding failure into a 400 that names the field and the problem.
    public static func describe(_ error: DecodingError) -> ServiceError {
        func path(_ codingPath: [any CodingKey], _ last: (any CodingKey)? = nil) -> String {
            var keys = codingPath
            if let last { keys.append(last) }
            var out = ""
            for key in keys {
                if let index = key.intValue {
                    out += "[\(index)]"
                } else {
                    out += (out.isEmpty ? "" : ".") + snakeCase(key.stringValue)
                }
            }
            return out
        }
        switch error {
        case .keyNotFound(let key, let ctx):
            return .invalidField(path(ctx.codingPath, key), "is required")
        case .typeMismatch(let type, let ctx):
            if ctx.codingPath.isEmpty { return .badRequest("request body must be a JSON object") }
            return .invalidField(path(ctx.codingPath), "must be \(typeName(type))")
        case .valueNotFound(let type, let ctx):
            if ctx.codingPath.isEmpty { return .badRequest("request body must be a JSON object") }
            return .invalidField(path(ctx.codingPath), "must be \(typeName(type)), not null")
        case .dataCorrupted(let ctx):
            if ctx.codingPath.isEmpty { return .badRequest("malformed JSON: \(ctx.debugDescription)") }
            return .invalidField(path(ctx.codingPath), ctx.debugDescription)
        @unknown default:
            return .badRequest("invalid request body")
        }
    }

    static func typeName(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: return "a string"
        case is Int.Type, is Int64.Type, is Int32.Type: return "an integer"
        case is Double.Type, is Float.Type: return "a number"
        case is Bool.Type: return "a boolean"
        case is Timestamp.Type: return "an RFC 3339 timestamp string"
        default:
            let name = String(describing: type)
            if name.hasPrefix("Array") { return "an array" }
            if name.hasPrefix("Dictionary") { return "an object" }
            return "an object"
        }
    }
}
