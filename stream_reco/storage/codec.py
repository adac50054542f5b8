"""How values are laid out inside Redis: catalogue hashes and score lists, both directions."""

from __future__ import annotations

import orjson

from stream_reco.decay import relative
from stream_reco.events import CatalogItem

Scored = list[tuple[str, float]]


def meta_fields(r: CatalogItem) -> dict[str, str | bytes]:
    fields: dict[str, str | bytes] = {
        "title": r.title,
        "category": r.category,
        "brand": r.brand,
        "in_stock": "1" if r.in_stock else "0",
        "tags": orjson.dumps(list(r.tags)),
    }
    if r.price is not None:
        fields["price"] = repr(r.price)
    if r.margin is not None:
        fields["margin"] = repr(r.margin)
    return fields


def parse_meta(item_id: str, row: dict[bytes, bytes]) -> CatalogItem:
    def num(name: bytes) -> float | None:
        return float(row[name]) if name in row else None

    return CatalogItem(
        item_id=item_id,
        title=row.get(b"title", b"").decode(),
        category=row.get(b"category", b"").decode(),
        brand=row.get(b"brand", b"").decode(),
        price=num(b"price"),
        in_stock=row.get(b"in_stock") == b"1",
        tags=tuple(orjson.loads(row.get(b"tags", b"[]"))),
        margin=num(b"margin"),
    )


def meta_json(m: CatalogItem) -> dict[str, object]:
    return {
        "title": m.title,
        "category": m.category,
        "brand": m.brand,
        "price": m.price,
        "in_stock": m.in_stock,
        "tags": list(m.tags),
        "margin": m.margin,
    }


def pairs(flat: list[bytes]) -> Scored:
    """[member, score, member, score, ...] as Lua returns ZREVRANGE WITHSCORES."""
    if len(flat) % 2:
        raise ValueError("a scored list has a member without a score")
    # map() keeps the per-row work in C: these lists are most of what a request parses.
    return list(zip(map(bytes.decode, flat[::2]), map(float, flat[1::2]), strict=True))


def decayed(flat: list[bytes]) -> Scored:
    """A best-first list of decayed sums (stored as log-sums, decay.py) as values relative to
    its top item, which is how every reader weighs a list."""
    rows = pairs(flat)
    return list(zip([i for i, _ in rows], relative([v for _, v in rows]), strict=True))


def hash_fields(flat: list[bytes]) -> dict[bytes, bytes]:
    return dict(zip(flat[::2], flat[1::2], strict=True))
