"""Where the tests find external binaries (helm, promtool): $ENV, then PATH, then .tools/bin
(what scripts/install-tools.sh fills)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def find_binary(name: str, env: str) -> str | None:
    explicit = os.environ.get(env)
    if explicit:
        if not os.access(explicit, os.X_OK):
            pytest.fail(f"${env}={explicit} is not an executable file")
        return explicit
    found = shutil.which(name)
    if found:
        return found
    local = ROOT / ".tools" / "bin" / name
    return str(local) if os.access(local, os.X_OK) else None
