"""Crash-safe index snapshots on disk: a binary graph file committed by a JSON state file."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from stream_reco.errors import SnapshotError

STATE = "index.json"
FORMAT = 1
GRAPH = re.compile(r"graph-[0-9a-f]{16}\.bin")  # the only names read: no path from the file
CHUNK = 1 << 20


def write(directory: Path, dump: Callable[[str], dict[str, Any]]) -> None:
    """`dump(path)` writes the graph under a fresh name and returns the state that goes with
    it; then the state file naming the graph (with its size and digest) is atomically
    replaced, so a crash before that leaves the old pair intact."""
    graph = directory / f"graph-{secrets.token_hex(8)}.bin"
    tmp = directory / f"{STATE}.{secrets.token_hex(4)}.tmp"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        state = dump(str(graph))
        _fsync(graph)
        doc = {
            "format": FORMAT,
            "graph": graph.name,
            "graph_bytes": graph.stat().st_size,
            "graph_blake2b": _digest(graph),
            "state": state,
        }
        with open(tmp, "wb") as out:
            out.write(orjson.dumps(doc))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, directory / STATE)  # the commit point
    except (OSError, RuntimeError) as exc:
        graph.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
        raise SnapshotError(f"cannot save a snapshot in {directory}: {exc}") from exc
    _fsync_dir(directory)  # the rename itself must survive a power loss
    _remove_stale(directory, keep=graph.name)


def read(directory: Path) -> tuple[Path, dict[str, Any]]:
    """The committed graph file (size and digest checked, so hnswlib never parses a damaged
    file) and the state saved with it; SnapshotError if anything is missing or wrong."""
    try:
        doc = orjson.loads((directory / STATE).read_bytes())
    except FileNotFoundError:
        raise SnapshotError(f"no snapshot in {directory}") from None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise SnapshotError(f"unreadable snapshot state in {directory}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise SnapshotError(f"{directory / STATE} is not a format-{FORMAT} snapshot")
    name, size, digest, state = (
        doc.get(k) for k in ("graph", "graph_bytes", "graph_blake2b", "state")
    )
    if not (isinstance(name, str) and GRAPH.fullmatch(name)):
        raise SnapshotError(f"{directory / STATE} names no valid graph file: {name!r}")
    if not isinstance(state, dict):
        raise SnapshotError(f"{directory / STATE} has no state object")
    graph = directory / name
    try:
        actual = graph.stat().st_size
        if actual != size or _digest(graph) != digest:
            raise SnapshotError(f"{graph} is damaged: size or digest differs from {STATE}")
    except OSError as exc:
        raise SnapshotError(f"cannot read {graph}: {exc}") from None
    return graph, state


def _digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale(directory: Path, keep: str) -> None:
    """Older graphs and temp files left by earlier saves or crashes; only after the commit."""
    for path in directory.iterdir():
        stale_graph = GRAPH.fullmatch(path.name) and path.name != keep
        if stale_graph or (path.name.startswith(f"{STATE}.") and path.name.endswith(".tmp")):
            path.unlink(missing_ok=True)
