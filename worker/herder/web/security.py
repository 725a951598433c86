"""HTTP security pieces shared by Herder's web servers (the dashboard, the HTTP API).

- Bearer tokens: `Authorization: Bearer <token>` only, compared in constant time. Never a
  cookie, so a cross-site form or image cannot carry it (CSRF), and never a query parameter,
  so it does not land in access logs.
- Host allow-list: a request whose `Host` is not one we serve under is refused (DNS rebinding).
- Origin checks for state-changing methods: a present `Origin` must be our own; a browser's
  `Sec-Fetch-Site: cross-site` is refused.
- Security headers on every response: a strict Content-Security-Policy (no inline script,
  `frame-ancestors 'none'`), nosniff, no referrer, no caching of API answers.
- The bind rule: a non-loopback address needs a token.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from fastapi import HTTPException, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from herder.web.errors import send_json

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# No inline script or style, nothing from another origin, no framing, no plugins.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
)


class BindRefused(ValueError):
    """Raised when a server would listen on a non-loopback address without a token."""


def new_token() -> str:
    return secrets.token_urlsafe(32)


def bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None for anything else."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def token_matches(given: str | None, *expected: str | None) -> bool:
    """Constant-time comparison against each configured token (None entries are skipped)."""
    if given is None:
        return False
    ok = False
    for e in expected:
        if e is not None and hmac.compare_digest(given.encode(), e.encode()):
            ok = True
    return ok


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    return host.strip("[]") in ("0.0.0.0", "::", "")


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve on a non-loopback address without a token."""
    if token is None and not is_loopback(host):
        raise BindRefused(
            f"refusing to listen on {host} without a token: set a token (e.g. HERDER_DASHBOARD_TOKEN) "
            "or listen on 127.0.0.1"
        )


def split_host(value: str) -> str:
    """The host part of a `Host` header value (`name`, `name:port`, `[v6]:port`), lower-cased."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else value
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


def default_allowed_hosts(bind_host: str, extra: Iterable[str] = ()) -> frozenset[str] | None:
    """Loopback names, the bound address and any extra names; None means "any host" ('*')."""
    extra = [h.strip().lower() for h in extra if h.strip()]
    if "*" in extra:
        return None
    hosts = set(LOOPBACK_NAMES) | {split_host(h) for h in extra}
    if not is_wildcard(bind_host):
        hosts.add(bind_host.strip("[]").lower())
    return frozenset(hosts)


@dataclass(frozen=True)
class RequestCheck:
    """Decides whether a request may proceed; pure, so each rule is tested without a server."""

    allowed_hosts: frozenset[str] | None  # None: any host
    extra_origins: frozenset[str] = field(default_factory=frozenset)

    def refusal(self, method: str, headers: dict[str, str]) -> tuple[int, str] | None:
        host_header = headers.get("host", "")
        host = split_host(host_header)
        if not host_header or (self.allowed_hosts is not None and host not in self.allowed_hosts):
            return 421, f"host {host_header[:100]!r} is not served here (allowed hosts are configured)"
        if method.upper() in SAFE_METHODS:
            return None
        site = headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return 403, f"cross-site request refused (Sec-Fetch-Site: {site[:40]})"
        origin = headers.get("origin")
        if origin is not None:
            if origin in self.extra_origins:
                return None
            parts = urlsplit(origin)
            if origin == "null" or parts.netloc.lower() != host_header.strip().lower():
                return 403, f"cross-origin request refused (Origin {origin[:100]!r})"
        return None


class SecurityMiddleware:
    """Pure ASGI middleware: Host/Origin checks before the app, security headers after it."""

    def __init__(
        self, app: ASGIApp, check: RequestCheck, no_store_prefix: str = "/api/", max_body: int = 1_048_576
    ) -> None:
        self.app = app
        self.check = check
        self.no_store_prefix = no_store_prefix
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self.check.refusal(scope["method"], headers)
        try:
            declared = int(headers.get("content-length") or 0)
        except ValueError:
            declared = self.max_body + 1
        if refusal is None and declared > self.max_body:
            refusal = (413, f"request body over {self.max_body} bytes")
        no_store = str(scope.get("path", "")).startswith(self.no_store_prefix)

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                hs: list[Any] = list(message.get("headers", []))
                names = {h[0].lower() for h in hs}
                hs.extend(h for h in SECURITY_HEADERS if h[0] not in names)
                if no_store and b"cache-control" not in names:
                    hs.append((b"cache-control", b"no-store"))
                message = {**message, "headers": hs}
            await send(message)

        if refusal is not None:
            status, detail = refusal
            body = ('{"detail":' + _json_str(detail) + "}").encode()
            await send_json(send_secured, status, body)
            return
        seen = 0

        async def receive_capped() -> Message:
            # A chunked body has no Content-Length: count what actually arrives.
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, receive_capped, send_secured)


def _json_str(s: str) -> str:
    return json.dumps(s)


@dataclass(frozen=True)
class Tokens:
    """An operate (admin) token and an optional read-only token.

    Operations need `admin`; with no admin token configured they are refused outright. Reads are
    open only when neither token is set (a loopback-only server, see check_bind)."""

    admin: str | None = None
    read: str | None = None

    @property
    def reads_protected(self) -> bool:
        return self.admin is not None or self.read is not None

    def require_read(self, request: Request) -> None:
        if not self.reads_protected:
            return
        if not token_matches(bearer(request.headers.get("authorization")), self.admin, self.read):
            raise HTTPException(
                401, "this needs a token (Authorization: Bearer ...)", {"WWW-Authenticate": "Bearer"}
            )

    def require_admin(self, request: Request) -> None:
        if self.admin is None:
            raise HTTPException(403, "operations are disabled: no operate token is configured")
        given = bearer(request.headers.get("authorization"))
        if not token_matches(given, self.admin):
            if token_matches(given, self.read):
                raise HTTPException(403, "the read-only token cannot run operations")
            raise HTTPException(
                401,
                "operations need the operate token (Authorization: Bearer ...)",
                {"WWW-Authenticate": "Bearer"},
            )
