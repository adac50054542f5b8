"""Item vectors: deterministic content vectors from catalogue metadata, embeddings, blending."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np

from stream_reco.events import CatalogItem

DIM = 64
# Hashed feature space: large enough that a shop's categories, brands and title words rarely
# collide, small enough that its projection matrix (BUCKETS x DIM float32, 4 MB) is cheap.
BUCKETS = 1 << 14
# Fixed forever: changing it changes every vector, so every index would have to be rebuilt.
SEED = 20_240_601
# Price bands per doubling of price: 2 makes 40 and 55 different bands but 40 and 45 the same.
BANDS_PER_OCTAVE = 2
# Category and brand say most about what substitutes an item; words and tags are noisier.
CATEGORY_WEIGHT = 2.0
BRAND_WEIGHT = 1.5
TAGS_WEIGHT = 1.0  # shared by all tags, so many tags do not outweigh the category
TITLE_WEIGHT = 1.0  # shared by all title words
PRICE_WEIGHT = 1.0
CATEGORY_SEPARATORS = re.compile(r"\s*[>/|]\s*")  # "home > kitchen" is a path of categories
WORD = re.compile(r"\w+")

Vector = np.ndarray  # 1-D float32, unit length
FLOAT32_MAX = float(np.finfo(np.float32).max)


def content_vector(item: CatalogItem, dim: int = DIM) -> Vector:
    """The item's metadata hashed into BUCKETS and projected to `dim`, unit length; an item
    without metadata gets a vector from its id, so it still has a valid, stable place."""
    features = metadata_features(item) or {f"id:{item.item_id}": 1.0}
    buckets, weights = _hashed(features)
    vector = weights @ _feature_projection(dim)[buckets]
    return _unit(vector) if _norm(vector) > 0 else _unit(_feature_projection(dim)[buckets[0]])


def embedding_vector(embedding: Sequence[float], dim: int = DIM) -> Vector | None:
    """A given embedding at `dim` (fixed random projection when its length differs), unit
    length; None when it is all zeros and so says nothing."""
    wide = np.asarray(embedding, dtype=np.float64)
    if wide.ndim != 1 or wide.size == 0 or not np.all(np.isfinite(wide)):
        raise ValueError("an embedding must be a non-empty list of finite numbers")
    top = float(np.max(np.abs(wide)))
    if top > FLOAT32_MAX:
        raise ValueError("embedding values must fit a float32 (|x| <= 3.4e38)")
    if top == 0:
        return None
    raw = (wide / top).astype(np.float32)  # scaled in float64: no overflow or underflow later
    vector = raw if raw.size == dim else raw @ _embedding_projection(raw.size, dim)
    return _unit(vector) if _norm(vector) > 0 else None


def item_vector(
    item: CatalogItem,
    embedding: Sequence[float] | None = None,
    dim: int = DIM,
    embedding_weight: float = 1.0,
) -> Vector:
    """The vector an item is indexed by: its embedding blended with its content vector
    (`embedding_weight` 1.0 means the embedding alone), or the content vector without one."""
    content = content_vector(item, dim)
    given = None if embedding is None else embedding_vector(embedding, dim)
    return blend(content, given, embedding_weight)


def behaviour_vector(neighbours: Iterable[tuple[Vector, float]]) -> Vector | None:
    """The score-weighted mean of the vectors of an item's co-occurrence neighbours, unit
    length; None without a positive-scored neighbour."""
    total: Vector | None = None
    for vector, score in neighbours:
        if score > 0 and math.isfinite(score):
            part = np.asarray(vector, dtype=np.float32) * np.float32(score)
            total = part if total is None else total + part
    return None if total is None or _norm(total) == 0 else _unit(total)


def blend(base: Vector, other: Vector | None, weight: float) -> Vector:
    """(1 - weight) * base + weight * other, unit length; `base` alone when `other` is None or
    the two cancel out (opposite vectors)."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in 0..1, got {weight}")
    if other is None:
        return _unit(base)
    if base.shape != other.shape:
        raise ValueError(f"cannot blend vectors of shapes {base.shape} and {other.shape}")
    mixed = np.float32(1.0 - weight) * _unit(base) + np.float32(weight) * _unit(other)
    return _unit(mixed) if _norm(mixed) > 1e-6 else _unit(base)


def metadata_features(item: CatalogItem) -> dict[str, float]:
    """Named, weighted features of the item's metadata (empty when it has none); the field
    name prefix keeps brand "apple" and tag "apple" apart."""
    features: dict[str, float] = {}
    path = [p for p in CATEGORY_SEPARATORS.split(item.category.strip().lower()) if p]
    for depth in range(len(path)):
        # Every ancestor too: two items in home>kitchen>knives and home>kitchen>pans are close.
        _add(features, "c:" + ">".join(path[: depth + 1]), CATEGORY_WEIGHT)
    if item.brand.strip():
        _add(features, "b:" + item.brand.strip().lower(), BRAND_WEIGHT)
    _spread(features, "t:", [t.strip().lower() for t in item.tags if t.strip()], TAGS_WEIGHT)
    _spread(features, "w:", WORD.findall(item.title.lower()), TITLE_WEIGHT)
    if item.price is not None and item.price >= 0:
        for name in price_bands(item.price):
            _add(features, name, PRICE_WEIGHT / 2)
    return features


def price_bands(price: float) -> tuple[str, str]:
    """Two log-scale bands on grids offset by half a band: prices within half a band of each
    other always share at least one, however close to a band edge they fall."""
    x = math.log2(1.0 + price) * BANDS_PER_OCTAVE
    return f"p0:{math.floor(x)}", f"p1:{math.floor(x + 0.5)}"


def to_bytes(vector: Vector) -> bytes:
    """Little-endian float32, the same bytes on every machine."""
    return np.asarray(vector, dtype="<f4").tobytes()


def from_bytes(raw: bytes, dim: int) -> Vector:
    if len(raw) != 4 * dim:
        raise ValueError(f"a {dim}-dimensional vector is {4 * dim} bytes, got {len(raw)}")
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)


def _add(features: dict[str, float], name: str, weight: float) -> None:
    features[name] = features.get(name, 0.0) + weight


def _spread(features: dict[str, float], prefix: str, names: list[str], weight: float) -> None:
    # Unit total length over the group: a 20-word title counts no more than a 2-word one.
    for name in names:
        _add(features, prefix + name, weight / math.sqrt(len(names)))


def _hashed(features: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Bucket and signed weight per feature; blake2b, not hash(), which is salted per process.
    The sign bit makes collisions cancel out on average instead of adding up."""
    buckets = np.empty(len(features), dtype=np.int64)
    weights = np.empty(len(features), dtype=np.float32)
    for n, (name, weight) in enumerate(sorted(features.items())):
        h = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")
        buckets[n] = h % BUCKETS
        weights[n] = weight if (h >> 63) & 1 else -weight
    return buckets, weights


@lru_cache(maxsize=4)
def _feature_projection(dim: int) -> np.ndarray:
    # Made on first use, not at import: workers that never build vectors skip the 4 MB.
    return _gaussian((SEED, BUCKETS, dim), (BUCKETS, dim))


@lru_cache(maxsize=8)
def _embedding_projection(size: int, dim: int) -> np.ndarray:
    # Seeded by the embedding size too: each input size has its own fixed projection.
    return _gaussian((SEED, size, dim), (size, dim))


def _gaussian(seed: tuple[int, ...], shape: tuple[int, int]) -> np.ndarray:
    """A read-only N(0, 1) matrix fixed by `seed`. PCG64 streams are the same on every
    machine; NumPy does not promise the same across its versions, which is fine because
    workers share vectors through the vector log rather than each recomputing them."""
    rng = np.random.Generator(np.random.PCG64(seed))
    matrix = rng.standard_normal(shape, dtype=np.float32)
    matrix.flags.writeable = False
    return matrix


def _norm(vector: np.ndarray) -> float:
    return float(np.linalg.norm(vector))


def _unit(vector: np.ndarray) -> Vector:
    norm = _norm(vector)
    if not (norm > 0 and math.isfinite(norm)):
        raise ValueError("cannot normalise a zero or non-finite vector")
    return (np.asarray(vector, dtype=np.float32) / np.float32(norm)).astype(np.float32)
