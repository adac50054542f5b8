"""Behavioural vectors: an item's catalogue vector blended toward its neighbours' vectors."""

from __future__ import annotations

import numpy as np

from stream_reco.candidates import behaviour


def unit(*xs: float) -> np.ndarray:
    v = np.array(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


BASE = {"a": unit(1, 0, 0), "b": unit(0, 1, 0), "c": unit(0, 0, 1)}


def test_an_item_moves_toward_the_items_used_with_it() -> None:
    [(item, vector, base)] = behaviour.blended(["a"], {"a": [("b", 3.0), ("c", 1.0)]}, BASE)
    assert item == "a" and base is BASE["a"]
    assert np.isclose(np.linalg.norm(vector), 1.0)
    assert vector @ BASE["b"] > vector @ BASE["c"] > 0  # the stronger neighbour pulls more
    assert vector @ BASE["a"] > vector @ BASE["b"]  # the catalogue still decides


def test_items_without_a_base_or_usable_neighbours_are_left_alone() -> None:
    rows = {"a": [("a", 5.0), ("zz", 1.0)], "zz": [("b", 1.0)], "b": []}
    assert behaviour.blended(["a", "zz", "b"], rows, BASE) == []


def test_blending_starts_from_the_base_every_round() -> None:
    rows = {"a": [("b", 1.0)]}
    first = behaviour.blended(["a"], rows, BASE)[0][1]
    again = behaviour.blended(["a"], rows, {**BASE})[0][1]
    assert np.allclose(first, again)
