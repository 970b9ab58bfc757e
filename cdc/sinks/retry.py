"""Sink failures: their classification, and a wrapper that retries a sink with backoff.

Every sink translates its client's errors into :class:`SinkUnavailable` (server down, timeout,
connection lost, authentication refused: worth retrying, since an operator can fix each
while the watcher waits) or a non-retryable :class:`~cdc.errors.CdcError` (bad
configuration).  :class:`RetryingSink` implements the same ``Sink`` protocol around another
sink: ``write`` retries the whole batch with exponential backoff and jitter and does not
return until the batch is written — so the watcher never moves the checkpoint past events
that are not durable — or raises :class:`SinkGaveUp` once the sink has been failing for
longer than the policy allows (``give_up_after``; ``None`` retries for ever).  ``max_event_bytes``
is retried the same way (the NATS sink connects to learn its server's limit).  A replayed
batch is harmless: the Redis and NATS sinks de-duplicate by idempotency key.

While it retries, the wrapper keeps :class:`SinkHealth` (healthy, consecutive failures, the
last error, failing since when, attempts failed and retried; :mod:`cdc.metrics` reports it)
and calls ``keepalive`` (if the watcher set one) between attempts, so the replication
connection can keep reporting its position.  The optional abilities of the ``Sink`` protocol are forwarded: ``keepalive`` reaches the inner sink
too, and ``store_writer`` is the inner sink's (a wrapped outbox stays exactly once).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from ..errors import CdcError
from .base import Batch, Sink, StoreWriter

log = logging.getLogger("cdc.sinks")

T = TypeVar("T")

#: Defaults of the retry policy (also the URL query options ``retry_*`` of ``--sink``).
DEFAULT_INITIAL_DELAY = 0.2
DEFAULT_MAX_DELAY = 30.0
DEFAULT_GIVE_UP_AFTER = 600.0


class SinkUnavailable(CdcError):
    """The sink's server cannot take the batch now (down, timeout, connection lost, auth)."""

    hint = "check that the server named in --sink is running and reachable; the watcher retries with backoff"
    retryable = True


class SinkGaveUp(CdcError):
    """The sink kept failing for longer than the retry policy allows."""

    hint = (
        "the checkpoint did not move past undelivered events: fix the sink's server and start "
        "`cdc watch` again (raise retry_give_up in --sink to wait longer)"
    )
    retryable = True


class StopSignal(Protocol):
    """What the wrapper polls between attempts (the watcher's ``StopFlag``)."""

    stopped: bool


@dataclass
class SinkHealth:
    """How the sink is doing (read by :mod:`cdc.metrics` for its counters and ``/healthz``)."""

    healthy: bool = True
    consecutive_failures: int = 0
    last_error: str | None = None
    failing_since: datetime | None = None
    last_success: datetime | None = None
    retries_total: int = 0  # failed attempts that were retried
    errors_total: int = 0  # failed attempts


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: the n-th wait is drawn from
    ``[(1 - jitter) * d, d]`` where ``d = min(max_delay, initial_delay * multiplier**n)``."""

    initial_delay: float = DEFAULT_INITIAL_DELAY
    max_delay: float = DEFAULT_MAX_DELAY
    multiplier: float = 2.0
    jitter: float = 0.5
    give_up_after: float | None = DEFAULT_GIVE_UP_AFTER  # seconds of failure; None = never

    def delay(self, attempt: int, rand: float) -> float:
        d = min(self.max_delay, self.initial_delay * self.multiplier**attempt)
        return d * (1.0 - self.jitter * rand)


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, CdcError):
        return exc.retryable
    return isinstance(exc, OSError | TimeoutError)


def one_line(exc: BaseException) -> str:
    """The cause alone (a CdcError's hint would promise retries that have just ended)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class RetryingSink:
    """``inner`` with retries: ``write`` returns once the batch is written, or raises."""

    def __init__(
        self,
        inner: Sink,
        policy: RetryPolicy | None = None,
        *,
        stop: StopSignal | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.policy = policy or RetryPolicy()
        self.health = SinkHealth()
        self.stop = stop  # a StopFlag: stop retrying when the watcher is told to stop
        self._keepalive: Callable[[], None] | None = None  # called between attempts
        self._sleep = sleep
        self._clock = clock
        self._rand = rand

    def write(self, batch: Batch) -> None:
        self._retrying(lambda: self.inner.write(batch))

    def max_event_bytes(self) -> int:
        # retried like a write: a sink may have to reach its server to know (NATS's max_payload)
        return self._retrying(self.inner.max_event_bytes)

    def close(self) -> None:
        self.inner.close()

    # -- the optional abilities, forwarded ---------------------------------------------------
    @property
    def keepalive(self) -> Callable[[], None] | None:
        return self._keepalive

    @keepalive.setter
    def keepalive(self, keepalive: Callable[[], None] | None) -> None:
        self._keepalive = keepalive
        self.inner.keepalive = keepalive  # an inner sink that waits on its own calls it too

    def store_writer(self) -> StoreWriter | None:
        return self.inner.store_writer()

    # -- internals -------------------------------------------------------------------------
    def _retrying(self, action: Callable[[], T]) -> T:
        """``action()``, retried while it fails with a retryable error, within the policy."""
        attempt = 0
        started: float | None = None
        while True:
            try:
                result = action()
            except Exception as exc:
                if not is_retryable(exc):
                    self._failed(exc)
                    raise
                now = self._clock()
                started = now if started is None else started
                self._failed(exc)
                limit = self.policy.give_up_after
                if limit is not None and now - started >= limit:
                    raise SinkGaveUp(
                        f"sink {self.inner.name} failed for {now - started:.0f}s "
                        f"({self.health.consecutive_failures} attempts); last error: {one_line(exc)}"
                    ) from exc
                self.health.retries_total += 1
                wait = self.policy.delay(attempt, self._rand())
                if limit is not None:
                    wait = max(0.0, min(wait, started + limit - now))
                log.warning(
                    "sink %s failed (attempt %d), retrying in %.1fs: %s",
                    self.inner.name,
                    attempt + 1,
                    wait,
                    one_line(exc),
                )
                self._wait(wait)
                attempt += 1
                continue
            self._succeeded(attempt)
            return result

    def _wait(self, seconds: float) -> None:
        deadline = self._clock() + seconds
        while True:
            if self.stop is not None and self.stop.stopped:
                raise SinkGaveUp(
                    f"stopped while sink {self.inner.name} was unavailable",
                    hint="nothing past the checkpoint was acknowledged; start `cdc watch` again",
                )
            if self._keepalive is not None:
                self._keepalive()
            left = deadline - self._clock()
            if left <= 0:
                return
            self._sleep(min(left, 0.5))

    def _failed(self, exc: BaseException) -> None:
        h = self.health
        h.healthy = False
        h.consecutive_failures += 1
        h.errors_total += 1
        h.last_error = one_line(exc)
        if h.failing_since is None:
            h.failing_since = datetime.now(UTC)

    def _succeeded(self, attempts: int) -> None:
        h = self.health
        if attempts:
            log.info("sink %s recovered after %d failed attempts", self.inner.name, attempts)
        h.healthy = True
        h.consecutive_failures = 0
        h.failing_since = None
        h.last_success = datetime.now(UTC)
