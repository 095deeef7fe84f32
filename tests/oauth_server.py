"""A stand-in for Microsoft's identity platform on loopback: the far side of the network,
which the tests may fake.

``IdentityProvider`` issues access tokens by the client-credentials flow (``POST
/TENANT/oauth2/v2.0/token`` with a client secret, or a client assertion signed with the
app's certificate), over HTTPS with a certificate from trustme, as Microsoft's endpoint
answers: ``access_token``, ``token_type``, ``expires_in``; a wrong secret gets
``invalid_client`` with Microsoft's AADSTS7000215. It also answers token introspection
(``POST /introspect``, RFC 7662), over plain HTTP on loopback, for Dovecot's oauth2 passdb.

Issued tokens are granted to one mailbox (``mailbox``); a test revokes them or checks
which were asked for. Nothing here sleeps: each request is answered at once.
"""

from __future__ import annotations

import json
import secrets
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
import trustme
from cryptography import x509

TENANT = "contoso.onmicrosoft.com"
CLIENT_ID = "6731de76-14a6-49ae-97bc-6eba6914391e"
SECRET = "Xq8~client-secret-of-the-test-app-4eVr"


class IdentityProvider:
    """``with IdentityProvider(tmp) as idp:`` an HTTPS token endpoint and an HTTP
    introspection endpoint on loopback ports."""

    def __init__(
        self,
        folder: Path,
        *,
        mailbox: str = "newsletter@example.org",
        expires_in: int = 3600,
        certificate: bytes | None = None,
    ) -> None:
        self.folder = folder
        self.mailbox = mailbox
        self.expires_in = expires_in
        # The app's registered certificate (PEM), for client assertions.
        self.certificate = certificate
        self.lock = threading.Lock()
        self.issued: list[str] = []
        self.refused = 0
        self.revoked: set[str] = set()
        self.requests: list[dict[str, list[str]]] = []
        ca = trustme.CA()
        self.ca_file = folder / "idp-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        self._https = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._https.socket = context.wrap_socket(self._https.socket, server_side=True)
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._threads: list[threading.Thread] = []

    @property
    def token_url(self) -> str:
        return f"https://127.0.0.1:{self._https.server_address[1]}/{TENANT}/oauth2/v2.0/token"

    @property
    def introspection_url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/introspect"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a folder that logs in with this provider's tokens."""
        return {
            "MAILER_OAUTH_TENANT": TENANT,
            "MAILER_OAUTH_CLIENT_ID": CLIENT_ID,
            "MAILER_OAUTH_CLIENT_SECRET": SECRET,
            "MAILER_OAUTH_TOKEN_URL": self.token_url,
            "REQUESTS_CA_BUNDLE": str(self.ca_file),
            **extra,
        }

    def valid(self, token: str) -> bool:
        with self.lock:
            return token in self.issued and token not in self.revoked

    def __enter__(self) -> IdentityProvider:
        for server in (self._https, self._http):
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        for server in (self._https, self._http):
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join()

    # -- the endpoints --------------------------------------------------------------------

    def _token(self, form: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        one = {k: v[0] for k, v in form.items()}
        with self.lock:
            self.requests.append(form)
        if one.get("grant_type") != "client_credentials" or one.get("client_id") != CLIENT_ID:
            return 400, {
                "error": "unauthorized_client",
                "error_description": "AADSTS700016: "
                "Application with identifier was not found in the directory.",
            }
        if not self._authenticated(one):
            with self.lock:
                self.refused += 1
            return 401, {
                "error": "invalid_client",
                "error_description": "AADSTS7000215: Invalid client secret provided. Ensure "
                "the secret being sent in the request is the client secret value. Trace ID: "
                "0f1e Correlation ID: 9a8b Timestamp: 2026-12-01 09:00:00Z",
            }
        token = f"eyJ0eXAi.{secrets.token_urlsafe(24)}"
        with self.lock:
            self.issued.append(token)
        return 200, {"token_type": "Bearer", "expires_in": self.expires_in, "access_token": token}

    def _authenticated(self, form: dict[str, str]) -> bool:
        if "client_secret" in form:
            return form["client_secret"] == SECRET
        assertion = form.get("client_assertion")
        if assertion is None or self.certificate is None:
            return False
        key = x509.load_pem_x509_certificate(self.certificate).public_key()
        try:
            claims = jwt.decode(
                assertion, key, algorithms=["RS256", "PS256"], audience=self.token_url
            )
        except jwt.PyJWTError:
            return False
        return bool(claims.get("iss") == CLIENT_ID == claims.get("sub"))

    def _introspect(self, form: dict[str, list[str]]) -> dict[str, Any]:
        token = form.get("token", [""])[0]
        if self.valid(token):
            return {"active": "true", "username": self.mailbox}
        return {"active": "false"}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(size).decode())
                if self.path == f"/{TENANT}/oauth2/v2.0/token":
                    status, body = idp._token(form)
                elif self.path.startswith("/introspect"):
                    status, body = 200, idp._introspect(form)
                else:
                    status, body = 404, {"error": "not_found"}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                """Quiet: the tests read state, not logs."""

        return Handler
