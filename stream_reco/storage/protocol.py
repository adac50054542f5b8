"""The store as the rest of the engine sees it: one narrow typed interface, whatever serves it
(a single Redis node or a Redis Cluster, storage/redis_store.py), checked by one contract suite
(tests/integration/test_store_contract.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from stream_reco.candidates.newest import Shelf
from stream_reco.config import Settings
from stream_reco.events import CatalogItem, Event, Tombstone
from stream_reco.experiments.store import ExperimentLog
from stream_reco.state import SessionView
from stream_reco.storage.apply import Applied, Position
from stream_reco.storage.codec import Scored
from stream_reco.storage.gather import Gathered
from stream_reco.storage.profiles import Profiles
from stream_reco.storage.vector_log import VectorLog


class Store(Protocol):
    """Each state's writes (by events, catalogue records, the learner) and the reads requests
    make of it. Every method retries an outage for a while, then raises StoreError."""

    settings: Settings
    vectors: VectorLog  # item vectors and their change log (the ANN index follows it)
    shelf: Shelf  # the cold-start list as of one catalogue position
    experiments: ExperimentLog  # A/B counters: impressions and attributed events per variant
    profiles: Profiles  # returning users: per user a decayed item profile and their sessions

    # Events: applied exactly once per position (Kafka) or event id (docs/contract.md).
    async def apply_events(
        self,
        events: Sequence[Event],
        *,
        learn: bool | Sequence[bool] = True,
        positions: Sequence[Position | None] | None = None,
    ) -> Applied: ...

    async def applied_count(self) -> int: ...

    # Requests.
    async def gather(
        self,
        session_id: str,
        n_popular: int,
        cooc_window: int,
        seq_sources: int,
        sknn: bool,
        trending: bool,
        user_id: str | None = None,
        profile: int = 0,
        profile_sources: int = 0,
    ) -> Gathered: ...

    async def read_session(self, session_id: str) -> SessionView: ...

    async def read_neighbours(
        self, item_ids: Sequence[str], n: int, kind: str = "co"
    ) -> dict[str, Scored]: ...

    async def read_popular(self, n: int, category: str | None = None) -> Scored: ...

    # The catalogue.
    async def apply_catalog(self, records: Sequence[CatalogItem | Tombstone]) -> None: ...

    async def read_items(
        self, item_ids: Sequence[str], seen: str | None = None
    ) -> dict[str, CatalogItem]: ...

    async def read_newest(self, n: int) -> list[str]: ...

    async def sync_catalog(self) -> None: ...

    # Shown lists and the learner's examples, lease and published documents.
    async def remember_shown(self, session_id: str, shown: bytes) -> None: ...

    async def take_shown(self, session_ids: Sequence[str]) -> dict[str, bytes]: ...

    async def push_examples(self, examples: Sequence[bytes], cap: int) -> None: ...

    async def pop_examples(self, n: int) -> list[bytes]: ...

    async def hold_lease(self, name: str, owner: str, ttl_ms: int) -> bool: ...

    async def publish(self, name: str, doc: bytes) -> None: ...

    async def read_published(self, name: str) -> bytes | None: ...

    # Operations.
    async def check_format(self, upgrade: bool = True) -> None: ...

    async def eviction_policy(self) -> str | None: ...

    async def holds_anything(self) -> bool: ...

    async def inspect_item(self, item_id: str, n: int = 20) -> dict[str, object]: ...

    async def clear(self) -> int: ...

    async def close(self) -> None: ...
