"""Shared builders of the deriver tests (tests/unit/test_derive_*.py): rows, changes, runs.

Each case is a folded transaction (before/after images and the rest of the transaction) and the
drafts it must yield: event types in order and the payload fields that matter. Rows are full
images in the canonical JSON forms the framework hands derivers (uuid text, ``…Z`` millisecond
timestamps, parsed jsonb), so the rules see what they see in production. :func:`run` derives a
transaction with every registered deriver and merges their drafts as the watcher does (by row
position, then registry order); every draft is turned into an envelope with
:func:`catalog.build_envelope`, so a payload the catalog would reject fails the test, and no two
events of a transaction may share an idempotency key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from catalog import build_envelope
from catalog.envelope import Envelope
from derivers import default_derivers
from derivers.base import Derived, TxView
from derivers.testing import FakeChange, FakeState, FakeTimers, make_tx


def u(n: int) -> str:
    """A readable uuid: ``u(7)`` → ``00000000-0000-4000-8000-000000000007``."""
    return f"00000000-0000-4000-8000-{n:012d}"


TENANT = u(1)
TICKET = u(10)
MASTER = u(11)
CHILD1, CHILD2, CHILD3 = u(12), u(13), u(14)
STAFF = u(20)  # internal user
STAFF2 = u(21)
STAFF3 = u(22)
PORTAL_USER = u(23)  # client user linked to CONTACT
CONTACT = u(30)
CONTACT2 = u(31)
TEAM_A, TEAM_B = u(40), u(41)
OPEN, OPEN2, CLOSED_STATUS = u(50), u(51), u(52)
P1, P2 = u(60), u(61)
BOARD_A, BOARD_B = u(70), u(71)
CLIENT = u(80)
POLICY = u(90)
COMMENT1, COMMENT2 = u(100), u(101)
MIRROR_COPY = u(102)
ENTRY1, ENTRY2 = u(110), u(111)
RES1, RES2, RES3 = u(120), u(121), u(122)

COMMIT = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
NOW = "2026-01-02T03:04:05.678Z"
EARLIER = "2026-01-02T01:00:00.000Z"
LATER = "2026-01-02T09:00:00.000Z"

ABSENT = object()
"""An expected payload value meaning: the key must not be there."""

ACTOR_KEYS = ("actorType", "actorUserId", "actorContactId")
NO_ACTOR = dict.fromkeys(ACTOR_KEYS, ABSENT)

TICKETS = "public.tickets"
COMMENTS = "public.comments"
RESOURCES = "public.ticket_resources"
SETTINGS = "public.ticket_bundle_settings"
MIRRORS = "public.ticket_bundle_mirrors"
AUDIT = "public.ticket_audit_logs"
TIME = "public.time_entries"
#: The change an earlier transaction armed a test's pre-existing timers with.
ARMING = FakeChange(TICKETS, "update")


def ticket_row(ticket_id: str = TICKET, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "tenant": TENANT,
        "ticket_id": ticket_id,
        "ticket_number": "T-1",
        "title": "Printer on fire",
        "url": None,
        "contact_name_id": None,
        "status_id": OPEN,
        "category_id": None,
        "subcategory_id": None,
        "priority_id": P1,
        "severity_id": None,
        "urgency_id": None,
        "impact_id": None,
        "entered_by": STAFF,
        "updated_by": None,
        "assigned_to": None,
        "closed_by": None,
        "entered_at": EARLIER,
        "updated_at": EARLIER,
        "closed_at": None,
        "is_closed": False,
        "attributes": None,
        "due_date": None,
        "location_id": None,
        "email_metadata": None,
        "itil_impact": None,
        "itil_urgency": None,
        "itil_priority_level": None,
        "escalated": False,
        "escalation_level": None,
        "escalated_at": None,
        "escalated_by": None,
        "board_id": BOARD_A,
        "client_id": CLIENT,
        "response_state": None,
        "master_ticket_id": None,
        "source": "web_app",
        "ticket_origin": "internal",
        "sla_policy_id": None,
        "sla_started_at": None,
        "sla_response_due_at": None,
        "sla_response_at": None,
        "sla_response_met": None,
        "sla_resolution_due_at": None,
        "sla_resolution_at": None,
        "sla_resolution_met": None,
        "sla_paused_at": None,
        "sla_total_pause_minutes": 0,
        "assigned_team_id": None,
        "billing_profile_id": None,
    }
    row.update(values)
    return row


def comment_row(comment_id: str = COMMENT1, ticket_id: str = TICKET, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "tenant": TENANT,
        "comment_id": comment_id,
        "ticket_id": ticket_id,
        "user_id": STAFF,
        "note": "Hello",
        "is_internal": False,
        "is_resolution": False,
        "created_at": "2026-01-02T03:04:05.000Z",
        "updated_at": "2026-01-02T03:04:05.000Z",
        "author_type": "internal",
        "markdown_content": None,
        "metadata": None,
        "is_system_generated": False,
        "contact_id": None,
        "thread_id": u(900),
        "parent_comment_id": None,
        "deleted_at": None,
        "publish_state": "published",
        "scheduled_publish_at": None,
        "published_at": None,
    }
    row.update(values)
    return row


def resource_row(
    assignment_id: str, agent: str, primary: str = STAFF, ticket_id: str = TICKET
) -> dict[str, Any]:
    return {
        "tenant": TENANT,
        "assignment_id": assignment_id,
        "ticket_id": ticket_id,
        "assigned_to": primary,
        "additional_user_id": agent,
        "role": None,
        "assigned_at": "2026-01-02T03:04:05.100Z",
    }


def audit_row(ticket_id: str = TICKET, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "tenant": TENANT,
        "audit_id": u(800),
        "ticket_id": ticket_id,
        "event_type": "TICKET_UPDATED",
        "entity_type": "ticket",
        "entity_id": ticket_id,
        "actor_type": "user",
        "actor_user_id": STAFF,
        "actor_contact_id": None,
        "actor_display_name": None,
        "source": "ui",
        "occurred_at": NOW,
        "changes": {},
        "details": {},
        "created_at": NOW,
    }
    row.update(values)
    return row


def entry_row(entry_id: str = ENTRY1, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "tenant": TENANT,
        "entry_id": entry_id,
        "user_id": STAFF,
        "start_time": "2026-01-02T01:00:30.000Z",
        "end_time": "2026-01-02T02:30:10.000Z",
        "notes": None,
        "work_item_id": TICKET,
        "billable_duration": 90,
        "work_item_type": "ticket",
        "approval_status": "DRAFT",
        "created_at": "2026-01-02T02:30:11.000Z",
        "updated_at": "2026-01-02T02:30:11.000Z",
        "work_date": "2026-01-02",
        "work_timezone": "UTC",
        "created_by": STAFF,
        "updated_by": STAFF,
    }
    row.update(values)
    return row


def ins(table: str, after: Mapping[str, Any]) -> FakeChange:
    return FakeChange(table, "insert", None, after)


def upd(table: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> FakeChange:
    return FakeChange(table, "update", before, after)


def dele(table: str, before: Mapping[str, Any]) -> FakeChange:
    return FakeChange(table, "delete", before, None)


def ticket_upd(before: Mapping[str, Any], after: Mapping[str, Any], ticket_id: str = TICKET) -> FakeChange:
    """A folded tickets UPDATE: the base row with ``before`` / ``after`` overrides."""
    return upd(TICKETS, ticket_row(ticket_id, **before), ticket_row(ticket_id, **after))


def base_state() -> FakeState:
    state = FakeState()
    for status, closed in ((OPEN, False), (OPEN2, False), (CLOSED_STATUS, True)):
        state.put(
            "public.statuses", (TENANT, status), {"tenant": TENANT, "status_id": status, "is_closed": closed}
        )
    for user, kind, contact in (
        (STAFF, "internal", None),
        (STAFF2, "internal", None),
        (STAFF3, "internal", None),
        (PORTAL_USER, "client", CONTACT),
    ):
        email = f"{user[-2:]}@example.test"
        state.put(
            "public.users",
            (TENANT, user, email),  # the table's primary key is (tenant, user_id, email)
            {"tenant": TENANT, "user_id": user, "email": email, "user_type": kind, "contact_id": contact},
        )
    return state


@dataclass
class Run:
    tx: TxView
    derived: list[Derived]
    envelopes: list[Envelope]
    timers: FakeTimers
    state: FakeState = field(default_factory=FakeState)

    @property
    def types(self) -> list[str]:
        return [d.draft.event_type for d in self.derived]


def run(
    changes: Sequence[FakeChange],
    state: FakeState | None = None,
    timers: FakeTimers | None = None,
    commit_time: datetime = COMMIT,
    messages: Sequence[tuple[str, bytes]] = (),
) -> Run:
    tx = make_tx(changes, commit_time=commit_time, messages=messages)
    state = state if state is not None else base_state()
    timers = timers if timers is not None else FakeTimers()
    derived = derive(tx, state, timers)
    envelopes = [
        build_envelope(
            d.draft, slot="t", lsn=tx.end_lsn, xid=tx.xid, commit_time=tx.commit_time, table=d.table
        )
        for d in derived
    ]
    keys = [e.idempotency_key for e in envelopes]
    assert len(set(keys)) == len(keys), f"duplicate idempotency keys: {keys}"
    positions = [d.position for d in derived]
    assert positions == sorted(positions), "drafts must come in position order"
    for d in derived:
        assert d.table == tx.changes[d.position].table
    return Run(tx, derived, envelopes, timers, state)


def derive(tx: TxView, state: FakeState, timers: FakeTimers) -> list[Derived]:
    """The drafts of every registered deriver whose tables the transaction touches, merged as the
    watcher merges them: by row position, then in registry order (a stable sort)."""
    tables = {change.table for change in tx.changes}
    derived: list[Derived] = []
    for deriver in default_derivers():
        if deriver.tables & tables:
            derived.extend(deriver.derive(tx, state, timers))
    derived.sort(key=lambda d: d.position)
    return derived


Expected = Sequence[tuple[str, Mapping[str, Any]]]


def check(result: Run, expected: Expected) -> None:
    """Event types in order, and for each the listed payload fields (ABSENT: key not sent)."""
    assert result.types == [event_type for event_type, _ in expected]
    for envelope, (event_type, wanted) in zip(result.envelopes, expected, strict=True):
        payload = envelope.payload
        assert payload["tenantId"] == TENANT
        for key, value in wanted.items():
            if value is ABSENT:
                assert key not in payload, f"{event_type}.{key} should be absent"
            else:
                assert payload.get(key, ABSENT) == value, f"{event_type}.{key}: {payload.get(key, ABSENT)!r}"


USER_STAFF = {"actorType": "USER", "actorUserId": STAFF, "actorContactId": ABSENT}
USER_STAFF2 = {"actorType": "USER", "actorUserId": STAFF2, "actorContactId": ABSENT}


def audit(**values: Any) -> FakeChange:
    return ins(AUDIT, audit_row(**values))


CLOSE_TIME = "2026-01-02T03:04:05.500Z"


def only(result: Run, *event_types: str) -> Run:
    """``result`` restricted to the drafts (and envelopes) of ``event_types``: for the tables of
    one rule when the same rows also yield other rules' events (a time entry's own events and
    TICKET_TIME_ENTRY_ADDED, say)."""
    kept = [i for i, d in enumerate(result.derived) if d.draft.event_type in event_types]
    return Run(
        result.tx,
        [result.derived[i] for i in kept],
        [result.envelopes[i] for i in kept],
        result.timers,
        result.state,
    )


def context(actor_user_id: str) -> tuple[str, bytes]:
    """The ``cdc.context`` logical message of a transaction that declares its acting user."""
    return ("cdc.context", b'{"actorUserId": "%s"}' % actor_user_id.encode())


USER_STAFF3 = {"actorType": "USER", "actorUserId": STAFF3, "actorContactId": ABSENT}
