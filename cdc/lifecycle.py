"""The watcher's lifecycle: signals, the settings a running watcher can take over, and the
waits between its reconnects.

SIGTERM/SIGINT ask for a stop after the current batch (its checkpoint and a last status
update; a second one stops at once, without it); SIGHUP asks for a reload of
:class:`LiveSettings`. The handlers only set flags (logging from a signal handler can
deadlock); ``cdc.watch`` acts on them between reads, within half a second, and :func:`pause`
notices them within a tenth of a second while the watcher waits to reconnect (:class:`Backoff`).
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from .tail import StopFlag


@dataclass(frozen=True)
class LiveSettings:
    """What SIGHUP can change in a running watcher (cdc.config.LIVE_SETTINGS)."""

    log_level: str
    progress_interval: float
    status_interval: float
    heartbeat_interval: float
    batch_max_events: int
    batch_max_transactions: int
    batch_max_delay: float
    #: Settings that changed but take effect only after a restart.
    restart_needed: tuple[str, ...] = ()


class Signals(StopFlag):
    """SIGTERM/SIGINT: stop after the current batch (a second one: at once); SIGHUP: reload.

    The handlers only set flags (logging from a signal handler can deadlock); the loop acts on
    them between reads, within half a second."""

    def __init__(self) -> None:
        super().__init__()
        self.reason: str | None = None
        self.reload_requested = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)

    def request_stop(self, reason: str) -> None:
        self.reason = self.reason or reason
        self.stopped = True

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        if self.stopped:
            raise KeyboardInterrupt  # the second one: now, without the last checkpoint
        self.request_stop(signal.Signals(signum).name)

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self.reload_requested = True


class Backoff:
    """Capped exponential backoff with full jitter: the n-th wait of a run of failures is drawn
    uniformly from [0, min(cap, initial · 2^(n−1))], so watchers that lost one server together do
    not come back together. :meth:`reset` after an attempt that got somewhere."""

    def __init__(self, initial: float, cap: float, draw: Callable[[], float] = random.random) -> None:
        self.initial, self.cap = initial, cap
        self.attempt = 0
        self._draw = draw

    def bound(self) -> float:
        """The upper bound of the next wait."""
        return float(min(self.cap, self.initial * 2 ** min(self.attempt, 62)))

    def next(self) -> float:
        """The next wait, in seconds (and one attempt more)."""
        wait = self.bound() * self._draw()
        self.attempt += 1
        return wait

    def reset(self) -> None:
        self.attempt = 0


def pause(stop: StopFlag, seconds: float) -> bool:
    """Wait ``seconds`` unless a stop comes first; True when the whole wait passed."""
    deadline = time.monotonic() + seconds
    while not stop.stopped:
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        time.sleep(min(0.1, left))
    return False
