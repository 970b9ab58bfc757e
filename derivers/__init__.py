"""Per-table rules: pure functions from a folded transaction to event drafts.

``default_derivers()`` is the registry the watcher runs, in this order (events of one row
position come in deriver order, then in each deriver's order of event types):

* ``tickets`` (:class:`derivers.tickets.TicketDeriver`): the ticket family — tickets, comments,
  additional agents, bundles, SLA stages and their breach and threshold timers;
* ``time_entries`` (:class:`derivers.time_entries.TimeEntryDeriver`): the time-entry family —
  TIME_ENTRY_CREATED / _UPDATED / _DELETED, the approval transitions (_SUBMITTED, _APPROVED,
  _CHANGES_REQUESTED) and TICKET_TIME_ENTRY_ADDED;
* ``scheduling`` (:class:`derivers.scheduling.SchedulingDeriver`): appointments, schedule blocks,
  technician dispatch and the legacy SCHEDULE_ENTRY_* events;
* ``capacity`` (:class:`derivers.capacity.CapacityDeriver`): CAPACITY_THRESHOLD_REACHED from
  bookings per team and UTC date, with the reference state as of each transaction (after the
  appointment events of the same change);
* ``projects`` (:class:`derivers.projects.ProjectDeriver`): projects, phases, tasks, additional
  agents and task dependencies (PROJECT_*, PROJECT_PHASE_*, PROJECT_TASK_*).

:mod:`derivers.base` is the contract every deriver implements; :mod:`derivers.toolkit` is what
the families' rules share (the actor rule, emitting, edited fields).
"""

from __future__ import annotations

from .base import Change, Derived, Deriver, StateView, Timer, TimerOps, TxView


def default_derivers(*, sla_threshold_share: float | None = None) -> list[Deriver]:
    """The registry; ``sla_threshold_share`` (0 < share < 1, default 0.75) is when a ticket's SLA
    stage reports TICKET_SLA_THRESHOLD_REACHED (the setting ``sla_threshold_share``)."""
    from .capacity import CapacityDeriver
    from .projects import ProjectDeriver
    from .scheduling import SchedulingDeriver
    from .tickets import TicketDeriver
    from .time_entries import TimeEntryDeriver

    share = {} if sla_threshold_share is None else {"sla_threshold_share": sla_threshold_share}
    tickets = TicketDeriver(**share)
    return [tickets, TimeEntryDeriver(), SchedulingDeriver(), CapacityDeriver(), ProjectDeriver()]


__all__ = ["Change", "Derived", "Deriver", "StateView", "Timer", "TimerOps", "TxView", "default_derivers"]
