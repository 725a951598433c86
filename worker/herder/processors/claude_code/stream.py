"""The CLI's stream-json output: split it into bounded lines, parse them, fold the events into a
progress summary, and pick out the final `result`. Pure: no I/O.

Shapes (as `claude -p --output-format stream-json --verbose` prints them, one JSON object a line):
  {"type":"system","subtype":"init","session_id":..,"model":..,"tools":[..],..}
  {"type":"system","subtype":"api_retry","attempt":1,"max_retries":10,"error_status":429,"error":"rate_limit",..}
  {"type":"assistant","message":{"id":..,"content":[{"type":"tool_use","name":"Bash",..}],"usage":{..}},..}
      (an API failure is a synthetic assistant message with top-level "error" and "api_error")
  {"type":"user","message":{"content":[{"type":"tool_result",..}]},..}
  {"type":"result","subtype":"success"|"error_max_turns"|..,"is_error":..,"result":..,"total_cost_usd":..,..}
Unknown types are counted and otherwise ignored: the format grows over time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

# The fields of the final `result` event that become the job's result.
RESULT_FIELDS = (
    "result",
    "is_error",
    "subtype",
    "num_turns",
    "duration_ms",
    "total_cost_usd",
    "usage",
    "session_id",
)
# Also kept when present: they explain a failure or a partial success.
RESULT_EXTRA_FIELDS = (
    "duration_api_ms",
    "modelUsage",
    "terminal_reason",
    "permission_denials",
    "errors",
    "api_error",
    "api_error_status",
)
_MAX_ERRORS_KEPT = 8


def parse_line(line: bytes | str) -> dict[str, Any] | None:
    """One stream-json event, or None for anything that is not a JSON object with a string `type`."""
    text = line.strip()
    if not text or text[:1] not in (b"{", "{"):
        return None
    try:
        event = json.loads(text)
    except ValueError:
        return None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return None
    return event


class LineSplitter:
    """Split a byte stream into lines of at most `max_line` bytes.

    A longer line is dropped whole (its bytes counted in `oversize_bytes`), so memory stays
    bounded by `max_line` however the child writes.
    """

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._discarding = False
        self.oversize_lines = 0
        self.oversize_bytes = 0

    def feed(self, chunk: bytes) -> list[bytes]:
        lines: list[bytes] = []
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            if nl < 0:
                self._append(chunk[start:])
                return lines
            piece = chunk[start:nl]
            if self._discarding:
                self.oversize_bytes += len(piece) + 1
                self._discarding = False
            elif len(self._buf) + len(piece) > self.max_line:
                self.oversize_lines += 1
                self.oversize_bytes += len(self._buf) + len(piece) + 1
                self._buf.clear()
            else:
                self._buf += piece
                lines.append(bytes(self._buf))
                self._buf.clear()
            start = nl + 1

    def flush(self) -> list[bytes]:
        """The unterminated last line, if any (at EOF)."""
        if self._discarding or not self._buf:
            self._discarding = False
            return []
        out = bytes(self._buf)
        self._buf.clear()
        return [out]

    def _append(self, tail: bytes) -> None:
        if not tail:
            return
        if self._discarding:
            self.oversize_bytes += len(tail)
        elif len(self._buf) + len(tail) > self.max_line:
            self.oversize_lines += 1
            self.oversize_bytes += len(self._buf) + len(tail)
            self._buf.clear()
            self._discarding = True
        else:
            self._buf += tail


@dataclass(frozen=True)
class Summary:
    """What `herder job ID --follow` shows while a run is going."""

    session_id: str | None = None
    model: str | None = None
    turns: int = 0
    tool_uses: int = 0
    last_tool: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    api_retries: int = 0
    events: int = 0
    # API error kinds seen, oldest first (assistant `error`/`api_error`, api_retry `error`).
    errors: tuple[str, ...] = ()
    last_error_status: int | None = None
    terminal_reason: str | None = None
    last_message_id: str | None = field(default=None, repr=False)

    def as_progress(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "model": self.model,
            "turns": self.turns,
            "tool_uses": self.tool_uses,
            "last_tool": self.last_tool,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
            "api_retries": self.api_retries,
            "last_error": self.errors[-1] if self.errors else None,
            "last_error_status": self.last_error_status,
            "terminal_reason": self.terminal_reason,
            "events": self.events,
        }


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _with_error(s: Summary, *kinds: Any) -> tuple[str, ...]:
    new = tuple(k for k in kinds if isinstance(k, str) and k)
    return (s.errors + new)[-_MAX_ERRORS_KEPT:] if new else s.errors


def fold(s: Summary, event: dict[str, Any]) -> Summary:
    """The summary after one more event."""
    etype, subtype = event.get("type"), event.get("subtype")
    s = replace(s, events=s.events + 1)
    if etype == "system" and subtype == "init":
        return replace(
            s,
            session_id=_str(event.get("session_id")) or s.session_id,
            model=_str(event.get("model")) or s.model,
        )
    if etype == "system" and subtype == "api_retry":
        status = event.get("error_status")
        return replace(
            s,
            api_retries=s.api_retries + 1,
            errors=_with_error(s, event.get("error")),
            last_error_status=status if isinstance(status, int) else s.last_error_status,
        )
    if etype == "assistant":
        message = event.get("message")
        message = message if isinstance(message, dict) else {}
        changes: dict[str, Any] = {}
        mid = _str(message.get("id"))
        # The CLI may emit one event per content block of the same message: count it once.
        if mid is None or mid != s.last_message_id:
            raw_usage = message.get("usage")
            usage: dict[str, Any] = raw_usage if isinstance(raw_usage, dict) else {}
            changes.update(
                turns=s.turns + 1,
                last_message_id=mid,
                input_tokens=s.input_tokens + _int(usage.get("input_tokens")),
                output_tokens=s.output_tokens + _int(usage.get("output_tokens")),
            )
        content = message.get("content")
        tools = [
            b.get("name")
            for b in (content if isinstance(content, list) else [])
            if isinstance(b, dict) and b.get("type") == "tool_use"
        ]
        if tools:
            changes.update(tool_uses=s.tool_uses + len(tools), last_tool=_str(tools[-1]) or s.last_tool)
        if event.get("error") or event.get("api_error"):
            changes["errors"] = _with_error(s, event.get("error"), event.get("api_error"))
            status = event.get("api_error_status")
            if isinstance(status, int):
                changes["last_error_status"] = status
        return replace(s, **changes)
    if etype == "result":
        cost = event.get("total_cost_usd")
        status = event.get("api_error_status")
        # Assistant events carry the usage at stream start (about 1 output token); the result's
        # `usage` is the run's real total.
        raw_usage = event.get("usage")
        usage = raw_usage if isinstance(raw_usage, dict) else {}
        return replace(
            s,
            input_tokens=_int(usage.get("input_tokens")) or s.input_tokens,
            output_tokens=_int(usage.get("output_tokens")) or s.output_tokens,
            terminal_reason=_str(event.get("terminal_reason")) or s.terminal_reason,
            session_id=_str(event.get("session_id")) or s.session_id,
            turns=_int(event.get("num_turns")) or s.turns,
            cost_usd=float(cost)
            if isinstance(cost, int | float) and not isinstance(cost, bool)
            else s.cost_usd,
            errors=_with_error(s, event.get("api_error")),
            last_error_status=status if isinstance(status, int) else s.last_error_status,
        )
    return s


def extract_result(event: dict[str, Any]) -> dict[str, Any] | None:
    """The job result carried by a `result` event (None for any other event)."""
    if event.get("type") != "result":
        return None
    out = {k: event.get(k) for k in RESULT_FIELDS}
    out.update({k: event[k] for k in RESULT_EXTRA_FIELDS if event.get(k) not in (None, [], {})})
    return out


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None
