"""Pseudonymisation of user ids at the edge, forget requests, and the secret's secrecy."""

from __future__ import annotations

import orjson
import pytest
from redis.crc import key_slot

from stream_reco.client.wire import encode_event
from stream_reco.config import Settings
from stream_reco.events import Event, Rejected, Request, decode_event, decode_request, pseudonym
from stream_reco.privacy import Forget, decode_forget
from stream_reco.storage.keys import Keys

TS = 1_700_000_000_000
KEY = "k" * 32


def _event(user: str | None) -> bytes:
    doc = {"event_id": "e", "type": "view", "session_id": "s", "item_id": "i", "ts": TS}
    return orjson.dumps({**doc, "user_id": user})


def test_the_pseudonym_is_keyed_stable_and_hides_the_id() -> None:
    one = pseudonym(KEY, "alice@example.com")
    assert one == pseudonym(KEY, "alice@example.com") and len(one) == 32
    assert one != pseudonym(KEY, "bob@example.com")
    assert one != pseudonym("another key", "alice@example.com")
    assert "alice" not in one and int(one, 16) >= 0


def test_the_worker_decodes_user_ids_as_pseudonyms_only_with_a_key() -> None:
    keyed = decode_event(_event("alice"), user_key=KEY)
    plain = decode_event(_event("alice"))
    assert isinstance(keyed, Event) and isinstance(plain, Event)
    assert keyed.user_id == pseudonym(KEY, "alice") and plain.user_id == "alice"
    assert isinstance(none := decode_event(_event(None), user_key=KEY), Event)
    assert none.user_id is None
    raw = orjson.dumps({"request_id": "r", "session_id": "s", "user_id": "alice"})
    req = decode_request(raw, 10, 100, user_key=KEY)
    assert isinstance(req, Request) and req.user_id == pseudonym(KEY, "alice")
    # An invalid id is refused before hashing: the hash would hide what was wrong.
    assert isinstance(decode_event(_event(""), user_key=KEY), Rejected)


def test_the_client_checks_events_without_hashing_them() -> None:
    # The client has no key: it validates, and the worker hashes once.
    _, raw = encode_event(orjson.loads(_event("alice")))
    assert orjson.loads(raw)["user_id"] == "alice"


def test_the_key_is_a_secret_never_shown() -> None:
    s = Settings.from_env({"STREAM_RECO_USER_ID_KEY": "top-secret-key"})
    assert s.user_id_key == "top-secret-key"
    assert "top-secret-key" not in repr(s)
    # Child processes (workers) need it, as they need the other secrets.
    assert s.to_env()["STREAM_RECO_USER_ID_KEY"] == "top-secret-key"


@pytest.mark.parametrize(
    ("key", "doc", "want"),
    [
        (b"u-1", {"user_id": "u-1", "requested_by": "dpo"}, Forget("user", "u-1", "dpo")),
        (None, {"user_id": "u-1", "requested_by": "dpo"}, Forget("user", "u-1", "dpo")),
        (b"session:s-1", {"session_id": "s-1", "requested_by": "x"}, Forget("session", "s-1", "x")),
    ],
)
def test_forget_requests_decode(key: bytes | None, doc: dict[str, str], want: Forget) -> None:
    assert decode_forget(key, orjson.dumps(doc)) == want


@pytest.mark.parametrize(
    ("key", "raw", "words"),
    [
        (b"u", b"{", "not valid JSON"),
        (b"u", b"[]", "JSON object"),
        (b"u", orjson.dumps({"requested_by": "x"}), "exactly one"),
        (b"u", orjson.dumps({"user_id": "u", "session_id": "s", "requested_by": "x"}), "exactly"),
        (b"u", orjson.dumps({"user_id": "u"}), "requested_by"),
        (b"other", orjson.dumps({"user_id": "u", "requested_by": "x"}), "key"),
        (b"session:s", orjson.dumps({"session_id": "{s}", "requested_by": "x"}), "braces"),
        (b"s", orjson.dumps({"session_id": "s", "requested_by": "x"}), "key"),
    ],
)
def test_bad_forget_requests_are_refused(key: bytes, raw: bytes, words: str) -> None:
    got = decode_forget(key, raw)
    assert isinstance(got, Rejected) and words in got.reason, got


@pytest.mark.parametrize("user", ["}x", "}", "}:profile"])
def test_an_unhashed_user_id_that_ends_the_hash_tag_is_refused(user: str) -> None:
    # Unhashed, the id is the hash tag of the user's keys: `}x` would scatter them over slots.
    plain = decode_event(_event(user))
    assert isinstance(plain, Rejected) and "starts with }" in plain.reason
    req = orjson.dumps({"request_id": "r", "session_id": "s", "user_id": user})
    assert isinstance(decode_request(req, 10, 100), Rejected)
    keyed = decode_event(_event(user), user_key=KEY)  # only the hash names keys then
    assert isinstance(keyed, Event) and keyed.user_id == pseudonym(KEY, user)
    doc = orjson.dumps({"user_id": user, "requested_by": "dpo"})
    assert isinstance(decode_forget(None, doc), Rejected)
    assert decode_forget(None, doc, hashed=True) == Forget("user", user, "dpo")


def test_a_braced_guid_as_user_id_keeps_the_users_keys_on_one_slot() -> None:
    got = decode_event(_event("{3F25-04E1}"))
    assert isinstance(got, Event) and got.user_id == "{3F25-04E1}"
    keys = Keys("p")
    slots = {key_slot(keys.user("{3F25-04E1}", n).encode()) for n in ("profile", "marks")}
    assert len(slots) == 1
    assert key_slot(keys.user("}x", "profile").encode()) != key_slot(
        keys.user("}x", "marks").encode()
    )  # what the check above refuses
