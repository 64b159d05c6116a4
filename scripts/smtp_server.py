"""An SMTP server for the e-mail connector's tests, on aiosmtpd (run it through scripts/smtp.sh).

    python smtp_server.py DIR PORT

Listens on 127.0.0.1:PORT with the certificate DIR/cert.pem and key DIR/key.pem (the test makes
them and trusts their CA), either offering STARTTLS and requiring it (HERALD_SMTP_TLS=starttls,
the default) or speaking TLS from the first byte (HERALD_SMTP_TLS=implicit). AUTH PLAIN and LOGIN
are required before MAIL and accept one account: HERALD_SMTP_USER / HERALD_SMTP_PASSWORD (default
herald / secret); a wrong password is answered 535.

Recipients by local part: nobody@... is refused at RCPT with 550 (no such user), later@... with
451 (try again later), spam@... is accepted but the message is refused after DATA with 554;
anyone else is accepted. Every accepted message is appended to DIR/messages.jsonl as one JSON
object: mail_from, rcpt_tos, login (the account that authenticated), mechanism, tls (whether the
session was encrypted), starttls (whether it was upgraded with STARTTLS), queue_id, data (the
message as received).
"""

import asyncio
import json
import os
import signal
import ssl
import sys
from pathlib import Path

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Handler:
    def __init__(self, directory: Path):
        self.messages = directory / "messages.jsonl"
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0].lower()
        if local == "nobody":
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if local == "later":
            return f"451 4.3.0 <{address}>: Temporary local problem, try again later"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        if any(r.split("@", 1)[0].lower() == "spam" for r in envelope.rcpt_tos):
            return "554 5.7.1 Message rejected: looks like spam"
        self.count += 1
        queue_id = f"Q{self.count:04d}"
        auth = session.auth_data or {}
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "login": auth.get("login"),
            "mechanism": auth.get("mechanism"),
            "tls": server.transport.get_extra_info("sslcontext") is not None
            or session.ssl is not None,
            "starttls": session.ssl is not None,
            "queue_id": queue_id,
            "data": envelope.original_content.decode("utf-8", "replace"),
        }
        with self.messages.open("a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
        return f"250 2.0.0 Ok: queued as {queue_id}"


def authenticator(user: bytes, password: bytes):
    def check(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user
            and auth_data.password == password
        )
        data = {"login": auth_data.login.decode(), "mechanism": mechanism} if ok else None
        return AuthResult(success=ok, handled=False, auth_data=data)

    return check


def main() -> None:
    directory, port = Path(sys.argv[1]), int(sys.argv[2])
    mode = os.environ.get("HERALD_SMTP_TLS", "starttls")
    user = os.environ.get("HERALD_SMTP_USER", "herald").encode()
    password = os.environ.get("HERALD_SMTP_PASSWORD", "secret").encode()
    if mode not in ("starttls", "implicit"):
        sys.exit(f"smtp_server.py: HERALD_SMTP_TLS must be starttls or implicit, not {mode!r}")

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    handler = Handler(directory)

    def protocol() -> SMTP:
        return SMTP(
            handler,
            hostname="smtp.herald.test",
            tls_context=context if mode == "starttls" else None,
            require_starttls=mode == "starttls",
            auth_required=True,
            # Implicit TLS: the whole session is encrypted, so AUTH is offered at once.
            auth_require_tls=mode == "starttls",
            authenticator=authenticator(user, password),
            timeout=60,
        )

    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(
        loop.create_server(
            protocol,
            host="127.0.0.1",
            port=port,
            ssl=context if mode == "implicit" else None,
        )
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, loop.stop)
    print(f"smtp_server.py: {mode} on 127.0.0.1:{port}, messages in {handler.messages}", flush=True)
    try:
        loop.run_forever()
    finally:
        server.close()


if __name__ == "__main__":
    main()
