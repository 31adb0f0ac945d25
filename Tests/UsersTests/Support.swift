import TestSupport
import Users

/// What `verteilt keys` and `verteilt admin` do, called directly.
enum ServiceKeysAdmin {
    static func create(_ api: APIClient, name: String) async throws -> String {
        try await ServiceKeys(db: api.database).create(name: name)
    }
    static func revoke(_ api: APIClient, name: String) async throws -> Bool {
        try await ServiceKeys(db: api.database).revoke(name: name)
    }
    static func grant(_ api: APIClient, email: String) async throws -> Bool {
        try await ServiceKeys(db: api.database).setAdmin(email: email, true)
    }
}
