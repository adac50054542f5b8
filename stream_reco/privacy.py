"""The right to be forgotten: forget requests (command line and `reco-privacy`), what a forget
removes, and its audit record, which names nobody."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import orjson

from stream_reco.config import Settings
from stream_reco.errors import ERRORS
from stream_reco.events import (
    BRACES,
    CONTROL,
    MAX_ID_LEN,
    Rejected,
    load_json,
    pseudonym,
)
from stream_reco.experiments import report
from stream_reco.ranking.policy import RulesConfig
from stream_reco.storage.forget import GENTLE_COUNT, GENTLE_PAUSE_S, TOMBSTONE_TTL_S, Eraser
from stream_reco.storage.redis_store import RedisStore

log = logging.getLogger(__name__)
SESSION_KEY = "session:"  # a reco-privacy key naming a session, not a user
AUDIT = "audit"  # Keys.global_ name of the audit stream
AUDIT_KEY = "audit:key"  # the audit hashes' key when STREAM_RECO_USER_ID_KEY is not set
APPLIED = "privacy:applied"  # Keys.global_ hash: per reco-privacy partition the last offset done
HASH_CHARS = 32


@dataclass(frozen=True, slots=True)
class Forget:
    """Whom to forget: a user (and every session of theirs) or one session."""

    subject: str  # "user" or "session"
    id: str  # as sent: a user id is pseudonymised by `forget` when a key is set
    requested_by: str


def decode_forget(
    key: bytes | None, raw: bytes | None, *, hashed: bool = False
) -> Forget | Rejected:
    """One `reco-privacy` message: value {"user_id" | "session_id", "requested_by"}; a key,
    when given, names the same subject (the user id, or session:<id>). `hashed`: user ids are
    pseudonymised (STREAM_RECO_USER_ID_KEY), so any user id is fine; else, as in events, it
    may not start with `}` (it is its Redis keys' hash tag)."""
    try:
        doc = load_json(raw or b"")
    except ValueError as exc:
        return Rejected(f"invalid forget request: {exc}")
    if not isinstance(doc, dict):
        return Rejected("invalid forget request: expected a JSON object")
    named = [n for n in ("user_id", "session_id") if doc.get(n) is not None]
    if len(named) != 1:
        return Rejected("invalid forget request: give exactly one of user_id and session_id")
    subject = "user" if named == ["user_id"] else "session"
    problem = _bad_id(doc[named[0]], named[0], braces=subject == "session")
    if not problem and subject == "user" and not hashed and doc["user_id"].startswith("}"):
        problem = "user_id starts with }, which ends the Redis key's hash tag (as in events)"
    problem = problem or _bad_id(doc.get("requested_by"), "requested_by", braces=False)
    if problem:
        return Rejected(f"invalid forget request: {problem}")
    req = Forget(subject, doc[named[0]], doc["requested_by"])
    expected = req.id if subject == "user" else SESSION_KEY + req.id
    if key and key != expected.encode():
        return Rejected(f"invalid forget request: the key does not name its {named[0]}")
    return req


def _bad_id(value: Any, name: str, *, braces: bool) -> str | None:
    if not isinstance(value, str) or not value:
        return f"{name} must be a non-empty string"
    if len(value) > MAX_ID_LEN or CONTROL.search(value) or (braces and BRACES.search(value)):
        return f"{name} must be 1..{MAX_ID_LEN} characters without control characters or braces"
    return None


@dataclass(frozen=True, slots=True)
class At:
    """Where a forget request was read: its topic and partition (`marker`) and offset."""

    marker: str
    offset: int


async def done_before(store: RedisStore, at: At) -> bool:
    """Whether the request at `at` was forgotten and audited already (a redone batch)."""
    key = store.keys.global_(APPLIED)
    got = await store.retry("forget_applied", lambda: store.client.hget(key, at.marker))
    return got is not None and at.offset <= int(got)


async def forget(
    store: RedisStore,
    settings: Settings,
    req: Forget,
    *,
    scan: bool = True,
    later: bool = False,
    at: At | None = None,
    rules: RulesConfig | None = None,
) -> dict[str, Any]:
    """Remove everything stored about the subject (docs/privacy.md lists it), write the audit
    record to the audit stream (once per `at`, the request's Kafka position) and the log, and
    return it. First what the subject's keys name (the user's listed sessions and keys, each
    session's item lists): no SCAN, so its time does not grow with the store. Then, with
    `scan`, the safety net: live sessions whose info names the user though the profile does
    not list them, and every item's kNN list that still holds one of the sessions (two SCANs
    of the keyspace); with `later` instead, the same in a background task in small steps
    (`pending`). Every Redis call under the store's retry: an outage raises StoreError."""
    started = time.perf_counter()
    stored = pseudonym(settings.user_id_key, req.id) if settings.user_id_key else req.id
    if rules is None:
        rules = await store.retry("forget_rules", lambda: report.current_rules(store, settings))
    experiments = [exp.name for exp in rules.defined()]
    eraser = Eraser(store.client, store.keys)
    sids, removed = await store.retry(
        "forget", lambda: _named(store, eraser, req, stored, experiments)
    )
    named_ms = (time.perf_counter() - started) * 1000
    if scan:
        more, also = await store.retry(
            "forget_scan", lambda: _rest(store, eraser, req, stored, experiments, sids)
        )
        sids, removed = [*sids, *more], removed + also
    subject_hash = await _subject_hash(store, settings, req)
    record = {
        "ts": int(time.time() * 1000),
        "requested_by": req.requested_by,
        "subject": req.subject,
        "subject_hash": subject_hash,
        "sessions": len(sids),
        "removed": {kind: n for kind, n in sorted(removed.items()) if n},
        "keys_removed": sum(n for kind, n in removed.items() if not kind.endswith("membership")),
        "pseudonymised": bool(settings.user_id_key),
        "scanned": scan,
        "scan_later": later and not scan,
        "named_ms": round(named_ms, 3),
        "took_ms": round((time.perf_counter() - started) * 1000, 3),
    }
    record["audit_id"] = await _write_audit(store, settings, record, at)
    log.info("forget done: %s", orjson.dumps(record).decode())
    if later and not scan:
        gentle = Eraser(store.client, store.keys, count=GENTLE_COUNT, pause=GENTLE_PAUSE_S)
        _start(_scan_later(store, gentle, req, stored, experiments, sids, subject_hash))
    return record


async def _named(
    store: RedisStore, eraser: Eraser, req: Forget, stored: str, experiments: list[str]
) -> tuple[list[str], Counter[str]]:
    """Pass 1: what the subject's keys name."""
    user = req.subject == "user"
    sids = await eraser.listed(stored) if user else [req.id]
    removed = await eraser.sessions(sids)
    if user:
        removed += await eraser.user(stored)
    removed["experiment"] += await store.experiments.forget(experiments, sids, TOMBSTONE_TTL_S)
    return sids, removed


async def _rest(
    store: RedisStore,
    eraser: Eraser,
    req: Forget,
    stored: str,
    experiments: list[str],
    sids: list[str],
) -> tuple[list[str], Counter[str]]:
    """Pass 2, the safety net: two SCANs of the keyspace."""
    user = req.subject == "user"
    more = [s for s in await eraser.live(stored) if s not in sids] if user else []
    removed = await eraser.sessions(more)
    removed["experiment"] += await store.experiments.forget(experiments, more, TOMBSTONE_TTL_S)
    removed["sknn_membership"] += await eraser.sweep([*sids, *more])
    return more, removed


# The worker's background scans: held here so none is collected unfinished; each one that
# fails or is cancelled is counted (ERRORS forget_scan_failed) and logged, never dropped.
_LATER: set[asyncio.Task[None]] = set()


def _start(coro: Coroutine[Any, Any, None]) -> None:
    task = asyncio.get_running_loop().create_task(coro)
    _LATER.add(task)
    task.add_done_callback(_finished)


def _finished(task: asyncio.Task[None]) -> None:
    _LATER.discard(task)
    problem = "cancelled" if task.cancelled() else task.exception()
    if problem is not None:
        ERRORS["forget_scan_failed"] += 1
        log.error(
            "forget scan %s: run `stream-reco forget` for the subject again (its audit "
            "record's subject_hash identifies it) to finish what it removes",
            problem if isinstance(problem, str) else f"failed: {problem!r}",
        )


def pending() -> int:
    """Background scans still running in this process."""
    return len(_LATER)


async def drain() -> None:
    """Wait for this process's background scans (tests, shutdown)."""
    while _LATER:
        await asyncio.gather(*list(_LATER), return_exceptions=True)


async def _scan_later(
    store: RedisStore,
    eraser: Eraser,
    req: Forget,
    stored: str,
    experiments: list[str],
    sids: list[str],
    subject_hash: str,
) -> None:
    """Pass 2 of a forget from `reco-privacy`, in small steps with pauses between them."""
    started = time.perf_counter()
    more, removed = await store.retry(
        "forget_scan", lambda: _rest(store, eraser, req, stored, experiments, sids)
    )
    done = {
        "subject_hash": subject_hash,
        "sessions": len(more),
        "removed": {kind: n for kind, n in sorted(removed.items()) if n},
        "took_ms": round((time.perf_counter() - started) * 1000, 3),
    }
    log.info("forget scan done: %s", orjson.dumps(done).decode())


async def _subject_hash(store: RedisStore, settings: Settings, req: Forget) -> str:
    """A keyed hash of the subject: whoever holds the key can check that a given person was
    forgotten, nobody can read the person from the record."""
    key = settings.user_id_key or await _audit_key(store)
    text = f"{req.subject}:{req.id}".encode()
    return hmac.new(key.encode(), text, hashlib.sha256).hexdigest()[:HASH_CHARS]


async def _audit_key(store: RedisStore) -> str:
    """The store's own audit key, made once (the first forget) and kept without expiry."""
    client = store.client
    name = store.keys.global_(AUDIT_KEY)

    async def run() -> str:
        await client.set(name, secrets.token_hex(32), nx=True)
        return str((await client.get(name)).decode())

    return await store.retry("forget_audit_key", run)


# KEYS: the audit stream, the applied-offsets hash (both {g}); ARGV: the request's marker and
# offset, the stream's MAXLEN, then the record's fields. One step: the record is appended at
# most once per Kafka offset, however often its batch is redone. Returns its id, or false.
AUDIT_ONCE = """
local at = redis.call('HGET', KEYS[2], ARGV[1])
if at and tonumber(ARGV[2]) <= tonumber(at) then return false end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 4))
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return id
"""


async def _write_audit(
    store: RedisStore, settings: Settings, record: dict[str, Any], at: At | None
) -> str:
    """The record appended to the audit stream: once per `at`; always without one (the
    command line)."""
    client = store.client
    stream = store.keys.global_(AUDIT)
    fields = {k: v if isinstance(v, str) else orjson.dumps(v) for k, v in record.items()}

    async def run() -> Any:
        if at is None:
            return await client.xadd(stream, fields, maxlen=settings.audit_max, approximate=True)
        flat = [x for kv in fields.items() for x in kv]
        keys = [stream, store.keys.global_(APPLIED)]
        args = [at.marker, at.offset, settings.audit_max, *flat]
        return await client.eval(AUDIT_ONCE, len(keys), *keys, *args)

    got = await store.retry("forget_audit", run)
    if got is None:
        return ""  # written before: this request's batch was redone
    return got.decode() if isinstance(got, bytes) else str(got)


async def audit_records(store: RedisStore, n: int = 100) -> list[dict[str, Any]]:
    """The newest `n` audit records, newest first, as written."""
    client = store.client
    stream = store.keys.global_(AUDIT)
    out: list[dict[str, Any]] = []
    got = await store.retry("audit_records", lambda: client.xrevrange(stream, count=n))
    for entry_id, fields in got:
        doc: dict[str, Any] = {"audit_id": entry_id.decode()}
        for k, v in fields.items():
            text = v.decode()
            name = k.decode()
            doc[name] = (
                text
                if name in ("requested_by", "subject", "subject_hash")
                else (orjson.loads(text))
            )
        out.append(doc)
    return out
