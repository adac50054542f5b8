"""Item vectors: deterministic everywhere, similar metadata close, embeddings and blends sound."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stream_reco.candidates import vectors
from stream_reco.candidates.vectors import (
    DIM,
    behaviour_vector,
    blend,
    content_vector,
    embedding_vector,
    from_bytes,
    item_vector,
    price_bands,
    to_bytes,
)
from stream_reco.events import CatalogItem

ROOT = Path(__file__).resolve().parents[2]
KETTLE = CatalogItem("k1", "Acme Red Kettle 1.7l", "home > kitchen", "Acme", 29.0, tags=("red",))
KETTLE2 = CatalogItem("k2", "Acme steel kettle", "home > kitchen", "Acme", 34.0, tags=("steel",))
SHOE = CatalogItem("s1", "Zoom trail shoe", "sports > running", "Zed", 120.0, tags=("blue",))


def unit(v: np.ndarray) -> bool:
    return v.dtype == np.float32 and v.shape == (DIM,) and abs(np.linalg.norm(v) - 1) < 1e-5


def test_content_vector_is_a_unit_vector_and_the_same_on_every_call() -> None:
    first = content_vector(KETTLE)
    assert unit(first)
    vectors._feature_projection.cache_clear()  # regenerated lazily: still the same matrix
    assert to_bytes(content_vector(KETTLE)) == to_bytes(first)


def test_content_vector_is_the_same_in_another_process_with_another_hash_seed() -> None:
    # Python's hash() is salted per process; a vector built from it would differ here.
    code = (
        "from stream_reco.candidates.vectors import content_vector, to_bytes\n"
        "from tests.unit.test_vectors import KETTLE\n"
        "import sys; sys.stdout.write(to_bytes(content_vector(KETTLE)).hex())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == to_bytes(content_vector(KETTLE)).hex()


def test_same_category_and_brand_are_closer_than_unrelated_items() -> None:
    a, b, c = content_vector(KETTLE), content_vector(KETTLE2), content_vector(SHOE)
    assert a @ b > 0.5
    assert a @ b > a @ c + 0.4
    assert a @ b > b @ c + 0.4


def test_category_ancestors_make_sibling_categories_closer() -> None:
    knives = content_vector(CatalogItem("a", category="home > kitchen > knives"))
    pans = content_vector(CatalogItem("b", category="home/kitchen/pans"))
    tools = content_vector(CatalogItem("c", category="garden > tools"))
    # 2 of 3 path features shared (cosine 2/3 before the projection's noise) against none.
    assert knives @ pans > knives @ tools + 0.3


def test_text_case_and_spacing_do_not_change_the_vector() -> None:
    loud = CatalogItem("x", "ACME RED KETTLE 1.7L", " HOME>Kitchen ", " ACME ", 29.0, tags=("Red",))
    assert to_bytes(content_vector(loud)) == to_bytes(content_vector(KETTLE))


def test_an_item_without_metadata_gets_a_stable_vector_of_its_own() -> None:
    bare_a, bare_b = CatalogItem("bare-a"), CatalogItem("bare-b")
    assert unit(content_vector(bare_a))
    assert to_bytes(content_vector(bare_a)) == to_bytes(content_vector(CatalogItem("bare-a")))
    assert content_vector(bare_a) @ content_vector(bare_b) < 0.9


def test_price_bands_are_log_scale_and_overlap() -> None:
    assert set(price_bands(40.0)) & set(price_bands(45.0))
    assert not set(price_bands(40.0)) & set(price_bands(160.0))
    assert not set(price_bands(1.0)) & set(price_bands(1000.0))
    cheap, near, far = (
        content_vector(CatalogItem(i, price=p)) for i, p in (("a", 40), ("b", 44), ("c", 900))
    )
    assert cheap @ near > cheap @ far


def test_embedding_of_the_index_dimension_is_used_as_it_is() -> None:
    raw = np.arange(1, DIM + 1, dtype=np.float32)
    assert np.allclose(embedding_vector(raw.tolist()), raw / np.linalg.norm(raw))


def test_embedding_of_another_length_is_projected_keeping_similar_ones_close() -> None:
    rng = np.random.default_rng(7)
    base = rng.standard_normal(300)
    near = base + 0.1 * rng.standard_normal(300)
    other = rng.standard_normal(300)
    a, b, c = (embedding_vector(e.tolist()) for e in (base, near, other))
    assert unit(a) and a @ b > 0.9 and abs(a @ c) < 0.6
    assert to_bytes(embedding_vector(base.tolist())) == to_bytes(a)


def test_zero_or_bad_embedding() -> None:
    assert embedding_vector([0.0] * 10) is None
    assert to_bytes(item_vector(KETTLE, [0.0] * 10)) == to_bytes(content_vector(KETTLE))
    with pytest.raises(ValueError):
        embedding_vector([1.0, float("nan")])


def test_item_vector_uses_or_blends_the_embedding() -> None:
    emb = np.random.default_rng(1).standard_normal(DIM).tolist()
    alone = item_vector(KETTLE, emb)
    assert np.allclose(alone, embedding_vector(emb))
    half = item_vector(KETTLE, emb, embedding_weight=0.5)
    assert unit(half)
    assert half @ content_vector(KETTLE) > alone @ content_vector(KETTLE)
    assert to_bytes(item_vector(KETTLE)) == to_bytes(content_vector(KETTLE))


def test_blend_weights_and_renormalises() -> None:
    a, c = content_vector(KETTLE), content_vector(SHOE)
    assert np.allclose(blend(a, c, 0.0), a) and np.allclose(blend(a, c, 1.0), c)
    mixed = blend(a, c, 0.3)
    assert unit(mixed) and mixed @ a > mixed @ c
    assert np.allclose(blend(a, None, 0.7), a)
    assert np.allclose(blend(a, -a, 0.5), a)  # they cancel out: keep the content vector
    with pytest.raises(ValueError):
        blend(a, c, 1.5)


def test_behaviour_vector_is_the_score_weighted_mean_of_neighbours() -> None:
    a, c = content_vector(KETTLE), content_vector(SHOE)
    mostly_a = behaviour_vector([(a, 9.0), (c, 1.0), (c, 0.0), (c, -5.0)])
    assert mostly_a is not None and unit(mostly_a)
    assert mostly_a @ a > 0.9 > mostly_a @ c
    assert behaviour_vector([]) is None
    assert behaviour_vector([(a, 0.0)]) is None


def test_bytes_round_trip_and_length_check() -> None:
    v = content_vector(KETTLE)
    assert np.array_equal(from_bytes(to_bytes(v), DIM), v)
    with pytest.raises(ValueError):
        from_bytes(to_bytes(v), DIM + 1)
