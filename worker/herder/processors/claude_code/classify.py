"""How a finished CLI run failed, if it did: transient, permanent, or a crash. Pure.

Evidence, strongest first:
1. the `result` event's subtype (max turns / max budget are budgets the payload set: permanent);
2. the typed API error kinds the CLI reports (assistant `error` / `api_error`, api_retry
   `error`, `api_error_status`): rate limits, overload, 5xx and connection failures are
   transient; authentication, billing, invalid requests and unknown models are permanent;
3. the text of the result and of stderr, matched against known phrases;
4. otherwise a result with `is_error` is permanent (the CLI ran and said no), and a run with
   no result at all (killed by a signal, out of memory, exited early) is a crash, retried.
Invalid arguments never produce a result: the CLI prints `error: ...` on stderr and exits 1.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["ok", "transient", "permanent", "crash"]

PERMANENT_SUBTYPES = {
    "error_max_turns": "max turns reached",
    "error_max_budget_usd": "max budget (USD) exhausted",
    "error_max_structured_output_retries": "structured output retries exhausted",
}
TRANSIENT_KINDS = frozenset(
    {
        "rate_limit",
        "rate_limited",
        "overloaded",
        "server_error",
        "connection_failed",
        "stream_idle_timeout",
        "request_timeout",
        "no_response",
        "computer_slept",
        "usage_limit_reached",
        "empty_completion",
    }
)
PERMANENT_KINDS = frozenset(
    {
        "authentication_failed",
        "oauth_org_not_allowed",
        "account_on_hold",
        "verification_required",
        "billing_error",
        "invalid_request",
        "model_not_found",
        "cloud_credential_error",
        "api_key_auth_disabled",
        "org_disabled_credential",
        "invalid_credential_header",
        "provider_credentials",
        "stored_login_refused",
        "model_requires_usage_credits",
        "long_context_credits_required",
        "prompt_too_long",
        "message_over_context_limit",
        "dlp_request_denied",
        "claude_code_version_too_old",
    }
)
_TRANSIENT_TEXT = re.compile(
    r"rate.?limit|overloaded|too many requests|\b(429|500|502|503|504|529)\b|timed? ?out|timeout"
    r"|ECONNRESET|ECONNREFUSED|ETIMEDOUT|ENOTFOUND|EAI_AGAIN|socket hang up|network"
    r"|connection (error|reset|refused|failed)|can't reach|temporarily unavailable",
    re.IGNORECASE,
)
_PERMANENT_TEXT = re.compile(
    r"invalid api key|not logged in|please run /login|authenticat|unauthori[sz]ed|\b40[13]\b"
    r"|permission_error|forbidden|credit balance|billing|invalid x-api-key",
    re.IGNORECASE,
)
# Commander's messages for bad options, and the CLI's own argument checks.
_INVALID_ARGS = re.compile(
    r"^error: (unknown option|option '|missing required argument|too many arguments|unknown command)"
    r"|argument .* is invalid|Allowed choices are|^Error: .*(requires|must|cannot be used|invalid)"
    r"|cannot be used with root",
    re.IGNORECASE | re.MULTILINE,
)
_OOM_TEXT = re.compile(
    r"out of memory|MemoryError|Cannot allocate memory|ENOMEM|Allocation failed", re.IGNORECASE
)
_SIGNAL_NOTES = {
    int(signal.SIGXCPU): "CPU time limit reached",
    int(signal.SIGXFSZ): "file size limit reached",
    int(signal.SIGKILL): "out of memory, a limit, or killed from outside",
    int(signal.SIGSEGV): "segmentation fault",
    int(signal.SIGABRT): "aborted",
}


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    reason: str

    @property
    def ok(self) -> bool:
        return self.kind == "ok"


def _tail(text: str, n: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else "…" + text[-n:]


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def _status_kind(status: int | None) -> Kind | None:
    if status is None:
        return None
    if status in (408, 429) or status >= 500:
        return "transient"
    if 400 <= status < 500:
        return "permanent"
    return None


def classify(
    returncode: int | None,
    result: dict[str, Any] | None,
    stderr_tail: str = "",
    errors: Sequence[str] = (),
    error_status: int | None = None,
) -> Verdict:
    """`returncode` as asyncio reports it (negative: killed by that signal); `result` the
    extracted result event; `errors`/`error_status` the API error kinds and last HTTP status
    seen on the stream (see `stream.Summary`)."""
    if result is not None:
        return _classify_result(result, stderr_tail, errors, error_status)

    # No result line: the CLI never got to the end.
    if returncode is not None and returncode < 0:
        sig = -returncode
        note = _SIGNAL_NOTES.get(sig, "")
        if _OOM_TEXT.search(stderr_tail):
            note = "out of memory"
        reason = f"CLI killed by {_signal_name(sig)}" + (f" ({note})" if note else "")
        return Verdict("crash", _with_stderr(reason, stderr_tail))
    if _INVALID_ARGS.search(stderr_tail):
        return Verdict("permanent", f"invalid arguments: {_tail(stderr_tail)}")
    kind = _kind_from_evidence(errors, error_status, stderr_tail)
    if kind == "transient":
        return Verdict("transient", _with_stderr(f"transient API failure ({_last(errors)})", stderr_tail))
    if kind == "permanent":
        return Verdict("permanent", _with_stderr(f"API refused the run ({_last(errors)})", stderr_tail))
    if _OOM_TEXT.search(stderr_tail):
        return Verdict("crash", _with_stderr(f"CLI ran out of memory (exit {returncode})", stderr_tail))
    return Verdict(
        "crash", _with_stderr(f"CLI exited with status {returncode} without a result", stderr_tail)
    )


def _classify_result(
    result: dict[str, Any], stderr_tail: str, errors: Sequence[str], error_status: int | None
) -> Verdict:
    subtype = str(result.get("subtype") or "")
    text = result.get("result")
    text = text if isinstance(text, str) else ""
    if subtype == "success" and not result.get("is_error"):
        return Verdict("ok", "success")
    if subtype in PERMANENT_SUBTYPES:
        return Verdict("permanent", f"{PERMANENT_SUBTYPES[subtype]} ({subtype})")
    api_error = result.get("api_error")
    status = result.get("api_error_status")
    kinds = [*errors, *([api_error] if isinstance(api_error, str) else [])]
    kind = _kind_from_evidence(kinds, status if isinstance(status, int) else error_status, text)
    detail = _tail(text) if text else ", ".join(str(e) for e in result.get("errors") or []) or subtype
    if kind == "transient":
        return Verdict("transient", f"transient API failure ({_last(kinds)}): {detail}")
    if kind == "permanent":
        return Verdict("permanent", f"API refused the run ({_last(kinds)}): {detail}")
    return Verdict("permanent", f"run ended in error ({subtype or 'unknown'}): {detail}")


def _kind_from_evidence(kinds: Sequence[str], status: int | None, text: str) -> Kind | None:
    # The last typed error decides: earlier ones may have been retried away by the CLI.
    for k in reversed(kinds):
        if k in PERMANENT_KINDS:
            return "permanent"
        if k in TRANSIENT_KINDS:
            return "transient"
    by_status = _status_kind(status)
    if by_status is not None:
        return by_status
    if _PERMANENT_TEXT.search(text):
        return "permanent"
    if _TRANSIENT_TEXT.search(text):
        return "transient"
    return None


def _last(kinds: Sequence[str]) -> str:
    return kinds[-1] if kinds else "unknown"


def _with_stderr(reason: str, stderr_tail: str) -> str:
    return f"{reason}; stderr: {_tail(stderr_tail)}" if stderr_tail.strip() else reason
