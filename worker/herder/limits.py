"""Size caps on what tasks store in Redis: results, error messages, tracebacks, progress and log
events. Pure functions; the caps themselves are settings (HerderSettings.max_*).

Past a cap a value is never stored whole and never silently dropped: text keeps its head and a
marker saying how much was cut; JSON values become a marker object with a preview, so a reader
(CLI, dashboard, API) sees what happened and how big the original was.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic_core import to_jsonable_python

TRUNCATED_KEY = "herder_truncated"  # marks a JSON value replaced because it was too large
PREVIEW_CHARS = 1000


def cap_text(text: str, limit: int) -> str:
    """`text` if it fits in `limit` characters, else its head and a marker (within `limit`)."""
    if len(text) <= limit:
        return text
    marker = f"… [truncated: {len(text)} characters, limit {limit}]"
    return text[: max(0, limit - len(marker))] + marker


def truncation_marker(encoded: str, limit: int) -> dict[str, Any]:
    return {
        TRUNCATED_KEY: True,
        "bytes": len(encoded),
        "limit": limit,
        "preview": encoded[:PREVIEW_CHARS],
    }


# One encoder, not one per call: json.dumps builds a new JSONEncoder whenever it gets options.
_COMPACT = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_PLAIN = (dict, list, str, int, float, bool, type(None))


def encode_capped(value: Any, limit: int) -> str:
    """Compact JSON of `value`, or of a truncation marker when the JSON exceeds `limit` bytes.

    Raises ValueError/TypeError for a value that is not JSON (NaN included): the caller decides
    whether that is the task's bug (a result) or advisory (progress, logs)."""
    # ensure_ascii (the default): the JSON is ASCII, so characters are bytes.
    try:  # plain JSON data (most results) needs no conversion: it costs as much as the encoding
        encoded = _COMPACT.encode(value) if type(value) in _PLAIN else None
    except (TypeError, ValueError):
        encoded = None  # a value inside needs converting (or is NaN): as below
    if encoded is None:
        encoded = _COMPACT.encode(to_jsonable_python(value))
    if len(encoded) > limit:
        return json.dumps(truncation_marker(encoded, limit), separators=(",", ":"))
    return encoded


def encode_lenient(value: Any, limit: int) -> str:
    """Like `encode_capped`, for advisory data (progress, log events): anything not JSON is
    stringified rather than refused."""
    try:
        return encode_capped(value, limit)
    except (TypeError, ValueError, RecursionError):
        return encode_capped(cap_text(repr(value), limit), limit)
