"""The HTTP API (`herder api`): submit and follow jobs from any language, with scoped tokens.

`create_app` and `ApiLimits` live in herder.api.app; they are loaded on first use so that the
`herder` CLI, which imports herder.api.tokens, does not pay for importing FastAPI."""

from __future__ import annotations

from typing import Any

__all__ = ["ApiLimits", "create_app"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from herder.api import app

        return getattr(app, name)
    raise AttributeError(f"module 'herder.api' has no attribute {name!r}")
