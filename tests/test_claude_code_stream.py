"""The pure parts of claude_code: stream-json parsing and folding, and failure classification.

The recorded lines below are real Claude Code 2.1.x output (trimmed of fields we do not read)."""

from __future__ import annotations

import json
import signal
from typing import Any

import pytest

from herder.processors.claude_code.classify import classify
from herder.processors.claude_code.stream import LineSplitter, Summary, extract_result, fold, parse_line

INIT = (
    '{"type":"system","subtype":"init","cwd":"/w","session_id":"4dd4a389","tools":["Bash","Read"],'
    '"mcp_servers":[],"model":"claude-opus-5-5","permissionMode":"default","apiKeySource":"none",'
    '"claude_code_version":"2.1.332","uuid":"cb42"}'
)
# No API key: a synthetic assistant message with a typed error, then an is_error result (exit 1).
AUTH_ASSISTANT = (
    '{"type":"assistant","message":{"id":"7c9b","model":"<synthetic>","role":"assistant",'
    '"stop_reason":"stop_sequence","type":"message","usage":{"input_tokens":0,"output_tokens":0},'
    '"content":[{"type":"text","text":"Not logged in · Please run /login"}]},"parent_tool_use_id":null,'
    '"session_id":"4dd4a389","uuid":"4f29","error":"authentication_failed","is_api_error_message":true}'
)
AUTH_RESULT = (
    '{"duration_api_ms":0,"stop_reason":"stop_sequence","session_id":"4dd4a389","total_cost_usd":0,'
    '"usage":{"input_tokens":0,"output_tokens":0},"modelUsage":{},"permission_denials":[],'
    '"terminal_reason":"api_error","is_error":true,"num_turns":1,"subtype":"success","api_error_status":null,'
    '"result":"Not logged in · Please run /login","type":"result","duration_ms":89,"uuid":"214d"}'
)
# The API unreachable: api_retry events, then the same pattern with error server_error/connection_failed.
RETRY = (
    '{"type":"system","subtype":"api_retry","attempt":1,"max_retries":2,"retry_delay_ms":575,'
    '"error_status":null,"error":"unknown","session_id":"b5ea","uuid":"f090"}'
)
NET_ASSISTANT = (
    '{"type":"assistant","message":{"id":"64c1","model":"<synthetic>","role":"assistant","type":"message",'
    '"usage":{"input_tokens":0,"output_tokens":0},"content":[{"type":"text","text":"API Error: Can\'t reach '
    'the API server — check your internet or DNS (ENOTFOUND)"}]},"parent_tool_use_id":null,"session_id":"b5ea",'
    '"uuid":"4e44","error":"server_error","is_api_error_message":true,"api_error":"connection_failed"}'
)
NET_RESULT = (
    '{"duration_api_ms":0,"session_id":"b5ea","total_cost_usd":0,"usage":{},"permission_denials":[],'
    '"terminal_reason":"api_error","is_error":true,"num_turns":1,"subtype":"success","api_error_status":null,'
    '"api_error":"connection_failed","result":"API Error: Can\'t reach the API server — check your internet '
    'or DNS (ENOTFOUND)","type":"result","duration_ms":2022,"uuid":"4dd9"}'
)
# Commander's messages for bad options (exit 1, nothing on stdout).
BAD_OPTION = "error: unknown option '--bogus-flag'\n"
BAD_CHOICE = (
    "error: option '--permission-mode <mode>' argument 'wat' is invalid. Allowed choices are acceptEdits, "
    "auto, bypassPermissions, manual, dontAsk, plan.\n"
)


def tool_use(msg_id: str, name: str) -> dict[str, Any]:
    return {
        "type": "assistant",
        "message": {
            "id": msg_id,
            "content": [{"type": "tool_use", "id": "toolu_1", "name": name, "input": {}}],
            "usage": {"input_tokens": 100, "output_tokens": 10},
        },
    }


def run_result(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "result": "done",
        "num_turns": 3,
        "duration_ms": 1234,
        "total_cost_usd": 0.0421,
        "usage": {"input_tokens": 10},
        "session_id": "s1",
    }
    base.update(fields)
    return base


def fold_all(lines: list[str | dict[str, Any]]) -> Summary:
    s = Summary()
    for line in lines:
        event = parse_line(json.dumps(line) if isinstance(line, dict) else line)
        assert event is not None
        s = fold(s, event)
    return s


# ---- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line", [b"", b"   \n", b"hello", b"[1,2]", b'{"no_type":1}', b'{"type":3}', b"{bad json"]
)
def test_parse_line_ignores_non_events(line: bytes) -> None:
    assert parse_line(line) is None


def test_parse_line_accepts_bytes_and_str() -> None:
    assert parse_line(INIT.encode() + b"\n") == parse_line(INIT) == json.loads(INIT)


def test_line_splitter_bounds_lines_and_handles_chunking() -> None:
    sp = LineSplitter(max_line=10)
    assert sp.feed(b"ab") == []
    assert sp.feed(b"c\nde") == [b"abc"]
    assert sp.feed(b"f\n" + b"x" * 25 + b"\nok\n") == [b"def", b"ok"]
    assert sp.oversize_lines == 1 and sp.oversize_bytes == 26
    # A long line split across many chunks is dropped whole, never buffered past the cap.
    for _ in range(100):
        assert sp.feed(b"y" * 7) == []
        assert len(sp._buf) <= 10
    assert sp.feed(b"tail\nnext") == []
    assert sp.oversize_lines == 2
    assert sp.flush() == [b"next"]
    assert sp.flush() == []


# ---- folding into progress -------------------------------------------------------------------


def test_fold_counts_turns_tools_and_cost() -> None:
    s = fold_all(
        [
            INIT,
            tool_use("m1", "Bash"),
            tool_use("m1", "Read"),  # same message, second content block: same turn
            {"type": "user", "message": {"content": [{"type": "tool_result", "tool_use_id": "toolu_1"}]}},
            tool_use("m2", "Edit"),
        ]
    )
    assert s.session_id == "4dd4a389" and s.model == "claude-opus-5-5"
    assert s.turns == 2 and s.tool_uses == 3 and s.last_tool == "Edit"
    assert s.input_tokens == 200 and s.output_tokens == 20
    assert s.cost_usd is None and s.events == 5
    s = fold(s, run_result(num_turns=4))
    assert s.cost_usd == 0.0421 and s.turns == 4
    progress = s.as_progress()
    assert progress["turns"] == 4 and progress["last_tool"] == "Edit" and progress["cost_usd"] == 0.0421


def test_the_result_events_usage_replaces_the_stream_start_counts() -> None:
    # Assistant events carry the usage at stream start (the real CLI: ~1 output token each).
    start = tool_use("m1", "Bash")
    start["message"]["usage"] = {"input_tokens": 3, "output_tokens": 1}
    s = fold_all([INIT, start])
    assert s.output_tokens == 1
    usage = {"input_tokens": 5200, "output_tokens": 812}
    model_usage = {"claude-opus-5-5": {"inputTokens": 5200, "outputTokens": 812, "costUSD": 0.0421}}
    end = run_result(usage=usage, modelUsage=model_usage, terminal_reason="completed")
    s = fold(s, end)
    assert s.input_tokens == 5200 and s.output_tokens == 812
    assert s.as_progress()["terminal_reason"] == "completed"
    kept = extract_result(end)
    assert kept is not None and kept["modelUsage"] == model_usage and kept["terminal_reason"] == "completed"


def test_fold_collects_api_errors() -> None:
    s = fold_all([INIT, RETRY, NET_ASSISTANT, NET_RESULT])
    assert s.api_retries == 1
    assert s.errors == ("unknown", "server_error", "connection_failed", "connection_failed")
    assert s.as_progress()["last_error"] == "connection_failed"


def test_fold_ignores_unknown_events() -> None:
    s = fold_all([INIT, {"type": "rate_limit_event", "x": 1}, {"type": "stream_event"}])
    assert s.events == 3 and s.turns == 0


def test_extract_result_keeps_the_result_fields() -> None:
    assert extract_result(json.loads(INIT)) is None
    r = extract_result(run_result(permission_denials=[{"tool_name": "Bash"}], modelUsage={"x": 1}))
    assert r == {
        "result": "done",
        "is_error": False,
        "subtype": "success",
        "num_turns": 3,
        "duration_ms": 1234,
        "total_cost_usd": 0.0421,
        "usage": {"input_tokens": 10},
        "session_id": "s1",
        "permission_denials": [{"tool_name": "Bash"}],
        "modelUsage": {"x": 1},  # per-model tokens and cost: kept
    }


# ---- classification ------------------------------------------------------------------------


def verdict_for(lines: list[str | dict[str, Any]], returncode: int = 1, stderr: str = "") -> tuple[str, str]:
    s = fold_all(lines)
    result = None
    for line in lines:
        event = json.loads(line) if isinstance(line, str) else line
        result = extract_result(event) or result
    v = classify(returncode, result, stderr, s.errors, s.last_error_status)
    return v.kind, v.reason


def test_success() -> None:
    assert verdict_for([INIT, run_result()], returncode=0) == ("ok", "success")


def test_auth_failure_is_permanent() -> None:
    kind, reason = verdict_for([INIT, AUTH_ASSISTANT, AUTH_RESULT])
    assert kind == "permanent" and "authentication_failed" in reason and "Not logged in" in reason


def test_network_failure_is_transient() -> None:
    kind, reason = verdict_for([INIT, RETRY, NET_ASSISTANT, NET_RESULT])
    assert kind == "transient" and "connection_failed" in reason


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        ("rate_limit", 429, "transient"),
        ("overloaded", 529, "transient"),
        ("server_error", 500, "transient"),
        ("billing_error", 400, "permanent"),
        ("invalid_request", 400, "permanent"),
        ("model_not_found", 404, "permanent"),
    ],
)
def test_typed_api_errors(error: str, status: int, kind: str) -> None:
    assistant = {"type": "assistant", "message": {"id": "x", "content": []}, "error": error}
    result = run_result(is_error=True, result=f"API Error: {error}", api_error_status=status)
    assert verdict_for([INIT, assistant, result])[0] == kind


def test_the_last_typed_error_wins() -> None:
    # Retried rate limits, then an auth failure: retrying the job will not help.
    retry = {"type": "system", "subtype": "api_retry", "error": "rate_limit", "error_status": 429}
    assert verdict_for([INIT, retry, AUTH_ASSISTANT, AUTH_RESULT])[0] == "permanent"


@pytest.mark.parametrize(("status", "kind"), [(429, "transient"), (503, "transient"), (401, "permanent")])
def test_http_status_without_a_typed_error(status: int, kind: str) -> None:
    assert (
        verdict_for([INIT, run_result(is_error=True, result="API Error", api_error_status=status)])[0] == kind
    )


@pytest.mark.parametrize(
    ("subtype", "phrase"),
    [
        ("error_max_turns", "max turns"),
        ("error_max_budget_usd", "max budget"),
        ("error_during_execution", ""),
    ],
)
def test_error_subtypes_are_permanent(subtype: str, phrase: str) -> None:
    kind, reason = verdict_for(
        [INIT, run_result(subtype=subtype, is_error=True, result=None, errors=["boom"])]
    )
    assert kind == "permanent" and phrase in reason and subtype in reason


def test_is_error_without_api_evidence_is_permanent() -> None:
    kind, reason = verdict_for([INIT, run_result(is_error=True, result="I could not do that")])
    assert kind == "permanent" and "I could not do that" in reason


def test_is_error_with_transient_text_is_transient() -> None:
    assert (
        verdict_for([INIT, run_result(is_error=True, result="API Error: Request timed out")])[0]
        == "transient"
    )


@pytest.mark.parametrize(
    "stderr",
    [
        BAD_OPTION,
        BAD_CHOICE,
        "error: option '--max-turns <turns>' argument 'abc' is invalid. must be a number",
        "--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons\n",
    ],
)
def test_invalid_arguments_are_permanent(stderr: str) -> None:
    v = classify(1, None, stderr)
    assert v.kind == "permanent" and v.reason.startswith("invalid arguments")


@pytest.mark.parametrize(
    ("sig", "note"),
    [(signal.SIGSEGV, "segmentation fault"), (signal.SIGXCPU, "CPU time limit"), (signal.SIGKILL, "SIGKILL")],
)
def test_killed_by_a_signal_is_a_crash(sig: signal.Signals, note: str) -> None:
    v = classify(-int(sig), None, "")
    assert v.kind == "crash" and note in v.reason


def test_no_result_line_is_a_crash() -> None:
    v = classify(1, None, "Something unexpected")
    assert v.kind == "crash" and "without a result" in v.reason and "Something unexpected" in v.reason
    assert classify(0, None, "").kind == "crash"


def test_out_of_memory_is_a_crash_that_says_so() -> None:
    stderr = "FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory\n"
    assert "out of memory" in classify(-int(signal.SIGABRT), None, stderr).reason
    assert "out of memory" in classify(134, None, stderr).reason


def test_no_result_but_transient_evidence_is_transient() -> None:
    retry = json.loads(RETRY) | {"error": "overloaded", "error_status": 529}
    s = fold(Summary(), retry)
    assert classify(1, None, "", s.errors, s.last_error_status).kind == "transient"
    assert classify(1, None, "Error: 429 rate limit exceeded").kind == "transient"
