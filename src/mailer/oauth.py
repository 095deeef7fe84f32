"""OAuth 2.0 access tokens for SMTP and IMAP (AUTH XOAUTH2), for Microsoft 365 and any
identity provider with the client-credentials flow.

An application (Microsoft 365's app registration) proves who it is with a client secret or
a certificate, and gets a token for a scope (Exchange Online's, by default); SMTP and IMAP
then log in to a mailbox with that token. MSAL, Microsoft's maintained library, makes the
request (and, with a certificate, the signed assertion). The token endpoint is configured
(``MAILER_OAUTH_TOKEN_URL``, by default the tenant's at Microsoft), so MSAL is told it
rather than discovering it: nothing but the token request leaves this machine.

A :class:`TokenSource` keeps its token until :data:`REFRESH_BEFORE` seconds before it
expires, by the injected clock, and then fetches a new one; every connection of every send
in the process shares one source per set of credentials (:func:`source`). Neither the
secret nor a token is ever logged or put in an error message.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mailer.clock import Clock, SystemClock
from mailer.config import MICROSOFT_TOKEN_URL, OAuthSettings
from mailer.errors import TokenRefused

log = logging.getLogger("mailer.oauth")
# A token is used until this long before it expires (a connection may take that long to
# open), then a new one is fetched.
REFRESH_BEFORE = 300.0
# How long the token endpoint may take to answer.
TIMEOUT = 30.0
# What the tenant must change, by what the identity provider said (Microsoft's codes).
_FIXES = {
    "AADSTS7000215": "the client secret is wrong: copy its Value (not its ID) from the app "
    "registration's Certificates & secrets into MAILER_OAUTH_CLIENT_SECRET",
    "AADSTS7000222": "the client secret has expired: add a new one to the app registration "
    "and put it in MAILER_OAUTH_CLIENT_SECRET",
    "AADSTS700016": "no application with that client ID in this tenant: check "
    "MAILER_OAUTH_CLIENT_ID and MAILER_OAUTH_TENANT",
    "AADSTS90002": "no such tenant: check MAILER_OAUTH_TENANT (the directory ID)",
    "AADSTS700027": "the certificate is not the one registered: upload its public part to "
    "the app registration, or check MAILER_OAUTH_CERTIFICATE_FILE",
    "AADSTS1002012": "the scope is wrong: leave MAILER_OAUTH_SCOPE unset for Exchange Online",
}
_BY_ERROR = {
    "invalid_client": "the client secret or certificate was refused: check "
    "MAILER_OAUTH_CLIENT_SECRET (or MAILER_OAUTH_CERTIFICATE_FILE) and MAILER_OAUTH_CLIENT_ID",
    "unauthorized_client": "the application may not use the client-credentials flow: "
    "check MAILER_OAUTH_CLIENT_ID and the application's settings",
    "invalid_scope": "the scope was refused: check MAILER_OAUTH_SCOPE",
    "invalid_request": "the request was refused: check MAILER_OAUTH_TENANT and "
    "MAILER_OAUTH_TOKEN_URL",
}


class _Answer:
    """An HTTP response as MSAL reads one, for the discovery document it is given."""

    def __init__(self, body: dict[str, str]) -> None:
        self.status_code = 200
        self.text = json.dumps(body)
        self.headers: dict[str, str] = {"Content-Type": "application/json"}

    def raise_for_status(self) -> None:
        """Never an error."""


class _Http:
    """MSAL's HTTP client: answers its discovery request with the configured token
    endpoint, and sends the token request with ``requests``."""

    def __init__(self, token_url: str) -> None:
        import requests

        self._session = requests.Session()
        self._config = {
            "issuer": token_url,
            "authorization_endpoint": token_url,
            "token_endpoint": token_url,
        }

    def get(self, url: str, **_: Any) -> _Answer:
        if url.endswith("/.well-known/openid-configuration"):
            return _Answer(self._config)
        raise TokenRefused(f"the OAuth client asked for {url}, which mailer does not fetch")

    def post(
        self, url: str, params: Any = None, data: Any = None, headers: Any = None, **kw: Any
    ) -> Any:
        kw.pop("timeout", None)
        return self._session.post(
            url, params=params, data=data, headers=headers, timeout=TIMEOUT, **kw
        )

    def close(self) -> None:
        self._session.close()


class TokenSource:
    """Access tokens for one set of client credentials (see the module doc)."""

    def __init__(self, settings: OAuthSettings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires = 0.0
        self._app: Any = None
        self.fetched = 0

    @property
    def host(self) -> str:
        return urlsplit(self.settings.token_url).hostname or self.settings.token_url

    def token(self) -> str:
        """A token valid for at least :data:`REFRESH_BEFORE` more seconds, fetched if the one
        held is older; :class:`~mailer.errors.TokenRefused` with what to change if none
        can be had."""
        with self._lock:
            now = self.clock.time()
            if self._token is None or now >= self._expires - REFRESH_BEFORE:
                self._token, lifetime = self._fetch()
                self._expires = now + lifetime
                self.fetched += 1
                log.info("OAuth: a token from %s, valid for %d s", self.host, lifetime)
            return self._token

    async def supply(self) -> str:
        """:meth:`token` off the event loop (a fetch is a blocking HTTP request)."""
        import asyncio

        return await asyncio.to_thread(self.token)

    def _client(self) -> Any:
        if self._app is None:
            import msal

            s = self.settings
            credential: Any = s.client_secret
            if s.certificate_file:
                credential = _certificate(Path(s.certificate_file))
            # The endpoint is given (see _Http): MSAL neither validates nor discovers it.
            authority = s.token_url
            if s.tenant and s.token_url == _microsoft(s.tenant):
                authority = f"https://login.microsoftonline.com/{s.tenant}"
            self._app = msal.ConfidentialClientApplication(
                s.client_id,
                client_credential=credential,
                authority=authority,
                validate_authority=False,
                instance_discovery=False,
                http_client=_Http(s.token_url),
                token_cache=msal.TokenCache(),
            )
        return self._app

    def _fetch(self) -> tuple[str, float]:
        import msal
        import requests

        try:
            app = self._client()
            # This source decides when a token is old (by the injected clock): MSAL's own
            # cache would answer from the real one, so it is emptied first.
            cache = app.token_cache
            for item in list(cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN)):
                cache.remove_at(item)
            result = app.acquire_token_for_client(scopes=[self.settings.scope])
        except requests.RequestException as exc:
            raise TokenRefused(
                f"cannot reach the OAuth token endpoint at {self.host}: "
                f"{_reason(exc)} (MAILER_OAUTH_TOKEN_URL)"
            ) from None
        except ValueError as exc:  # a certificate MSAL cannot read, an odd answer
            raise TokenRefused(
                f"no OAuth token from {self.host}: {self._scrub(str(exc).splitlines()[0])}"
            ) from None
        token = result.get("access_token") if isinstance(result, dict) else None
        if not token:
            raise TokenRefused(self._refusal(result if isinstance(result, dict) else {}))
        try:
            lifetime = float(result.get("expires_in", 3600))
        except (TypeError, ValueError):
            lifetime = 3600.0
        return str(token), max(lifetime, 0.0)

    def _refusal(self, result: dict[str, Any]) -> str:
        """One line: who refused, and what to change (never the secret, never a token)."""
        error = str(result.get("error") or "no token")
        description = str(result.get("error_description") or "")
        code = description.split(":", 1)[0].strip()
        fix = _FIXES.get(code) or _BY_ERROR.get(error) or "see the identity provider's log"
        detail = f"{error}, {code}" if code.startswith("AADSTS") else error
        return self._scrub(f"the OAuth token endpoint at {self.host} refused ({detail}): {fix}")

    def _scrub(self, text: str) -> str:
        secret = self.settings.client_secret
        if secret and secret in text:
            text = text.replace(secret, "[the client secret]")
        return text[:500]


def _microsoft(tenant: str) -> str:
    return MICROSOFT_TOKEN_URL.format(tenant=tenant)


def _reason(exc: BaseException) -> str:
    """A network error in a few words, without the library's wrapping."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, TimeoutError):
            return "no answer in time"
        name = type(seen).__name__
        if "SSL" in name or "Certificate" in name:
            return "its certificate is not trusted (REQUESTS_CA_BUNDLE names a private one)"
        seen = seen.__cause__ or seen.__context__
    return type(exc).__name__


def _certificate(path: Path) -> dict[str, str]:
    """MSAL's form of a certificate credential, from a PEM file holding the private key and
    the certificate (whose SHA-256 thumbprint MSAL computes)."""
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeError) as exc:
        raise TokenRefused(f"MAILER_OAUTH_CERTIFICATE_FILE: cannot read {path}: {exc}") from None
    first = text.find(begin)
    if first < 0 or end not in text[first:] or "PRIVATE KEY-----" not in text:
        raise TokenRefused(
            f"MAILER_OAUTH_CERTIFICATE_FILE: {path} must hold the private key and the "
            "certificate, both in PEM form"
        )
    last = text.index(end, first) + len(end)
    return {
        "private_key": (text[:first] + text[last:]).strip(),
        "public_certificate": text[first:last],
    }


_SOURCES: dict[OAuthSettings, TokenSource] = {}
_SOURCES_LOCK = threading.Lock()


def source(settings: OAuthSettings, clock: Clock | None = None) -> TokenSource:
    """The process's token source for these credentials (shared by SMTP and IMAP, and by
    every connection of a send)."""
    with _SOURCES_LOCK:
        found = _SOURCES.get(settings)
        if found is None or (clock is not None and found.clock is not clock):
            found = _SOURCES[settings] = TokenSource(settings, clock)
        return found


def xoauth2(username: str, token: str) -> bytes:
    """The initial response of AUTH XOAUTH2 (before base64), as SMTP and IMAP send it."""
    return f"user={username}\x01auth=Bearer {token}\x01\x01".encode()
