"""The waits between a watcher's reconnects (:class:`cdc.lifecycle.Backoff`) and the pause that
a stop cuts short (:func:`cdc.lifecycle.pause`)."""

from __future__ import annotations

import threading

from cdc.lifecycle import Backoff, pause
from cdc.tail import StopFlag


def test_the_bound_doubles_up_to_the_cap_and_a_reset_starts_over() -> None:
    backoff = Backoff(0.5, 30.0, draw=lambda: 1.0)
    assert [backoff.next() for _ in range(9)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert backoff.attempt == 9
    backoff.reset()
    assert backoff.next() == 0.5 and backoff.attempt == 1


def test_full_jitter_draws_each_wait_below_its_bound() -> None:
    draws = iter([0.0, 0.25, 0.999])
    backoff = Backoff(1.0, 10.0, draw=lambda: next(draws))
    assert [backoff.next() for _ in range(3)] == [0.0, 0.5, 3.996]


def test_many_failures_never_overflow_the_bound() -> None:
    backoff = Backoff(0.5, 30.0, draw=lambda: 1.0)
    backoff.attempt = 10_000
    assert backoff.next() == 30.0


def test_pause_waits_the_whole_time_unless_stopped() -> None:
    stop = StopFlag()
    assert pause(stop, 0.05) is True
    threading.Timer(0.05, lambda: setattr(stop, "stopped", True)).start()
    assert pause(stop, 60.0) is False  # the stop cuts it short (well before the minute)
