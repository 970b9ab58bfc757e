"""Envelope building: drafts → envelopes through the catalog, into the open batch.

Each draft is validated against its payload model and wrapped in its envelope by the catalog
(:func:`catalog.envelope.build_envelope`), with the source of the change that produced it — for
a timer-driven draft the change that armed the timer, with ``"timer": true``. The envelope goes
into the open batch (:class:`cdc.batch.Delivery`), in the order the drafts come. A draft that
fails validation is not delivered: it becomes a dead letter of the same batch, written in the
checkpoint's transaction, and a warning names its key and the failing field paths (never the
values).
"""

from __future__ import annotations

import logging
from datetime import datetime

from catalog.dead_letters import dead_letter
from catalog.envelope import EventDraft, EventValidationError, build_envelope
from derivers.base import Derived

from .batch import Delivery

log = logging.getLogger("cdc.envelopes")


class EnvelopeBuilder:
    """The drafts of one slot's stream into ``delivery``; ``by_type`` counts the envelopes."""

    def __init__(self, slot: str, delivery: Delivery, by_type: dict[str, int]) -> None:
        self.slot = slot
        self.delivery = delivery
        self.by_type = by_type

    def envelope(
        self, draft: EventDraft, lsn: int, xid: int, commit_time: datetime, table: str, timer: bool
    ) -> bool:
        """One draft into the batch; False when it became a dead letter instead."""
        try:
            env = build_envelope(
                draft,
                slot=self.slot,
                lsn=lsn,
                xid=xid,
                commit_time=commit_time,
                table=table,
                timer=timer,
            )
        except EventValidationError as err:
            dl = dead_letter(
                draft,
                err,
                slot=self.slot,
                lsn=lsn,
                xid=xid,
                commit_time=commit_time,
                table=table,
                timer=timer,
            )
            self.delivery.dead_letters.append(dl.params())
            log.warning("dead letter %s: %s", err.key, ", ".join(err.paths))
            return False
        self.delivery.chunk.envelopes.append(env)
        self.by_type[env.event_type] = self.by_type.get(env.event_type, 0) + 1
        return True

    def envelopes(self, derived: list[Derived], lsn: int, xid: int, commit_time: datetime) -> int:
        """A transaction's drafts, in order (:meth:`envelope` for each); returns how many became
        dead letters."""
        dead = 0
        for item in derived:
            if not self.envelope(item.draft, lsn, xid, commit_time, item.table, False):
                dead += 1
        return dead
