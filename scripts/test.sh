#!/usr/bin/env bash
# Runs every check CI runs: lint, types, and the test suite (which starts its own redis-server).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[operator,test]' 2> >(grep -v 'is ignored' >&2)
export PATH="$PWD/.venv/bin:$PATH"
ruff check
ruff format --check
mypy
pytest -q -p no:cacheprovider "$@"
