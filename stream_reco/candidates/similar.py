"""Content-similar candidates: HNSW neighbours of the session's latest items (cold start)."""

from __future__ import annotations

import time

from stream_reco.candidates import Candidate
from stream_reco.candidates.ann import IndexBusy, ItemIndex
from stream_reco.state import Interaction

PER_SOURCE = 20
# A query runs on the event loop: while a write holds the index longer than this in all (a
# resize copies the whole graph), the request goes on without content-similar candidates.
WAIT_S = 0.002


def gather(
    index: ItemIndex | None,
    latest: list[tuple[Interaction, float]],
    into: dict[str, Candidate],
) -> None:
    """Add items whose vectors are closest to the latest session items as `similar`: a new
    item has neighbours here the moment its catalogue record is indexed, before any click."""
    if index is None or not len(index):
        return
    deadline = time.monotonic() + WAIT_S  # one wait for the whole request, not per lookup
    for src, weight in latest:
        if src.item_id not in index:
            continue
        try:
            wait = max(deadline - time.monotonic(), 0.0)
            found = index.similar(src.item_id, PER_SOURCE, wait=wait)
        except IndexBusy:
            return
        for item_id, sim in found:
            if sim <= 0:
                continue
            cand = into.get(item_id)
            if cand is None:
                cand = into[item_id] = Candidate(item_id)
            share = weight * sim
            cand.features["similar"] = cand.features.get("similar", 0.0) + share
            if cand.source_item is None and item_id != src.item_id:  # never its own reason
                cand.source_item, cand.source_type = src.item_id, src.type
                cand.source_kind = "similar"
