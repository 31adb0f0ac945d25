"""A real SMTP server for the tests (aiosmtpd): stores every mail it accepts as one JSON line.

    python3 smtp_sink.py --port P --dir D [--cert C --key K] [--user U --password W]

With a certificate it offers STARTTLS and requires it; with a user it requires AUTH. The test
steers it with files in D: `fail` makes it answer DATA with 451 (try again later), `hang` makes
it stall before answering RCPT until the file is gone, `reject` answers DATA with 550. It prints "ready" once it listens.
"""
import argparse, asyncio, email, email.policy, json, os, ssl, sys, time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Sink:
    def __init__(self, directory):
        self.dir = directory

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        # Stalls before the message is sent, so a client killed meanwhile leaves no mail behind.
        while os.path.exists(os.path.join(self.dir, "hang")):
            await asyncio.sleep(0.05)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if os.path.exists(os.path.join(self.dir, "fail")):
            return "451 4.3.0 Try again later"
        if os.path.exists(os.path.join(self.dir, "reject")):
            return "550 5.1.1 No such mailbox"
        msg = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        text = msg.get_body(preferencelist=("plain",))
        html = msg.get_body(preferencelist=("html",))
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "from": str(msg["From"]),
            "to": str(msg["To"]),
            "subject": str(msg["Subject"]),
            "text": text.get_content() if text else None,
            "html": html.get_content() if html is not None and html.get_content_type() == "text/html" else None,
            "tls": session.ssl is not None,
            "auth": session.auth_data if session.authenticated else None,
        }
        with open(os.path.join(self.dir, "mails.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")
        return "250 OK"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--user")
    p.add_argument("--password")
    a = p.parse_args()
    kwargs = {}
    if a.cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(a.cert, a.key)
        kwargs.update(tls_context=ctx, require_starttls=True)
    if a.user:
        def authenticate(server, session, envelope, mechanism, auth_data):
            ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == a.user \
                and auth_data.password.decode() == a.password
            return AuthResult(success=ok, handled=False, auth_data=a.user if ok else None)
        kwargs.update(authenticator=authenticate, auth_required=True)
    controller = Controller(Sink(a.dir), hostname="127.0.0.1", port=a.port, **kwargs)
    controller.start()
    print("ready", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
