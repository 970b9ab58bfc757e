"""Per-table rules: pure functions from a folded transaction to event drafts.

``default_derivers()`` is the registry the watcher runs; see :mod:`derivers.base` for the
contract every deriver implements.
"""

from __future__ import annotations

from .base import Change, Derived, Deriver, StateView, Timer, TimerOps, TxView


def default_derivers() -> list[Deriver]:
    from .tickets import TicketDeriver

    return [TicketDeriver()]


__all__ = ["Change", "Derived", "Deriver", "StateView", "Timer", "TimerOps", "TxView", "default_derivers"]
