"""arq's pure helpers (time conversion, argument formatting), re-exported."""

from arq.utils import *  # noqa: F403
from arq.utils import ms_to_datetime, poll, timestamp_ms, to_ms, to_seconds, to_unix_ms, truncate

__all__ = ["ms_to_datetime", "poll", "timestamp_ms", "to_ms", "to_seconds", "to_unix_ms", "truncate"]
