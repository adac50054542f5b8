"""Keeps this worker's HNSW index in step with the shared vector log; snapshots it to disk."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from stream_reco.candidates.ann import ItemIndex
from stream_reco.errors import LogTrimmed, SnapshotError
from stream_reco.storage.vector_log import START, Change, VectorLog

log = logging.getLogger(__name__)
BATCH = 1000
APPLY_CHUNK = 50


class IndexSync:
    """Every worker follows one change log, so every index converges to the same items. A
    restart loads the last snapshot and replays only the log after it."""

    def __init__(self, vectors: VectorLog, directory: Path) -> None:
        self.vectors, self.directory = vectors, directory
        self.index = ItemIndex(vectors.dim)
        self.position = START
        self.saved_at = START

    def start(self) -> None:
        """Load the snapshot if there is a good one; a bad one is rebuilt from the log later."""
        if not (self.directory / "index.json").exists():
            return
        try:
            self.index, self.position = ItemIndex.load(self.directory)
            self.saved_at = self.position
        except SnapshotError as exc:
            log.warning("ANN snapshot unusable, rebuilding from the vector log: %s", exc)

    async def catch_up(self) -> int:
        """Apply every logged change since our position; returns how many items changed."""
        changed = 0
        while True:
            try:
                position, changes = await self.vectors.changes_since(self.position, BATCH)
            except LogTrimmed:
                return await self._rebuild()
            # Off the event loop, in small chunks: each holds the index's write lock (and so
            # delays a query on the loop) for a few milliseconds at most.
            for n in range(0, len(changes), APPLY_CHUNK):
                await asyncio.to_thread(self._apply, changes[n : n + APPLY_CHUNK])
            self.position = position
            changed += len(changes)
            if len(changes) < BATCH:
                return changed

    def _apply(self, changes: list[Change]) -> None:
        for item_id, vector in changes:
            if vector is None:
                self.index.remove(item_id)
            else:
                self.index.upsert(item_id, vector)

    async def _rebuild(self) -> int:
        position, vectors = await self.vectors.all_vectors()
        # A full build is seconds of CPU for a big catalogue: never on the event loop.
        self.index = await asyncio.to_thread(ItemIndex.from_vectors, vectors, self.vectors.dim)
        self.position = position
        return len(vectors)

    async def save(self) -> None:
        """Snapshot if anything changed since the last one (off the event loop)."""
        if self.position == self.saved_at:
            return
        position = self.position
        await asyncio.to_thread(self.index.save, self.directory, position)
        self.saved_at = position
