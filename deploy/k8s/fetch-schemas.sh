#!/usr/bin/env bash
# Fetch, once, the schema the tests validate deploy/k8s/scaledobject.yaml against: KEDA's
# ScaledObject CRD, from KEDA's Go module zip on the Go module proxy (checked against a pinned
# SHA-256), cached under $STREAM_RECO_HOME/k8s-schemas (.stream-reco by default). The work is
# done by fetch_schemas.py with Python's standard library: no `go` needed. The Kubernetes
# schemas of the other manifests come with the PyPI package kubernetes-validate.
# Idempotent: does nothing when the cached copy is there.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
py=python3
[ -x "$here/../../.venv/bin/python" ] && py="$here/../../.venv/bin/python"
exec "$py" "$here/fetch_schemas.py"
