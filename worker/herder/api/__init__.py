"""The HTTP API (`herder api`): submit and follow jobs from any language, with scoped tokens."""

from __future__ import annotations

from herder.api.app import ApiLimits, create_app

__all__ = ["ApiLimits", "create_app"]
