"""A real SMTP server (aiosmtpd) in the test process, with faults on demand.

It stands for the network's far side: the relay mailer talks to. Faults:
- ``temp_fail`` / ``perm_fail``: addresses answered 451 / 550 at RCPT TO;
- ``drop_after``: after that many accepted messages, the next DATA drops the line once
  without accepting the message;
- ``hold_after``: after that many accepted messages, every further DATA waits at the
  server until the test calls :meth:`Handler.release`, so a test can act while messages
  are in hand (kill the sender, pause it) without depending on timing;
- ``require_auth``: AUTH (over STARTTLS) with ``user`` / ``password``;
- ``pipelining``: whether EHLO announces PIPELINING (RFC 2920; on by default);
- ``mail_reply``: a reply to every MAIL FROM instead of 250;
- ``data_reply``: addresses whose message is answered with that reply at the end of DATA;
- ``drop_at_rcpt``: addresses whose first RCPT TO closes the line without a reply;
- ``late``: addresses whose message is taken and answered only once the client has given
  up waiting and closed the connection (a reply later than the client's timeout);
- ``stray``: a line the server adds right after its reply to the end of DATA, one no
  command asked for (as a broken or hostile server might);
- ``idp``: the identity provider (tests/oauth_server.py) whose valid tokens AUTH XOAUTH2
  accepts for its mailbox (``SMTPServer(oauth=True)`` offers no other way to log in).

Tests wait for the server's state with :meth:`Handler.wait_until`, never with sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import json
import socket
import ssl
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)  # type: ignore[return-value]


@dataclass
class Handler:
    temp_fail: set[str] = field(default_factory=set)
    perm_fail: set[str] = field(default_factory=set)
    drop_after: int | None = None
    hold_after: int | None = None
    pipelining: bool = True
    mail_reply: str | None = None
    data_reply: dict[str, str] = field(default_factory=dict)
    drop_at_rcpt: set[str] = field(default_factory=set)
    late: set[str] = field(default_factory=set)
    stray: str | None = None
    idp: Any = None
    logins: list[str] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    lock: threading.Condition = field(default_factory=threading.Condition)
    drops: int = 0
    # How many DATA commands are waiting for release().
    held: int = 0
    _gate: threading.Event = field(default_factory=threading.Event)
    _accept_held: bool = True

    def release(self, *, accept: bool = True) -> None:
        """Let held messages go: accepted, or refused with 451 (their sender is gone)."""
        self._accept_held = accept
        self._gate.set()

    def wait_until(self, condition: Any, timeout: float = 60.0) -> None:
        """Block until ``condition(self)`` holds; fail after ``timeout`` seconds."""
        with self.lock:
            assert self.lock.wait_for(lambda: condition(self), timeout), "timed out"

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if self.mail_reply is not None:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address in self.drop_at_rcpt:
            with self.lock:
                self.drop_at_rcpt.discard(address)
                self.drops += 1
            server.transport.close()
            return "421 4.4.2 connection dropped"
        if address in self.perm_fail:
            return f"550 5.1.1 <{address}>: mailbox unavailable"
        if address in self.temp_fail:
            return f"451 4.3.0 <{address}>: try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            hold = self.hold_after is not None and len(self.received) >= self.hold_after
            if hold:
                self.held += 1
                self.lock.notify_all()
        if hold and not self._gate.is_set():
            await asyncio.get_running_loop().run_in_executor(None, self._gate.wait)
        if hold and not self._accept_held:
            return "451 4.3.0 not accepted"
        (to,) = envelope.rcpt_tos
        if to in self.data_reply:
            return self.data_reply[to]
        if to in self.late:
            with self.lock:
                self.received.append(
                    Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content))
                )
                self.lock.notify_all()
            # Taken, but no reply comes until the client gives up and goes: aiosmtpd then
            # cancels this coroutine (on EOF or a lost connection), so the wait ends there.
            await asyncio.Event().wait()
            return "250 2.0.0 accepted, too late"  # never reached: a late reply is never read
        with self.lock:
            if (
                self.drop_after is not None
                and len(self.received) >= self.drop_after
                and self.drops == 0
            ):
                self.drops += 1
                server.transport.close()
                return "421 4.4.2 connection dropped"
            self.received.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content))
            )
            self.lock.notify_all()
        if self.stray is not None:
            # In the same write as the reply, so the client has both at once.
            return f"250 2.0.0 Message accepted\r\n{self.stray}"
        return "250 2.0.0 Message accepted"

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> AuthResult:
        """AUTH XOAUTH2 as Exchange Online answers it: a refusal is a 334 challenge with a
        JSON error, which the client answers with an empty line, then 535."""
        try:
            raw = base64.b64decode(args[1]) if len(args) > 1 else b""
            fields = dict(part.split("=", 1) for part in raw.decode().split("\x01") if "=" in part)
        except (ValueError, UnicodeError):
            fields = {}
        user, bearer = fields.get("user", ""), fields.get("auth", "")
        token = bearer.removeprefix("Bearer ")
        idp = self.idp
        ok = idp is not None and bearer.startswith("Bearer ") and idp.valid(token)
        ok = ok and user == idp.mailbox
        with self.lock:
            if ok:
                self.logins.append(user)
        if ok:
            return AuthResult(success=True, auth_data=user)
        await server.challenge_auth(json.dumps({"status": "401", "schemes": "bearer"}))
        return AuthResult(
            success=False, handled=False, message="535 5.7.3 Authentication unsuccessful"
        )

    def recipients(self) -> list[str]:
        with self.lock:
            return [r for item in self.received for r in item.rcpt_tos]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SMTPServer:
    """Starts and stops an aiosmtpd server on a free loopback port."""

    def __init__(
        self,
        handler: Handler | None = None,
        *,
        tls_dir: Path | None = None,
        user: str | None = None,
        password: str | None = None,
        smtputf8: bool = True,
        implicit_tls: bool = False,
        oauth: bool = False,
    ) -> None:
        self.handler = handler or Handler()
        self.port = free_port()
        self.ca_file: Path | None = None
        kwargs: dict[str, Any] = {"enable_SMTPUTF8": smtputf8}
        controller_tls: dict[str, Any] = {}
        if tls_dir is not None:
            ca = trustme.CA()
            cert = ca.issue_cert("localhost", "127.0.0.1")
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            cert.configure_cert(context)
            self.ca_file = tls_dir / "ca.pem"
            ca.cert_pem.write_to_path(str(self.ca_file))
            if implicit_tls:  # TLS from the first byte (port 465), not STARTTLS
                controller_tls["ssl_context"] = context
            else:
                kwargs.update(tls_context=context, require_starttls=True)
        if user is not None:

            def authenticate(
                server: Any, session: Any, envelope: Any, mechanism: str, data: Any
            ) -> AuthResult:
                ok = (
                    isinstance(data, LoginPassword)
                    and data.login.decode() == user
                    and data.password.decode() == password
                )
                return AuthResult(success=ok, handled=False)

            kwargs.update(
                authenticator=authenticate, auth_required=True, auth_require_tls=tls_dir is not None
            )
        if oauth:
            kwargs.update(
                authenticator=lambda *args: AuthResult(success=False, handled=False),
                auth_required=True,
                auth_require_tls=tls_dir is not None,
                auth_exclude_mechanism=["PLAIN", "LOGIN"],
            )
        self.controller = Controller(
            self.handler,
            hostname="127.0.0.1",
            port=self.port,
            **kwargs,
            **controller_tls,
        )

    def __enter__(self) -> SMTPServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.handler.release(accept=False)  # no handler thread may outlive the server
        self.controller.stop()

    @property
    def received(self) -> list[Received]:
        return self.handler.received
