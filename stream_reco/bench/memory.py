"""Memory: Redis bytes per session and per item under the run's prefix, and worker RSS."""

from __future__ import annotations

import random
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from stream_reco.config import Settings
from stream_reco.storage import connect

SAMPLE_PER_SCOPE = 2000  # MEMORY USAGE is per key: a sample, scaled up by the key counts


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process (Linux /proc), None where it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def used_memory(settings: Settings) -> int:
    """Bytes Redis uses, summed over every primary of a cluster."""
    client = connect.sync_client(settings)
    try:
        return _used(client)
    finally:
        client.close()


def _used(client: connect.SyncClient) -> int:
    return sum(int(node.info("memory")["used_memory"]) for node in connect.primaries(client))


def redis_memory(settings: Settings, used_before: int, seed: int = 0) -> dict[str, Any]:
    """Bytes per session (its keys) and per item (its keys), from MEMORY USAGE
    of sampled keys scaled by the key counts; also the server-wide used_memory delta, which
    other users of the same Redis move too."""
    client = connect.sync_client(settings)
    try:
        scopes = _keys_by_scope(client, settings.key_prefix)
        rng = random.Random(seed)
        bytes_by_scope = {s: _scaled_usage(client, keys, rng) for s, keys in scopes.items()}
        used_after = _used(client)
    finally:
        client.close()
    sessions = len(_ids(scopes.get("s", []), settings.key_prefix))
    items = len(_ids(scopes.get("i", []), settings.key_prefix))
    session_bytes = bytes_by_scope.get("s", 0)
    return {
        "sessions": sessions,
        "items": items,
        "keys": {scope: len(keys) for scope, keys in sorted(scopes.items())},
        "bytes_per_session": round(session_bytes / sessions) if sessions else None,
        "bytes_per_item": round(bytes_by_scope.get("i", 0) / items) if items else None,
        "global_bytes": round(bytes_by_scope.get("g", 0)),
        "used_memory_delta_bytes": used_after - used_before,
    }


def _keys_by_scope(client: connect.SyncClient, prefix: str) -> dict[str, list[bytes]]:
    """Keys under `prefix` by scope: s(ession), d(edup), i(tem), g(lobal) (storage/keys.py)."""
    out: dict[str, list[bytes]] = defaultdict(list)
    cut = len(prefix) + 1
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        out[key[cut : cut + 1].decode()].append(key)
    return dict(out)


_ID = re.compile(rb":[sdi]:\{([^}]*)\}:")


def _ids(keys: list[bytes], prefix: str) -> set[bytes]:
    found = (_ID.match(key, len(prefix)) for key in keys)
    return {m.group(1) for m in found if m}


def _scaled_usage(client: connect.SyncClient, keys: list[bytes], rng: random.Random) -> float:
    if not keys:
        return 0.0
    sample = keys if len(keys) <= SAMPLE_PER_SCOPE else rng.sample(keys, SAMPLE_PER_SCOPE)
    pipe = client.pipeline(transaction=False)
    for key in sample:
        pipe.memory_usage(key)
    sizes = [s for s in pipe.execute() if s is not None]  # None: the key expired meanwhile
    if not sizes:
        return 0.0
    return sum(sizes) / len(sizes) * len(keys)
