"""Evaluation input: CSV reading, synthetic event times, the time split."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_reco.evaluation.data import (
    SYNTHETIC_START_MS,
    SYNTHETIC_STEP_MS,
    DataError,
    Row,
    read_rows,
    read_sessions,
    split,
    write_sessions,
)


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "x.csv"
    p.write_text(text)
    return p


def test_file_order_becomes_event_time_without_timestamps(tmp_path: Path) -> None:
    logs = read_sessions(write(tmp_path, "session_id,item_id\na,1\na,2\nb,3\n"))
    assert [s.session_id for s in logs] == ["a", "b"]
    assert logs[0].items == ("1", "2") and logs[0].types == ("view", "view")
    assert logs[0].ts == (SYNTHETIC_START_MS, SYNTHETIC_START_MS + SYNTHETIC_STEP_MS)
    assert logs[1].ts == (SYNTHETIC_START_MS + 2 * SYNTHETIC_STEP_MS,)


def test_timestamps_in_seconds_and_types_are_read(tmp_path: Path) -> None:
    text = "session_id,item_id,timestamp,type\ns,9,1396437466.94,view\ns,8,1396437470,add_to_cart\n"
    [log] = read_sessions(write(tmp_path, text))
    assert log.ts == (1396437466940, 1396437470000)
    assert log.types == ("view", "add_to_cart")


@pytest.mark.parametrize(
    "text, words",
    [
        ("item_id\n1\n", "header"),
        ("session_id,item_id,timestamp\na,1,yesterday\n", "x.csv:2"),
        ("session_id,item_id,type\na,1,teleport\n", "teleport"),
        ("session_id,item_id\na,\n", "empty"),
    ],
)
def test_bad_files_get_a_clear_error_naming_the_line(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(DataError, match=words):
        read_rows(write(tmp_path, text))


def test_split_by_last_days_drops_unseen_test_items_and_short_sessions() -> None:
    day = 86_400_000
    rows = [
        Row("old", "A", 0, "view"),
        Row("old", "B", 1000, "view"),
        Row("new", "A", 5 * day, "view"),
        Row("new", "Z", 5 * day + 1, "view"),
        Row("new", "B", 5 * day + 2, "view"),
        Row("lonely", "Z", 5 * day + 3, "view"),
        Row("lonely", "A", 5 * day + 4, "view"),
    ]
    train, test = split(rows, days=1)
    assert [s.session_id for s in train] == ["old"]
    assert [(s.session_id, s.items) for s in test] == [("new", ("A", "B"))]


def test_split_that_leaves_nothing_is_an_error() -> None:
    with pytest.raises(DataError, match="leaves"):
        split([Row("a", "x", 0, "view"), Row("a", "y", 1, "view")], days=10)


def test_written_split_reads_back_the_same(tmp_path: Path) -> None:
    text = "session_id,item_id,timestamp\ns,1,100.5\ns,2,101\nt,2,102\n"
    logs = read_sessions(write(tmp_path, text))
    out = tmp_path / "out.csv"
    assert write_sessions(out, logs) == 3
    assert read_sessions(out) == logs
