"""Fetches and caches KEDA's ScaledObject CRD, the schema deploy/k8s/scaledobject.yaml is
validated against (tests/unit/test_manifests.py), with the standard library only (no `go`)."""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

KEDA_MODULE = "github.com/kedacore/keda/v2"
KEDA_VERSION = "v2.16.1"
# The module zip's SHA-256, pinned: the same zip `go mod download` verified against the Go
# checksum database (its go.sum hash is h1:LfYsxfSX8DjetLW8q9qnriImH936POrQJvE+caRoScI=).
KEDA_ZIP_SHA256 = "ccb104c6e2cf35d16c9ceac520fa8d92afd9377b58ff62a668e5946eb4f18e2c"
CRD = "config/crd/bases/keda.sh_scaledobjects.yaml"
NAME = "keda.sh_scaledobjects.yaml"
DEFAULT_PROXY = "https://proxy.golang.org"
TIMEOUT_S = 60.0
ROOT = Path(__file__).resolve().parents[2]


class FetchError(Exception):
    """The schema could not be fetched or did not match its pin; the message says what to do."""


def cache_dir(env: Mapping[str, str]) -> Path:
    """$STREAM_RECO_HOME/k8s-schemas/keda-<version> (.stream-reco under the repository)."""
    home = Path(env.get("STREAM_RECO_HOME") or ".stream-reco")
    home = home if home.is_absolute() else ROOT / home
    return home / "k8s-schemas" / f"keda-{KEDA_VERSION}"


def proxy(env: Mapping[str, str]) -> str:
    """The first proxy of $GOPROXY that is a URL (`direct` and `off` are not proxies)."""
    for entry in (env.get("GOPROXY") or DEFAULT_PROXY).replace("|", ",").split(","):
        entry = entry.strip()
        if entry.startswith(("https://", "http://")):
            return entry.rstrip("/")
    return DEFAULT_PROXY


def fetch(env: Mapping[str, str], log: Callable[[str], object] = print) -> Path:
    """The cached CRD's path; downloaded, checked and cached first when it is missing."""
    dest = cache_dir(env) / NAME
    if dest.is_file() and dest.stat().st_size > 0:
        return dest
    url = f"{proxy(env)}/{KEDA_MODULE}/@v/{KEDA_VERSION}.zip"
    log(f"fetch-schemas: fetching {KEDA_MODULE}@{KEDA_VERSION} (KEDA's CRDs) from {url}")
    crd = _extract(_download(url))
    _write_atomically(dest, crd)
    _write_atomically(dest.parent / "SOURCE", f"{url} sha256:{KEDA_ZIP_SHA256} {CRD}\n".encode())
    log(f"fetch-schemas: cached in {dest.parent}")
    return dest


def _download(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as r:
            body: bytes = r.read()
    except OSError as exc:  # URLError and HTTPError are OSErrors
        raise FetchError(
            f"could not download {url}: {exc}; check the network or set GOPROXY to a reachable "
            "Go module proxy"
        ) from exc
    got = hashlib.sha256(body).hexdigest()
    if got != KEDA_ZIP_SHA256:
        raise FetchError(
            f"{url} has SHA-256 {got}, expected {KEDA_ZIP_SHA256}: the proxy served another "
            "file; use a trustworthy GOPROXY (nothing was cached)"
        )
    return body


def _extract(body: bytes) -> bytes:
    # Module zips hold every file under "<module>@<version>/".
    member = f"{KEDA_MODULE}@{KEDA_VERSION}/{CRD}"
    with zipfile.ZipFile(io.BytesIO(body)) as z:
        try:
            return z.read(member)
        except KeyError:
            raise FetchError(f"{member} not found in the module zip") from None


def _write_atomically(dest: Path, body: bytes) -> None:
    """Written to a temporary file then renamed: an interrupted run leaves no half a schema."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600: the cache is read by other users too
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main() -> int:
    try:
        fetch(os.environ)
    except FetchError as exc:
        print(f"fetch-schemas: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
