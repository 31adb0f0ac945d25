import Foundation
import ServiceKit

/// The OpenAPI 3 document for every registered endpoint, built from the endpoints' own types.
enum OpenAPI {
    static func document(_ registry: ServiceRegistry) -> Data {
        var components: [String: Any] = [:]
        var paths: [String: Any] = [:]
        let errorRef = ["$ref": "#/components/schemas/Error"]
        components["Error"] = [
            "type": "object", "required": ["id", "code", "detail", "status"],
            "properties": [
                "id": ["type": "string"], "code": ["type": "integer"],
                "detail": ["type": "string"], "status": ["type": "string"],
            ],
        ]
        for e in registry.endpoints {
            let request = json(e.requestSchema, &components)
            let response = json(e.responseSchema, &components)
            var operation: [String: Any] = [
                "operationId": "\(e.service).\(e.method)",
                "tags": [e.service],
                "summary": e.summary,
                "requestBody": ["required": true, "content": ["application/json": ["schema": request]]],
                "responses": [
                    "200": ["description": "OK", "content": ["application/json": ["schema": response]]],
                    "default": ["description": "Error", "content": ["application/json": ["schema": errorRef]]],
                ],
                "x-access": e.access.rawValue,
            ]
            if e.access != .anyone { operation["security"] = [["bearer": []], ["cookie": []]] }
            paths["/v1/\(e.service)/\(e.method)"] = ["post": operation]
        }
        let doc: [String: Any] = [
            "openapi": "3.0.3",
            "info": ["title": "Verteilt", "version": "1"],
            "paths": paths,
            "components": [
                "schemas": components,
                "securitySchemes": [
                    "bearer": ["type": "http", "scheme": "bearer"],
                    "cookie": ["type": "apiKey", "in": "cookie", "name": "verteilt_session"],
                ],
            ],
        ]
        return (try? JSONSerialization.data(withJSONObject: doc, options: [.sortedKeys])) ?? Data("{}".utf8)
    }

    static func json(_ schema: Schema, _ components: inout [String: Any]) -> [String: Any] {
        switch schema {
        case .string(let format):
            return format.map { ["type": "string", "format": $0] } ?? ["type": "string"]
        case .enumeration(let values): return ["type": "string", "enum": values]
        case .integer: return ["type": "integer"]
        case .number: return ["type": "number"]
        case .boolean: return ["type": "boolean"]
        case .any: return [:]
        case .array(let item): return ["type": "array", "items": json(item, &components)]
        case .map(let value): return ["type": "object", "additionalProperties": json(value, &components)]
        case .object(let name, let properties):
            let key = name.replacingOccurrences(of: ".", with: "_")
            if components[key] == nil {
                components[key] = [:]  // reserve the name before recursing (recursive types)
                var props: [String: Any] = [:]
                for p in properties { props[p.name] = json(p.schema, &components) }
                var object: [String: Any] = ["type": "object", "properties": props]
                let required = properties.filter(\.required).map(\.name)
                if !required.isEmpty { object["required"] = required }
                components[key] = object
            }
            return ["$ref": "#/components/schemas/\(key)"]
        }
    }
}
