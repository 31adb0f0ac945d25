import Foundation

/// Input rules shared by every service: limits answered with a 400 that names the field.
public enum Validate {
    /// Trims surrounding whitespace, rejects control characters and text over `maxLength`.
    public static func name(_ value: String, field: String, maxLength: Int = 100, required: Bool = true) throws -> String {
        let trimmed = value.trimmingCharacters(in: .whitespacesAndNewlines)
        if required && trimmed.isEmpty { throw ServiceError.invalidField(field, "must not be empty") }
        if trimmed.count > maxLength { throw ServiceError.invalidField(field, "must be at most \(maxLength) characters") }
        if trimmed.unicodeScalars.contains(where: { isControl($0) }) {
            throw ServiceError.invalidField(field, "must not contain control characters")
        }
        return trimmed
    }

    /// Message text: kept exactly as sent, newline and tab allowed.
    public static func text(_ value: String, field: String, maxLength: Int) throws -> String {
        if value.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            throw ServiceError.invalidField(field, "must not be empty")
        }
        if value.count > maxLength { throw ServiceError.invalidField(field, "must be at most \(maxLength) characters") }
        if value.unicodeScalars.contains(where: { isControl($0) && $0 != "\n" && $0 != "\t" }) {
            throw ServiceError.invalidField(field, "must not contain control characters other than newline and tab")
        }
        return value
    }

    public static func email(_ value: String, field: String = "email") throws -> String {
        let email = value.trimmingCharacters(in: .whitespacesAndNewlines)
        if email.isEmpty { throw ServiceError.invalidField(field, "must not be empty") }
        if email.utf8.count > 254 { throw ServiceError.invalidField(field, "must be at most 254 characters") }
        let parts = email.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, parts[1].contains("."),
              !parts[1].hasPrefix("."), !parts[1].hasSuffix("."),
              !email.unicodeScalars.contains(where: { isControl($0) || $0 == " " })
        else { throw ServiceError.invalidField(field, "must be an email address") }
        return email
    }

    /// Ids are opaque but bounded, so a hostile caller cannot make us store or compare megabytes.
    public static func id(_ value: String, field: String) throws -> String {
        if value.isEmpty { throw ServiceError.invalidField(field, "is required") }
        if value.utf8.count > 128 || value.unicodeScalars.contains(where: { isControl($0) }) {
            throw ServiceError.invalidField(field, "is not a valid id")
        }
        return value
    }

    public static func ids(_ values: [String], field: String, max: Int = 1000) throws -> [String] {
        if values.count > max { throw ServiceError.invalidField(field, "must have at most \(max) entries") }
        for v in values { _ = try id(v, field: field) }
        return values
    }

    static func isControl(_ s: Unicode.Scalar) -> Bool {
        s.properties.generalCategory == .control
    }
}
