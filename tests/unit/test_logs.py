"""Log summaries: one line per interval whatever the load, no message values, recoveries said."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream_reco import logs
from stream_reco.logs import ManualClock, Tally, Throttled, Trouble, reason_kind
from stream_reco.runtime import rules_changes

LOGGER = logging.getLogger("test.stream_reco.logs")


class Lines:
    """The records the test's logger wrote so far (not the worker's own summaries, which the
    module's tick and flush reach too)."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog

    def _mine(self) -> list[logging.LogRecord]:
        return [r for r in self.caplog.records if r.name == LOGGER.name]

    def __len__(self) -> int:
        return len(self._mine())

    def __getitem__(self, n: int) -> logging.LogRecord:
        return self._mine()[n]

    def __iter__(self) -> Iterator[logging.LogRecord]:
        return iter(self._mine())


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture) -> Lines:
    caplog.set_level(logging.DEBUG, logger=LOGGER.name)
    return Lines(caplog)


def texts(records: Lines) -> list[str]:
    return [r.getMessage() for r in records]


def test_a_reason_kind_keeps_the_problem_and_drops_the_values() -> None:
    assert reason_kind("invalid catalogue record: key 'k-1' does not match item_id 'sku-7'") == (
        "invalid catalogue record: key '…' does not match item_id '…'"
    )
    assert reason_kind("invalid event: ts=1700000000 is outside 946684800000..4102444800000") == (
        "invalid event: ts=… is outside …"
    )
    assert reason_kind("invalid event: type must be one of ['view', 'click'], got 'tele") == (
        "invalid event: type must be one of […], got '…'"
    )
    assert reason_kind("invalid event: not UTF-8") == "invalid event: not UTF-8"
    assert reason_kind('internal error: KeyError: "alice"') == "internal error: KeyError: '…'"
    assert len(reason_kind("x: " + "y" * 500)) == logs.KIND_CHARS


def test_escaped_and_cut_quotes_never_let_a_value_through() -> None:
    """Hostile values that close a naive quote early: repr and JSON escape the quote inside."""
    hostile = "x'SECRET-EMAIL@x.com\""
    prefix = "invalid event: type must be one of […], got "
    assert reason_kind(f"invalid event: type must be one of ['view'], got {hostile!r}") == (
        prefix + "'…'"
    )
    assert reason_kind(f"bad: {orjson.dumps(hostile).decode()} then 'b'") == "bad: '…' then '…'"
    assert reason_kind("got 'abc\\") == "got '…'"  # cut right after a backslash
    assert reason_kind('got "a\\"SECRET') == "got '…'"  # cut inside an escaped quote
    assert reason_kind("key 'a\\\\' SECRET 'b'") == "key '…' SECRET '…'"  # an escaped backslash


REASON = "invalid event: type must be one of ['view', 'click'], got "
# Quotes and backslashes, the characters that end a naive quote, often; then anything.
VALUES = st.text(alphabet="'\"\\aZ@. \n", min_size=1) | st.text(min_size=1)


@given(VALUES, st.data())
def test_no_quoted_value_survives_masking(value: str, data: st.DataObject) -> None:
    """Any value quoted as events.py quotes it (repr) or as JSON does, whole or cut short
    anywhere (reasons are clipped), masks to the same kind: nothing of it is left."""
    quoted = data.draw(st.sampled_from([repr(value), orjson.dumps(value).decode()]))
    cut = data.draw(st.integers(1, len(quoted)))
    kind = reason_kind(REASON + quoted[:cut])
    assert kind == "invalid event: type must be one of […], got '…'", (quoted[:cut], kind)


@given(VALUES, VALUES)
def test_two_quoted_values_mask_separately(first: str, second: str) -> None:
    kind = reason_kind(f"invalid catalogue record: key {first!r} does not match item_id {second!r}")
    assert kind == "invalid catalogue record: key '…' does not match item_id '…'"


def test_dead_letters_first_at_once_then_one_line_per_topic_per_interval(
    lines: Lines,
) -> None:
    clock = ManualClock()
    tally = Tally("dead letters", every_s=10, clock=clock, log=LOGGER)
    tally.add("events", "invalid event: not valid JSON")
    assert texts(lines) == ["dead letters from events: 1: 1 × invalid event: not valid JSON"]
    assert lines[0].levelno == logging.WARNING
    for n in range(40):
        clock.advance(0.1)
        tally.add("events", f"invalid event: ts={1_700_000_000 + n} is outside 0..9")
        tally.add("catalog", f"invalid catalogue record: key 'secret-{n}' does not match")
    tally.add("events", "invalid event: not valid JSON")
    tally.tick()
    assert len(lines) == 1, "nothing more before the interval ends"
    clock.advance(6.0)
    tally.tick()
    assert texts(lines)[1:] == [
        "dead letters from events: 41 in 9.9 s: 40 × invalid event: ts=… is outside …; "
        "1 × invalid event: not valid JSON",
        "dead letters from catalog: 40 in 9.9 s: "
        "40 × invalid catalogue record: key '…' does not match",
    ]
    assert "secret" not in "\n".join(texts(lines))
    clock.advance(60)
    tally.tick()
    assert len(lines) == 3, "a quiet interval writes nothing"


def test_counting_stays_bounded_and_names_the_most_frequent_kinds(
    lines: Lines,
) -> None:
    clock = ManualClock()
    tally = Tally("dead letters", every_s=10, clock=clock, log=LOGGER)
    tally.add("t", "warm-up")  # written at once; what follows waits for the interval
    for n in range(10_000):
        tally.add("t", f"kind {n % 7} of problem: detail {n!r}x{n}")
    assert sum(len(c) for c in tally._counts.values()) <= 2 * logs.MAX_KEYS + 1
    clock.advance(10)
    tally.tick()
    line = texts(lines)[-1]
    assert line.startswith("dead letters from t: 10000 in 10.0 s: ")
    assert line.count(" × ") == logs.TOP + 1 and line.endswith(" × other")
    counted = sum(int(part.split(" × ")[0]) for part in line.split(": ", 2)[2].split("; "))
    assert counted == 10_000


def test_an_outage_is_one_line_at_once_one_per_interval_and_one_recovery(
    lines: Lines,
) -> None:
    clock = ManualClock()
    redis = Trouble("Redis", every_s=10, clock=clock, log=LOGGER)
    redis.ok()
    assert not lines, "all is well: nothing to say"
    for _ in range(250):  # 25 s of failures, ten a second, from several calls
        redis.failed("apply_events", ConnectionError("Connection refused"))
        redis.failed("gather", ConnectionError("Connection refused"))
        clock.advance(0.1)
        redis.tick()
    got = texts(lines)
    assert got[0] == (
        "Redis trouble: apply_events failed: Connection refused "
        "(further failures: one line per 10 s)"
    )
    assert len(got) == 3 and all(r.levelno == logging.WARNING for r in lines)
    assert got[1].startswith("Redis trouble for 10 s: 199 failures since the last line (")
    assert "apply_events" in got[1] and "gather" in got[1]
    redis.ok()
    redis.ok()
    clock.advance(10)
    redis.tick()
    assert texts(lines)[3:] == [
        "Redis works again after 500 failures over 25.0 s; the last: Connection refused"
    ]
    assert lines[3].levelno == logging.INFO


def test_flapping_writes_at_most_one_line_per_interval(lines: Lines) -> None:
    clock = ManualClock()
    kafka = Trouble("Kafka producer", every_s=10, clock=clock, log=LOGGER)
    for _ in range(300):  # 30 s of a failure and a success every 0.1 s
        kafka.failed("delivery to responses", "Local: Message timed out")
        clock.advance(0.05)
        kafka.ok()
        clock.advance(0.05)
        kafka.tick()
    assert 2 <= len(lines) <= 4
    clock.advance(10)
    kafka.tick()
    assert texts(lines)[-1].startswith("Kafka producer works again after")


def test_a_recovery_line_waits_out_the_interval_and_a_relapse_cancels_it(
    lines: Lines,
) -> None:
    clock = ManualClock()
    step = Trouble("background step 'refresh'", every_s=10, clock=clock, log=LOGGER)
    step.failed("StoreError", "Redis unavailable")
    clock.advance(1)
    step.ok()  # too soon after the last line: held
    step.failed("StoreError", "Redis unavailable")  # relapse: the same trouble goes on
    clock.advance(10)
    step.tick()
    assert texts(lines)[1].startswith("background step 'refresh' trouble for 11 s: 1 failures")
    step.ok()  # just after a line: held until the interval ends
    assert len(lines) == 2
    clock.advance(10)
    step.tick()
    assert texts(lines)[-1].startswith("background step 'refresh' works again after 2 failures")


def test_the_first_failure_can_carry_its_trace(lines: Lines) -> None:
    step = Trouble("background step 'index'", clock=ManualClock(), log=LOGGER)
    try:
        raise ValueError("bad vector")
    except ValueError as exc:
        step.failed("ValueError", exc, trace=True)
    assert lines[0].exc_info is not None and lines[0].exc_info[1] is not None


def test_throttled_news_writes_the_latest_once_the_interval_ends(
    lines: Lines,
) -> None:
    clock = ManualClock()
    news = Throttled(every_s=60, clock=clock, log=LOGGER)
    for version in range(1, 31):  # one a second
        news.note("model v%d published", version)
        clock.advance(1)
    assert texts(lines) == ["model v1 published"]
    clock.advance(30)
    logs.tick()  # the module's tick reaches every live summary
    assert texts(lines)[1:] == ["model v30 published (and 28 earlier since the last line)"]
    logs.flush()
    assert len(lines) == 2


def test_flush_writes_what_is_held_back(lines: Lines) -> None:
    clock = ManualClock()
    tally = Tally("dead letters", clock=clock, log=LOGGER)
    tally.add("events", "invalid event: empty message")
    tally.add("events", "invalid event: empty message")
    logs.flush()
    assert texts(lines)[-1] == "dead letters from events: 1: 1 × invalid event: empty message"


def test_rules_changes_name_placements_and_fields_never_values() -> None:
    old = orjson.dumps({"default": {"category_cap": 2}, "cart": {"exclude": ["sku-secret"]}})
    new = orjson.dumps({"default": {"category_cap": 3, "mmr_lambda": 0.5}, "pdp": {"exclude": []}})
    assert rules_changes(old, new) == (
        "'cart' override removed; 'default' changed (category_cap, mmr_lambda); 'pdp' set (exclude)"
    )
    assert rules_changes(None, None) == "no change"
