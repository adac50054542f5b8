"""Right to be forgotten, pseudonymisation and retention on the real Redis (single node and
cluster) and through a worker: after a forget, no key or value names the user or a session."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson

from stream_reco import pipeline, privacy, runtime
from stream_reco.config import Settings
from stream_reco.events import decode_event, pseudonym
from stream_reco.experiments.store import Shown
from stream_reco.messages import Message, on_event_messages, on_privacy_messages
from stream_reco.runtime import Runtime
from stream_reco.simulator import Storefront, make_catalog
from stream_reco.storage import connect
from stream_reco.storage.apply import Position
from stream_reco.storage.forget import SESSION_KINDS, TOMBSTONE, TOMBSTONE_TTL_S
from stream_reco.storage.keys import Keys
from stream_reco.storage.redis_store import RedisStore
from tests.integration.conftest import Kafka, clear_store, run_cli, wait_session

TS = 1_750_000_000_000
EXPERIMENT = "privacy"
DEFINITION = {
    "salt": "p-1",
    "variants": [{"name": "a", "share": 0.5, "control": True}, {"name": "b", "share": 0.5}],
}
# Keys that live without a TTL: bounded in size and naming nobody (docs/privacy.md, Retention).
BOUNDED = (
    ":g:{g}:pop",
    ":g:{g}:clock",
    ":g:{g}:applied",
    ":g:{g}:offsets",
    ":g:{g}:examples",
    ":g:{g}:rules",
    ":g:{g}:model",
    ":g:{g}:audit",
    ":g:{g}:audit:key",
    ":g:{g}:privacy:applied",
    ":g:{g}:catalog:",
    ":g:{vectors}:",
    ":x:{x:",  # only the variants' sums: session records carry a TTL (checked below)
)
_n = itertools.count()


def _event(sid: str, item: str, user: str | None, kind: str = "view") -> dict[str, Any]:
    return {
        "event_id": f"ev-{uuid.uuid4().hex[:12]}",
        "type": kind,
        "session_id": sid,
        "item_id": item,
        "ts": TS + next(_n) * 1000,
        "user_id": user,
    }


@dataclasses.dataclass
class Person:
    """A user with sessions: some name the user in their events, one only in the profile."""

    user: str
    sessions: list[str]


async def _apply(store: RedisStore, settings: Settings, docs: list[dict[str, Any]]) -> None:
    msgs = [Message("events", None, None, None, orjson.dumps(d)) for d in docs]
    for n in range(0, len(msgs), 200):
        await on_event_messages(store, settings, msgs[n : n + 200])


async def _populate(store: RedisStore, settings: Settings, tag: str) -> Person:
    """A background shop, a person whose sessions share its items, their shown lists and
    experiment records, as the workers write them."""
    catalog = make_catalog(40, seed=3)
    items = [c["item_id"] for c in catalog]
    shop = Storefront(catalog, seed=4, run_id=f"bg{tag}", start_ms=TS).stream(concurrency=30)
    await _apply(store, settings, list(itertools.islice(shop, 600)))
    person = Person(f"user-{tag}-{uuid.uuid4().hex[:6]}", [])
    docs = []
    for s in range(3):
        sid = f"sess-{tag}-{uuid.uuid4().hex[:6]}-{s}"
        person.sessions.append(sid)
        for n in range(10):
            kind = "add_to_cart" if n == 7 else "purchase" if n == 9 else "view"
            docs.append(_event(sid, items[(s * 3 + n) % len(items)], person.user, kind))
    anonymous = f"sess-{tag}-{uuid.uuid4().hex[:6]}-anon"  # before login: no user_id
    person.sessions.append(anonymous)
    docs += [_event(anonymous, items[n], None) for n in range(4)]
    await _apply(store, settings, docs)
    await store.publish(
        runtime.RULES, runtime.store_update(None, f"experiment:{EXPERIMENT}", DEFINITION)
    )
    stored = pseudonym(settings.user_id_key, person.user) if settings.user_id_key else person.user
    c, keys = store.client, store.keys
    for sid in person.sessions:
        await store.remember_shown(sid, orjson.dumps({"id": "r", "items": [[items[0], {}]]}))
        await store.experiments.record(Shown(EXPERIMENT, "a", sid, f"r-{sid}", (items[0],), TS))
    # The anonymous session joined the user at login (the identity part lists it, as here).
    joined = keys.user(stored, "sessions")
    await c.zadd(joined, {anonymous: TS})
    await c.expire(joined, settings.session_ttl_s)
    return person


def _dump(settings: Settings) -> Iterator[tuple[str, bytes]]:
    """Every key under the prefix with its whole content, as bytes."""
    client = connect.sync_client(settings)
    try:
        for raw in client.scan_iter(match=f"{settings.key_prefix}:*", count=1000):
            key = raw.decode()
            kind = client.type(raw).decode()
            if kind == "string":
                value: Any = client.get(raw)
            elif kind == "hash":
                value = client.hgetall(raw)
            elif kind == "list":
                value = client.lrange(raw, 0, -1)
            elif kind == "set":
                value = sorted(client.smembers(raw))
            elif kind == "zset":
                value = client.zrange(raw, 0, -1)
            elif kind == "stream":
                value = client.xrange(raw)
            else:
                value = kind
            yield key, repr(value).encode()
    finally:
        client.close()


def _mentions(settings: Settings, *needles: str) -> list[str]:
    """Keys whose name or content holds any of the needles, but for a forget's tombstones
    (named by the id, holding nothing), whose TTL is checked instead: gone within minutes."""
    found = []
    client = connect.sync_client(settings)
    for key, value in _dump(settings):
        if key.endswith(f":{TOMBSTONE}") and value == repr(b"1").encode():
            assert 0 < client.ttl(key) <= TOMBSTONE_TTL_S, key
            continue
        for needle in needles:
            if needle in key or needle.encode() in value:
                found.append(f"{key} holds {needle}")
    client.close()
    return found


def _run(coro_fn: Any, settings: Settings) -> Any:
    async def go() -> Any:
        store = RedisStore.connect(settings)
        try:
            return await coro_fn(store)
        finally:
            await store.close()

    return asyncio.run(go())


def _needles(settings: Settings, person: Person) -> list[str]:
    out = [person.user, *person.sessions]
    if settings.user_id_key:
        out.append(pseudonym(settings.user_id_key, person.user))
    return out


def _forget_and_check(settings: Settings, tag: str) -> dict[str, Any]:
    person = _run(lambda st: _populate(st, settings, tag), settings)
    needles = _needles(settings, person)
    assert _mentions(settings, *needles), "the person should be in the store before"
    req = privacy.Forget("user", person.user, "test-dpo")
    record = _run(lambda st: privacy.forget(st, settings, req), settings)
    assert _mentions(settings, *needles) == []
    assert record["sessions"] == len(person.sessions)
    assert record["removed"]["user"] >= 1 and record["removed"]["shown"] == 4
    assert record["removed"]["experiment"] == 4 and record["removed"]["session"] >= 4 * 4
    assert record["removed"]["sknn_membership"] > 0
    audit = _run(lambda st: privacy.audit_records(st, 5), settings)
    assert audit[0]["subject_hash"] == record["subject_hash"]
    assert audit[0]["requested_by"] == "test-dpo" and audit[0]["subject"] == "user"
    # The background shop's aggregates stay.
    assert _run(lambda st: st.read_popular(5), settings)
    return record


def test_forget_user_leaves_no_key_or_value_about_them(own: Settings) -> None:
    # How long it takes is measured by docs/bench/forget_bench.py, not asserted here.
    record = _forget_and_check(own, "one")
    assert record["scanned"] is True and record["named_ms"] <= record["took_ms"]


def test_a_redelivered_batch_or_a_late_answer_does_not_bring_a_forgotten_user_back(
    own: Settings,
) -> None:
    person = f"user-back-{uuid.uuid4().hex[:6]}"
    sid = f"sess-back-{uuid.uuid4().hex[:6]}"
    docs = [_event(sid, f"back-item-{n}", person) for n in range(4)]
    events = [decode_event(orjson.dumps(d)) for d in docs]
    at: list[Position | None] = [Position("ev", 0, 10_000 + n) for n in range(4)]

    async def apply(store: RedisStore) -> None:
        rules = runtime.store_update(None, f"experiment:{EXPERIMENT}", DEFINITION)
        await store.publish(runtime.RULES, rules)
        await pipeline.handle_events(store, own, events, Runtime(), positions=at)  # type: ignore[arg-type]

    _run(apply, own)
    assert _mentions(own, person)
    _run(lambda st: privacy.forget(st, own, privacy.Forget("user", person, "t"), scan=False), own)
    assert _mentions(own, person, sid) == []
    # The same batch again (a rebalance): the profile step sees every event, redeliveries too.
    _run(apply, own)

    async def late(store: RedisStore) -> None:  # an answer computed before the forget
        await store.remember_shown(sid, orjson.dumps({"id": "r", "items": []}))
        await store.experiments.record(Shown(EXPERIMENT, "a", sid, "r-late", ("x",), TS))

    _run(late, own)
    users = Keys(own.key_prefix).user_pattern()[0] + person
    shown = Keys(own.key_prefix).session(sid, "shown")
    left = _mentions(own, person, sid)
    assert not [m for m in left if m.startswith(users) or m.startswith(shown) or ":x:{x:" in m]


def test_a_redone_privacy_batch_writes_one_audit_record_and_scans_later(own: Settings) -> None:
    person = _run(lambda st: _populate(st, own, "once"), own)
    doc = {"user_id": person.user, "requested_by": "once-dpo"}
    m = Message(own.topic_privacy, 0, 41, person.user.encode(), orjson.dumps(doc))

    async def handle(store: RedisStore) -> int:
        await on_privacy_messages(store, own, [m])
        running = privacy.pending()  # the keyspace scans run after the batch, in small steps
        await privacy.drain()
        return running

    assert _run(handle, own) == 1
    assert _mentions(own, *_needles(own, person)) == []
    _run(handle, own)  # the batch again: not forgotten nor audited twice
    audit = _run(lambda st: privacy.audit_records(st, 20), own)
    mine = [a for a in audit if a["requested_by"] == "once-dpo"]
    assert len(mine) == 1 and mine[0]["scanned"] is False and mine[0]["scan_later"] is True
    assert mine[0]["removed"]["sknn_membership"] > 0


def test_forget_user_on_a_redis_cluster(cluster: Settings) -> None:
    mine = dataclasses.replace(cluster, key_prefix=f"{cluster.key_prefix}-forget")
    try:
        _forget_and_check(mine, "cl")
    finally:
        clear_store(mine)


def test_with_a_user_id_key_no_raw_user_id_is_stored(own: Settings) -> None:
    keyed = dataclasses.replace(own, user_id_key="s3cret-for-tests").validate()
    person = _run(lambda st: _populate(st, keyed, "ps"), keyed)
    hashed = pseudonym(keyed.user_id_key, person.user)
    assert _mentions(keyed, person.user) == []
    assert _mentions(keyed, hashed), "the pseudonym is what the sessions carry"
    # The simulator's own shoppers sign in too: none of their ids is stored either.
    assert _mentions(keyed, *(f"user-{n}" for n in range(1000))) == []
    record = _run(
        lambda st: privacy.forget(st, keyed, privacy.Forget("user", person.user, "t")), keyed
    )
    assert record["pseudonymised"] is True and record["sessions"] == len(person.sessions)
    assert _mentions(keyed, *_needles(keyed, person)) == []


def test_forget_one_session_keeps_the_users_others(own: Settings) -> None:
    person = _run(lambda st: _populate(st, own, "ss"), own)
    gone, kept = person.sessions[0], person.sessions[1]
    req = privacy.Forget("session", gone, "t")
    record = _run(lambda st: privacy.forget(st, own, req), own)
    assert record["sessions"] == 1 and "user" not in record["removed"]
    assert _mentions(own, gone) == []
    assert _run(lambda st: st.read_session(kept), own).events == 10


def test_a_forgotten_session_that_gets_an_event_again_starts_fresh(own: Settings) -> None:
    person = _run(lambda st: _populate(st, own, "fr"), own)
    sid = person.sessions[0]
    before = _run(lambda st: st.read_session(sid), own)
    _run(lambda st: privacy.forget(st, own, privacy.Forget("session", sid, "t")), own)
    late = _event(sid, "LATE-ITEM", None)
    _run(lambda st: _apply(st, own, [late]), own)
    after = _run(lambda st: st.read_session(sid), own)
    assert before.events == 10 and after.events == 1
    assert [e.item_id for e in after.recent] == ["LATE-ITEM"]
    assert after.user_id is None  # nothing of the old session came back


def test_forget_from_the_command_line_prints_the_audit_record(own: Settings) -> None:
    person = _run(lambda st: _populate(st, own, "cli"), own)
    out = orjson.loads(run_cli(own, "forget", "--user", person.user, "--requested-by", "dpo-7"))
    assert out["subject"] == "user" and out["requested_by"] == "dpo-7"
    assert out["sessions"] == len(person.sessions) and out["audit_id"]
    assert not any(n in orjson.dumps(out).decode() for n in _needles(own, person))
    assert _mentions(own, *_needles(own, person)) == []


def test_forget_over_the_privacy_topic_through_a_worker(kafka: Kafka, settings: Settings) -> None:
    s = settings
    user, sids = (
        f"user-topic-{uuid.uuid4().hex[:6]}",
        [f"sess-topic-{uuid.uuid4().hex[:6]}-{n}" for n in range(2)],
    )
    for sid in sids:
        for n in range(3):
            kafka.send(s.topic_events, sid, _event(sid, f"topic-item-{n}", user))
    for sid in sids:
        wait_session(s, sid, 3)
    kafka.send(s.topic_privacy, user, {"user_id": user, "requested_by": "topic-test"})
    deadline = time.monotonic() + 20
    while _mentions(s, user, *sids):
        assert time.monotonic() < deadline, _mentions(s, user, *sids)
        time.sleep(0.1)
    audit = _run(lambda st: privacy.audit_records(st, 20), s)
    mine = [a for a in audit if a["requested_by"] == "topic-test"]
    assert mine and mine[0]["sessions"] == 2
    # A malformed request is a dead letter, not a stopped agent.
    kafka.send(s.topic_privacy, "x", {"requested_by": "nobody"})
    kafka.wait_for(
        lambda t, d: t == s.topic_deadletter and d.get("source_topic") == s.topic_privacy
    )


def test_every_key_has_a_ttl_or_is_a_bounded_aggregate(own: Settings) -> None:
    _run(lambda st: _populate(st, own, "ttl"), own)
    _run(lambda st: privacy.forget(st, own, privacy.Forget("session", "nobody", "t")), own)
    client = connect.sync_client(own)
    keys = Keys(own.key_prefix)
    head, tail = keys.session_pattern()
    unbounded, unknown = [], set()
    try:
        for raw in client.scan_iter(match=f"{own.key_prefix}:*", count=1000):
            key = raw.decode()
            if key.startswith(head):
                unknown.add(key.rsplit(tail, 1)[1])
            if client.ttl(raw) > 0:
                continue
            rest = key[len(own.key_prefix) :]
            experiment_record = rest.startswith(":x:{x:") and ":s:" in rest
            if experiment_record or not rest.startswith(BOUNDED):
                if not rest.startswith(":i:{") or not rest.endswith("}:meta"):
                    unbounded.append(key)
    finally:
        client.close()
    assert unbounded == []
    # Every name a session's keys carry is one forget deletes.
    assert unknown - set(SESSION_KINDS) - {TOMBSTONE} == set()


def test_the_scan_finds_sessions_the_profile_no_longer_lists(own: Settings) -> None:
    person = _run(lambda st: _populate(st, own, "sc"), own)
    named, anonymous = person.sessions[:3], person.sessions[3]
    client = connect.sync_client(own)
    client.delete(Keys(own.key_prefix).user(person.user, "sessions"))  # pushed out
    client.close()
    req = privacy.Forget("user", person.user, "t")
    quick = _run(lambda st: privacy.forget(st, own, req, scan=False), own)
    assert quick["sessions"] == 0 and _mentions(own, *named)
    full = _run(lambda st: privacy.forget(st, own, req), own)
    assert full["sessions"] == 3 and full["scanned"] is True
    assert _mentions(own, person.user, *named) == []
    # Named by neither its info nor a profile: the one session a forget cannot find.
    assert _mentions(own, anonymous)


def test_the_scan_takes_a_long_session_out_of_every_items_knn_list(own: Settings) -> None:
    short = dataclasses.replace(own, session_max_events=5).validate()
    sid = f"sess-long-{uuid.uuid4().hex[:6]}"
    docs = [_event(sid, f"long-item-{n}", None) for n in range(12)]
    _run(lambda st: _apply(st, short, docs), short)
    req = privacy.Forget("session", sid, "t")
    _run(lambda st: privacy.forget(st, short, req, scan=False), short)
    # Its first items are in neither its capped item set nor its recent events any more.
    left = _mentions(short, sid)
    assert left and all(":i:{long-item-" in m for m in left), left
    record = _run(lambda st: privacy.forget(st, short, req), short)
    assert record["removed"]["sknn_membership"] == len(left)
    assert _mentions(short, sid) == []
