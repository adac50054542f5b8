"""`stream-reco inspect`: stored state as JSON, and a clear word when there is none."""

from __future__ import annotations

import argparse
import asyncio
import sys

import orjson

from stream_reco import runtime
from stream_reco.config import ENV, Settings
from stream_reco.errors import ConfigError
from stream_reco.ranking import blend
from stream_reco.ranking.model import SCALE, ModelFormatError, Weights
from stream_reco.security import masked_url
from stream_reco.storage.protocol import Store
from stream_reco.storage.redis_store import RedisStore


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Exit 0 with the state as JSON; 1 when the session is unknown (or no model is published)
    in a store that holds data; 2 when nothing at all is stored under the key prefix (most
    often the wrong prefix)."""

    async def look() -> object:
        store = RedisStore.connect(settings)
        try:
            await store.check_format(upgrade=False)  # a look never writes
            if not await store.holds_anything():
                raise ConfigError(_nothing_stored(settings))
            if args.model:
                return await _deployed_model(store, settings)
            if not args.session:
                return await store.inspect_item(args.item, n=args.n)
            session = await store.read_session(args.session)
            if session.events or session.recent or session.cart or session.purchased:
                return session.to_json()
            return await _no_session(store, settings, args.session)
        finally:
            await store.close()

    found = asyncio.run(look())
    if isinstance(found, str):
        print(f"stream-reco: {found}", file=sys.stderr)
        return 1
    print(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())
    return 0


def _nothing_stored(settings: Settings) -> str:
    prefix, url = ENV["key_prefix"], ENV["redis_url"]
    return (
        f"nothing is stored under key prefix {settings.key_prefix!r} in Redis at "
        f"{masked_url(settings.redis_url)}: no worker with this prefix has applied an event, "
        "a catalogue record or a rules message there. Set "
        f"{prefix} (and {url}) to what the worker runs with; the prefix is a setting of its "
        f"own, not derived from {ENV['app_id']}"
    )


async def _no_session(store: Store, settings: Settings, session_id: str) -> str:
    applied = await store.applied_count()
    where = f"no session {session_id!r} under key prefix {settings.key_prefix!r}"
    if not applied:
        return f"{where}: the store there holds a catalogue or rules, but no events yet"
    ttl = f"{ENV['session_ttl_s']}={settings.session_ttl_s}"
    return (
        f"{where} (the store there has applied {applied} events; a session is forgotten "
        f"{ttl} seconds after its last event)"
    )


async def _deployed_model(store: Store, settings: Settings) -> dict[str, object] | str:
    """The published learned ranker, and whether workers with these settings rank with it."""
    raw = await store.read_published(runtime.MODEL)
    where = f"under key prefix {settings.key_prefix!r}"
    if raw is None:
        return (
            f"no model published yet {where}: the worker holding the learner lease publishes "
            "one once it has learned from examples (from the event stream and from shown "
            "lists); until then the fixed blend ranks"
        )
    try:
        model = Weights.from_json(raw)
    except ModelFormatError as exc:
        return f"the model published {where} cannot be read ({exc}): workers rank with the blend"
    return {
        "version": model.version,
        "examples": model.examples,
        "edge": model.edge,
        "ranks": runtime.Runtime().model_ready(settings, model),
        "because": _model_verdict(settings, model),
        "weights": dict(sorted(model.weights.items())),
        "blend": dict(sorted(blend.for_settings(settings).items())),
        # A model starts from the blend times this (the same order, softmax-ready scores):
        # compare its weights with the blend's scaled by it.
        "blend_scale": SCALE,
    }


def _model_verdict(settings: Settings, model: Weights) -> str:
    """Why workers do or do not rank with this model (Runtime.model_ready's conditions)."""
    if not settings.learned_ranker:
        return (
            f"{ENV['learned_ranker']} is off: workers rank with the fixed blend, and the model "
            "keeps learning so that switching it on starts from a trained one"
        )
    short: list[str] = []
    if model.examples < settings.model_min_examples:
        short.append(
            f"it has seen {model.examples} examples, fewer than "
            f"{ENV['model_min_examples']}={settings.model_min_examples}"
        )
    if model.edge <= 0:
        short.append(f"its edge over the blend is {model.edge:+.4f}, not above 0")
    if short:
        return "workers rank with the fixed blend: " + "; ".join(short)
    return (
        f"workers rank with it: {model.examples} examples seen (at least "
        f"{settings.model_min_examples}) and it orders recent examples better than the blend"
    )
