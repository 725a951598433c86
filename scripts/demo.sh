#!/usr/bin/env bash
# The demo: a private redis-server, a burst of tasks, workers, and the queue draining to empty.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null && [ "$(id -u)" = 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server >/dev/null
fi
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/python -m pip install -q -e '.[operator]' 2> >(grep -v 'is ignored' >&2)
export PATH="$PWD/.venv/bin:$PATH"
exec python -m herder.demo_run examples/taskqueue.yaml "$@"
