"""Behavioural item vectors: each popular item's catalogue vector moved toward those of the
items shoppers use with it (co-occurrence), so the ANN index learns from the stream too."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import numpy as np

from stream_reco.candidates import vectors
from stream_reco.storage.codec import Scored
from stream_reco.storage.protocol import Store

# How much of the indexed vector is behaviour: enough that items bought together come closer,
# little enough that the catalogue still decides what an item is.
WEIGHT = 0.3
NEIGHBOURS = 20  # co-occurrence neighbours averaged per item
ITEMS_PER_ROUND = 500  # the most popular items: where behaviour says most, and bounded work


async def refresh(store: Store, limit: int = ITEMS_PER_ROUND) -> int:
    """One round over the `limit` most popular items; returns how many vectors changed."""
    items = [i for i, _ in await store.read_popular(limit)]
    if not items:
        return 0
    rows = await store.read_neighbours(items, NEIGHBOURS)
    wanted = list(dict.fromkeys([*items, *(n for row in rows.values() for n, _ in row)]))
    base = await store.vectors.base_vectors(wanted)
    changes = await asyncio.to_thread(blended, items, rows, base)  # numpy work: off the loop
    return await store.vectors.publish_blended(changes)


def blended(
    items: Sequence[str], rows: Mapping[str, Scored], base: Mapping[str, np.ndarray]
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(item, new vector, the base it came from) for each item with a catalogue vector and
    neighbours that have one: its vector blended with the score-weighted mean of theirs.
    Always from base vectors, so rounds never drift."""
    out: list[tuple[str, np.ndarray, np.ndarray]] = []
    for item in items:
        own = base.get(item)
        if own is None:
            continue
        near = [(base[n], s) for n, s in rows.get(item, []) if n != item and n in base]
        if (behaviour := vectors.behaviour_vector(near)) is not None:
            out.append((item, vectors.blend(own, behaviour, WEIGHT), own))
    return out
