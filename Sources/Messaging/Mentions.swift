/// `@username` in a message's text. Usernames are 3 to 32 letters, digits, `_`, `.` or `-`
/// (the users service's rule); matching is case-insensitive.
public enum Mentions {
    static func isNameCharacter(_ c: Character) -> Bool {
        c.isASCII && (c.isLetter || c.isNumber || c == "_" || c == "." || c == "-")
    }

    /// The lowercased names the text mentions, in order of first appearance. An `@` right after a
    /// name character (an email address such as `ana@example.org`) mentions no one. A name that
    /// ends a sentence (`@ana.`) also counts without its trailing dots and dashes.
    public static func names(in text: String) -> [String] {
        guard text.contains("@") else { return [] }
        var names: [String] = []
        var previous: Character?
        var index = text.startIndex
        while index < text.endIndex {
            let c = text[index]
            if c == "@", previous.map({ !isNameCharacter($0) }) ?? true {
                let start = text.index(after: index)
                var end = start
                while end < text.endIndex, isNameCharacter(text[end]) { end = text.index(after: end) }
                let token = text[start..<end].lowercased()
                var trimmed = Substring(token)
                while let last = trimmed.last, last == "." || last == "-" { trimmed = trimmed.dropLast() }
                for name in [token, String(trimmed)] where (3...32).contains(name.count) && !names.contains(name) {
                    names.append(name)
                }
                previous = end > start ? text[text.index(before: end)] : c
                index = end
                continue
            }
            previous = c
            index = text.index(after: index)
        }
        return names
    }
}
