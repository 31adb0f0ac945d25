import Foundation
import ServiceKit

/// RFC 5322 / MIME rendering of a `Mail`. Bodies are base64, so no line is too long and no
/// 8-bit text needs an SMTP extension.
enum MailMessage {
    /// The bare address in `Name <a@b>` or `a@b`; nil when it is not one (no spaces, one @,
    /// no characters that would break an SMTP command).
    static func address(_ text: String) -> String? {
        var a = text.trimmingCharacters(in: .whitespaces)
        if let open = a.lastIndex(of: "<"), a.hasSuffix(">") {
            a = String(a[a.index(after: open)..<a.index(before: a.endIndex)])
        }
        let parts = a.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty,
              !a.contains(where: { $0.isWhitespace || $0 == "<" || $0 == ">" || $0.asciiValue.map { $0 < 32 } ?? false })
        else { return nil }
        return a
    }

    /// A header value: plain when ASCII, else an RFC 2047 encoded word.
    static func header(_ value: String) -> String {
        let clean = value.replacingOccurrences(of: "\r", with: " ").replacingOccurrences(of: "\n", with: " ")
        if clean.allSatisfy({ $0.isASCII }) { return clean }
        return "=?UTF-8?B?" + Data(clean.utf8).base64EncodedString() + "?="
    }

    /// `Name <a@b>` with the name encoded when it is not ASCII.
    static func mailbox(_ text: String) -> String {
        guard let open = text.lastIndex(of: "<"), text.hasSuffix(">") else { return text }
        let name = text[..<open].trimmingCharacters(in: .whitespaces)
        let addr = text[open...]
        return name.isEmpty ? String(addr) : header(name) + " " + addr
    }

    static func base64Lines(_ text: String) -> String {
        let encoded = Data(text.utf8).base64EncodedString()
        var lines: [Substring] = []
        var rest = Substring(encoded)
        while !rest.isEmpty {
            lines.append(rest.prefix(76))
            rest = rest.dropFirst(76)
        }
        return lines.joined(separator: "\r\n")
    }

    static func render(_ mail: Mail, date: Date = Date(), messageID: String? = nil) -> String {
        let domain = address(mail.from)?.split(separator: "@").last.map(String.init) ?? "localhost"
        let id = messageID ?? "<\(Secrets.uuid())@\(domain)>"
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss Z"
        var lines = [
            "From: " + mailbox(mail.from),
            "To: " + mail.to.map(mailbox).joined(separator: ", "),
            "Subject: " + header(mail.subject),
            "Date: " + formatter.string(from: date),
            "Message-ID: " + id,
            "MIME-Version: 1.0",
        ]
        let textPart = [
            "Content-Type: text/plain; charset=utf-8",
            "Content-Transfer-Encoding: base64",
            "",
            base64Lines(mail.text),
        ]
        if let html = mail.html {
            let boundary = "=_verteilt_" + Secrets.uuid().replacingOccurrences(of: "-", with: "")
            lines.append("Content-Type: multipart/alternative; boundary=\"\(boundary)\"")
            lines.append("")
            lines.append("--" + boundary)
            lines += textPart
            lines.append("--" + boundary)
            lines += ["Content-Type: text/html; charset=utf-8", "Content-Transfer-Encoding: base64", "", base64Lines(html)]
            lines.append("--" + boundary + "--")
        } else {
            lines += textPart
        }
        return lines.joined(separator: "\r\n") + "\r\n"
    }
}
