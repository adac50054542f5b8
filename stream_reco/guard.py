"""The processing-error policy: wait out store outages, dead-letter only the message that fails."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from stream_reco import logs
from stream_reco.errors import ERRORS, StoreError, StoreRewound
from stream_reco.messages import Message, Out

log = logging.getLogger(__name__)

Work = Callable[[list[Message]], Awaitable[list[Out]]]
Reject = Callable[[Message, str], Out]
MAX_PAUSE_S = 10.0  # an outage is retried at least this often, however long it lasts


async def guarded(
    msgs: list[Message], work: Work, reject: Reject, pause: float = 0.25
) -> list[Out]:
    """Run `work` on a batch. A store outage is retried until it passes (the batch is not acked
    meanwhile, so nothing is lost), each pause twice the last up to MAX_PAUSE_S; any other
    failure is narrowed down one message at a time and only the message that still fails
    becomes a dead letter. (`work` keeps failures after an event is applied to itself: see
    pipeline.handle_events.)"""
    wait = pause
    while True:
        try:
            done = await work(msgs)
            logs.PROCESSING.ok()  # one attribute check while all is well
            return done
        except StoreRewound:
            raise  # not this batch's fault: its consumer reads again from the store's offsets
        except StoreError as exc:
            ERRORS["store"] += 1
            logs.REDIS.failed("holding a batch", exc)  # rate-limited: an outage is one line
            await asyncio.sleep(wait)
            wait = min(wait * 2, MAX_PAUSE_S)
        except Exception as exc:
            if len(msgs) > 1:
                outs: list[Out] = []
                for m in msgs:  # redoing applied events is safe: their offsets say so
                    outs += await guarded([m], work, reject, pause)
                return outs
            ERRORS["internal"] += 1
            # Rate-limited, by exception type, its text masked (it may quote the message); the
            # dead letter itself carries the whole reason, and DEBUG the traceback.
            logs.PROCESSING.failed(type(exc).__name__, logs.reason_kind(str(exc)))
            log.debug("dead-lettered after an internal error", exc_info=exc)
            return [reject(msgs[0], f"internal error: {type(exc).__name__}: {exc}")]
