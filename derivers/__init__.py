"""Per-table rules: pure functions from a folded transaction to event drafts.

``default_derivers()`` is the registry the watcher runs, in this order (events of one row
position come in deriver order, then in each deriver's order of event types):

* ``tickets`` (:class:`derivers.tickets.TicketDeriver`): the ticket family — tickets, comments,
  additional agents, bundles, SLA stages and their breach timers;
* ``time_entries`` (:class:`derivers.time_entries.TimeEntryDeriver`): TICKET_TIME_ENTRY_ADDED.

:mod:`derivers.base` is the contract every deriver implements; :mod:`derivers.toolkit` is what
the families' rules share (the actor rule, emitting, edited fields).
"""

from __future__ import annotations

from .base import Change, Derived, Deriver, StateView, Timer, TimerOps, TxView


def default_derivers() -> list[Deriver]:
    from .tickets import TicketDeriver
    from .time_entries import TimeEntryDeriver

    return [TicketDeriver(), TimeEntryDeriver()]


__all__ = ["Change", "Derived", "Deriver", "StateView", "Timer", "TimerOps", "TxView", "default_derivers"]
