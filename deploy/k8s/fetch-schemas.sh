#!/usr/bin/env bash
# Fetch, once, the schema the tests validate deploy/k8s/scaledobject.yaml against: KEDA's
# ScaledObject CRD, from KEDA's Go module on the Go module proxy (checked against the pinned
# module hash below), cached under $STREAM_RECO_HOME/k8s-schemas (.stream-reco by default).
# The Kubernetes schemas of the other manifests come with the PyPI package kubernetes-validate.
# Idempotent: does nothing when the cached copy is there. Needs `go` only on the first run.
set -euo pipefail
cd "$(dirname "$0")/../.."

KEDA_MODULE=github.com/kedacore/keda/v2
KEDA_VERSION=v2.16.1
KEDA_SUM=h1:LfYsxfSX8DjetLW8q9qnriImH936POrQJvE+caRoScI=
CRD=config/crd/bases/keda.sh_scaledobjects.yaml

dest="${STREAM_RECO_HOME:-.stream-reco}/k8s-schemas/keda-$KEDA_VERSION"
if [ -s "$dest/keda.sh_scaledobjects.yaml" ]; then
  exit 0
fi
command -v go >/dev/null || {
  echo "fetch-schemas: go is needed once, to fetch $KEDA_MODULE@$KEDA_VERSION" >&2
  exit 1
}
echo "fetch-schemas: fetching $KEDA_MODULE@$KEDA_VERSION (KEDA's CRDs) from the Go module proxy"
# Outside any Go module, so no go.mod of ours is read or changed.
info=$(cd /tmp && GOFLAGS=-mod=mod go mod download -json "$KEDA_MODULE@$KEDA_VERSION")
dir=$(printf '%s\n' "$info" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
sum=$(printf '%s\n' "$info" | sed -n 's/^[[:space:]]*"Sum": "\(.*\)",\{0,1\}$/\1/p')
if [ "$sum" != "$KEDA_SUM" ]; then
  echo "fetch-schemas: $KEDA_MODULE@$KEDA_VERSION has hash '$sum', expected $KEDA_SUM" >&2
  exit 1
fi
[ -s "$dir/$CRD" ] || { echo "fetch-schemas: $CRD not found in $dir" >&2; exit 1; }
mkdir -p "$dest"
# Copied then renamed: an interrupted run never leaves a half-written schema behind.
cp "$dir/$CRD" "$dest/keda.sh_scaledobjects.yaml.tmp"
mv "$dest/keda.sh_scaledobjects.yaml.tmp" "$dest/keda.sh_scaledobjects.yaml"
printf '%s@%s %s %s\n' "$KEDA_MODULE" "$KEDA_VERSION" "$KEDA_SUM" "$CRD" > "$dest/SOURCE"
echo "fetch-schemas: cached in $dest"
