#!/usr/bin/env bash
# Runs every check CI runs: installs the tools the tests use (scripts/install-tools.sh: redis-server,
# redis-sentinel, bwrap, chromium, promtool, prometheus, helm), then lint, types and the whole test
# suite (which starts its own redis-server instances). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-tools.sh
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[operator,test]' 2> >(grep -v 'is ignored' >&2)
export PATH="$PWD/.venv/bin:$PWD/.tools/bin:$PATH"
ruff check
ruff format --check
mypy
# -rs: the summary names every skipped test and why, just above pytest's closing line.
pytest -q -rs -p no:cacheprovider "$@"
