"""How a bench run stops on Ctrl-C, SIGINT or SIGTERM: at once, and never halfway through its
cleanup."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """A stop signal reached the bench: it unwinds as after Ctrl-C (the command exits 130)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"{signal.Signals(signum).name} received")
        self.signum = signum


class StopSignals:
    """While entered (in the main thread), SIGINT and SIGTERM raise `Stopped` wherever the run
    is, so its `finally` blocks remove what it made.

    Installed whatever the inherited disposition: a command started with `&` by a script (a
    shell without job control) inherits SIGINT *ignored*, and Python then never reacts to it;
    SIGTERM's default kills the process with no cleanup and orphans its worker children.
    A signal inside `hold()` is raised when the block ends (a started worker is always
    recorded for cleanup); once `cleaning()` was called, or after the first stop, further
    signals are only reported, so the cleanup always runs to its end.
    """

    def __init__(self) -> None:
        self.received: int | None = None  # the first stop signal, if any
        self._previous: dict[int, Any] = {}
        self._holds = 0
        self._held = False  # a signal arrived inside hold() and is not raised yet
        self._cleaning = False

    def __enter__(self) -> StopSignals:
        # Python lets only the main thread install handlers; elsewhere the caller's stay.
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.received is not None or self._cleaning:
            _report(
                f"stream-reco bench: {name} received: still removing the bench's workers, "
                "topics, groups and keys (SIGKILL would leave them behind)"
            )
            return
        self.received = signum
        if self._holds:
            self._held = True
            return
        raise Stopped(signum)

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """A block no stop signal may cut short: one arriving inside is raised at its end."""
        self._holds += 1
        try:
            yield
        finally:
            self._holds -= 1
        if self._held and not self._holds and self.received is not None:
            self._held = False
            raise Stopped(self.received)

    def cleaning(self) -> None:
        """From now on stop signals are reported and ignored: the cleanup has begun."""
        self._cleaning = True
        self._held = False


def no_hold() -> contextlib.AbstractContextManager[None]:
    """`hold` where no StopSignals is installed."""
    return contextlib.nullcontext()


Hold = Callable[[], contextlib.AbstractContextManager[None]]


def _report(text: str) -> None:
    # Straight to the descriptor: a handler that used sys.stderr while the interrupted code
    # was writing to it would hit a reentrant call on its buffer.
    with contextlib.suppress(OSError):
        os.write(2, f"{text}\n".encode())
