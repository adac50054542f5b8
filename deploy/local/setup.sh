#!/usr/bin/env bash
# One-time (and idempotent) setup of a development machine: Python deps in .venv, redis-server,
# chromium (the dashboard's browser test), Java/Maven checks and the Kafka 3.9.1 jars. Safe to
# run again: it skips what is already done.
set -euo pipefail
cd "$(dirname "$0")/../.."

say() { printf '\033[1msetup:\033[0m %s\n' "$*"; }
apt_install() {
  if [ "$(id -u)" != 0 ]; then
    echo "setup: $* missing and not root: install it (apt-get install $*) and run again" >&2
    exit 1
  fi
  say "installing $* with apt-get ..."
  if [ ! -f /tmp/.stream-reco-apt-updated ]; then
    apt-get update -qq && touch /tmp/.stream-reco-apt-updated
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Python 3.11 (the supported version)
PY=""
for cand in python3.11 python3; do
  if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    PY=$(command -v "$cand"); break
  fi
done
[ -n "$PY" ] || { echo "setup: Python 3.11 is required (python3.11 not found)" >&2; exit 1; }

# Servers' prerequisites: Java 17 for Kafka, Maven to fetch its jars, Debian's redis-server.
command -v java >/dev/null || apt_install openjdk-17-jre-headless
command -v mvn >/dev/null || apt_install maven
if ! command -v redis-server >/dev/null; then
  apt_install redis-server
  # Debian's package may start its own server on 6379; the project's stack must own that port.
  service redis-server stop >/dev/null 2>&1 || true
fi

# Debian's chromium for the dashboard's browser test (Playwright drives it: no browser download).
command -v chromium >/dev/null || apt_install chromium

# Python environment, reinstalled only when pyproject.toml changes.
stamp=.venv/.stream-reco-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $PY"
  "$PY" -m venv .venv
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing Python dependencies (first time: a few minutes) ..."
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev]"
  echo "$want" > "$stamp"
fi

# Kafka jars from Maven Central, cached under .stream-reco/kafka/libs.
.venv/bin/python -c "from stream_reco.config import Settings; from stream_reco.stack_servers import Stack, ensure_kafka_jars; ensure_kafka_jars(Stack(Settings.from_env()), print)"
# KEDA's ScaledObject CRD for tests/unit/test_manifests.py (cached; Python stdlib, no go)
bash deploy/k8s/fetch-schemas.sh
say "ready (.venv, redis-server $(redis-server --version | grep -o 'v=[0-9.]*'), $(java -version 2>&1 | head -1), Kafka jars)"
