"""The shared HTTP security rules (herder.web.security), as pure functions."""

from __future__ import annotations

import pytest

from herder.web.security import (
    CSP,
    BindRefused,
    RequestCheck,
    bearer,
    check_bind,
    default_allowed_hosts,
    is_loopback,
    split_host,
    token_matches,
)


def test_bearer_accepts_only_the_bearer_scheme() -> None:
    assert bearer("Bearer abc") == "abc"
    assert bearer("bearer  abc ") == "abc"
    assert bearer("Basic abc") is None
    assert bearer("Bearer ") is None
    assert bearer("abc") is None  # a bare token is not accepted (the old code stripped a prefix)
    assert bearer(None) is None


def test_token_matches_any_configured_token_only() -> None:
    assert token_matches("a", "a", None)
    assert token_matches("b", "a", "b")
    assert not token_matches("c", "a", "b")
    assert not token_matches(None, "a")
    assert not token_matches("", None, None)


def test_bind_rule_refuses_open_non_loopback() -> None:
    check_bind("127.0.0.1", None)
    check_bind("::1", None)
    check_bind("localhost", None)
    check_bind("0.0.0.0", "tok")
    for host in ("0.0.0.0", "::", "10.1.2.3", "dash.example"):
        with pytest.raises(BindRefused, match="without a token"):
            check_bind(host, None)
    assert is_loopback("127.0.0.2") and not is_loopback("0.0.0.0")


def test_split_host_handles_ports_and_ipv6() -> None:
    assert split_host("Example.COM:8080") == "example.com"
    assert split_host("[::1]:80") == "::1"
    assert split_host("127.0.0.1") == "127.0.0.1"


@pytest.mark.parametrize(
    ("method", "headers", "status"),
    [
        ("GET", {"host": "127.0.0.1:8080"}, None),
        ("GET", {"host": "localhost"}, None),
        ("GET", {"host": "evil.example:8080"}, 421),  # DNS rebinding
        ("GET", {}, 421),
        ("POST", {"host": "127.0.0.1:8080"}, None),  # curl: no Origin
        ("POST", {"host": "127.0.0.1:8080", "origin": "http://127.0.0.1:8080"}, None),
        ("POST", {"host": "127.0.0.1:8080", "origin": "http://evil.example"}, 403),
        ("POST", {"host": "127.0.0.1:8080", "origin": "http://127.0.0.1:9999"}, 403),
        ("POST", {"host": "127.0.0.1:8080", "origin": "null"}, 403),
        ("POST", {"host": "127.0.0.1:8080", "sec-fetch-site": "cross-site"}, 403),
        ("POST", {"host": "127.0.0.1:8080", "sec-fetch-site": "same-site"}, 403),
        ("POST", {"host": "127.0.0.1:8080", "sec-fetch-site": "same-origin"}, None),
        ("GET", {"host": "127.0.0.1:8080", "origin": "http://evil.example"}, None),  # reads: CORS protects
    ],
)
def test_request_check(method: str, headers: dict[str, str], status: int | None) -> None:
    check = RequestCheck(default_allowed_hosts("127.0.0.1"))
    refusal = check.refusal(method, headers)
    assert (refusal[0] if refusal else None) == status


def test_allowed_hosts() -> None:
    assert default_allowed_hosts("0.0.0.0", ["*"]) is None
    hosts = default_allowed_hosts("0.0.0.0", ["dash.example:443"])
    assert hosts is not None and "dash.example" in hosts and "0.0.0.0" not in hosts
    assert RequestCheck(None).refusal("GET", {"host": "anything"}) is None


def test_csp_is_strict() -> None:
    assert "frame-ancestors 'none'" in CSP
    assert "script-src 'self'" in CSP
    assert "unsafe-inline" not in CSP and "unsafe-eval" not in CSP and "http" not in CSP
