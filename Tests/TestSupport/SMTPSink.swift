import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A real SMTP server (aiosmtpd, `smtp_sink.py` beside this file) on a free loopback port; the
/// mails it accepted are read back as JSON. `scripts/test` installs aiosmtpd.
public final class SMTPSink: @unchecked Sendable {
    public let port: Int
    public let directory: URL
    /// The self-signed certificate it presents when started with TLS (trust it as a CA).
    public let certificate: String?
    private var process: Process?
    private var removesDirectory = true

    private init(port: Int, directory: URL, certificate: String?) {
        self.port = port
        self.directory = directory
        self.certificate = certificate
    }

    public static func start(tls: Bool = false, user: String? = nil, password: String? = nil) async throws -> SMTPSink {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("smtp-sink-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var arguments = [
            URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("smtp_sink.py").path,
            "--dir", dir.path,
        ]
        var certificate: String?
        if tls {
            let cert = dir.appendingPathComponent("cert.pem").path, key = dir.appendingPathComponent("key.pem").path
            try run("/usr/bin/env", ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                                     "-keyout", key, "-out", cert, "-subj", "/CN=localhost",
                                     "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            arguments += ["--cert", cert, "--key", key]
            certificate = cert
        }
        if let user { arguments += ["--user", user, "--password", password ?? ""] }
        // A port taken between asking and binding makes the sink exit: try a few.
        for _ in 0..<5 {
            let port = ServerProcess.freePort()
            let sink = SMTPSink(port: port, directory: dir, certificate: certificate)
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = ["python3"] + arguments + ["--port", String(port)]
            let out = Pipe()
            p.standardOutput = out
            p.standardError = FileHandle(forWritingAtPath: "/dev/null")
            try p.run()
            sink.process = p
            let ready = await Task.detached { () -> Bool in
                let data = out.fileHandleForReading.availableData
                return String(decoding: data, as: UTF8.self).contains("ready")
            }.value
            if ready { return sink }
            sink.stop()
            // The next attempt uses the same directory (and certificate): this one must not take it along.
            sink.removesDirectory = false
        }
        throw ServerProcessError(description: "the SMTP sink did not start (is aiosmtpd installed? pip install aiosmtpd)")
    }

    static func run(_ tool: String, _ arguments: [String]) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool)
        p.arguments = arguments
        p.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        p.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw ServerProcessError(description: "\(arguments.first ?? tool) failed") }
    }

    /// The mails accepted so far, oldest first; with `to`, those addressed to it only (sign-ups
    /// get a verification mail, which most tests are not about).
    public func mails(to address: String? = nil) -> [[String: Any]] {
        guard let text = try? String(contentsOf: directory.appendingPathComponent("mails.jsonl"), encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }.filter { mail in address.map { (mail["rcpt_tos"] as? [String] ?? []).contains($0) } ?? true }
    }

    /// While on, the server answers every mail with 451 (a temporary failure).
    public func setFailing(_ on: Bool) { flag("fail", on) }
    /// While on, the server stalls (before the message is sent).
    public func setHanging(_ on: Bool) { flag("hang", on) }
    /// While on, the server refuses every mail for good (550).
    public func setRejecting(_ on: Bool) { flag("reject", on) }

    private func flag(_ name: String, _ on: Bool) {
        let url = directory.appendingPathComponent(name)
        if on { _ = FileManager.default.createFile(atPath: url.path, contents: Data()) } else { try? FileManager.default.removeItem(at: url) }
    }

    public func stop() {
        guard let p = process else { return }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        process = nil
    }

    deinit {
        if let p = process { kill(p.processIdentifier, SIGKILL) }
        if removesDirectory { try? FileManager.default.removeItem(at: directory) }
    }
}
