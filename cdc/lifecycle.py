"""The watcher's lifecycle: signals and the settings a running watcher can take over.

SIGTERM/SIGINT ask for a stop after the current batch (its checkpoint and a last status
update; a second one stops at once, without it); SIGHUP asks for a reload of
:class:`LiveSettings`. The handlers only set flags (logging from a signal handler can
deadlock); ``cdc.watch`` acts on them between reads, within half a second.
"""

from __future__ import annotations

import signal
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
