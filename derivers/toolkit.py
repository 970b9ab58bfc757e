"""The deriver toolkit: what the rules of every event family share, written once for any table.

A family (tickets, time entries; scheduling and projects next) builds one :class:`FamilyTx`
per transaction and writes its rules against it:

* **its changes** — :meth:`FamilyTx.changes`: the folded changes of one of the tables the
  family reads, in position order;
* **the actor rule** — :meth:`FamilyTx.declared_actor`: the application's audit row written
  in the same transaction for the subject (an :class:`AuditTable` such as
  ``ticket_audit_logs``), else the transaction's ``cdc.context`` logical message
  (:func:`context_actor`); then the family's own evidence, usually an actor column this change
  wrote (:func:`written_actor`: ``updated_by``, ``created_by``, ``entered_by``); else no actor
  fields (:data:`NO_ACTOR`) — never a guess;
* **emitting** — :meth:`FamilyTx.emit`: a draft at the position of the change that caused
  it, its payload opened by the base fields every event carries (``tenantId``, ``occurredAt``,
  the actor); :meth:`FamilyTx.drafts` hands them back in delivery order;
* **edits** — :class:`Edits`: which of a table's columns an update changed, in the family's
  order, as ``updatedFields`` and ``changes`` (``{column: {previous, new}}``), camelCase unless
  the family keeps the application's column names;
* **payload helpers** — :func:`fields` (optional fields left out, never null),
  :func:`camel_case`, :func:`subject` (a row's tenant and id).

Nothing here knows a family: tables, columns and event types are the caller's.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from catalog.envelope import EventDraft

from .base import Change, Derived, Image, StateView, TimerOps, TxView

# --- actors ----------------------------------------------------------------------------------------

Actor = Mapping[str, str]
"""The base-payload actor fields (``actorType`` and ``actorUserId`` / ``actorContactId``)."""

NO_ACTOR: Final[Actor] = {}
SYSTEM_ACTOR: Final[Actor] = {"actorType": "SYSTEM"}


def user_actor(user_id: str | None) -> Actor:
    return {"actorType": "USER", "actorUserId": user_id} if user_id else NO_ACTOR


def contact_actor(contact_id: str | None) -> Actor:
    return {"actorType": "CONTACT", "actorContactId": contact_id} if contact_id else NO_ACTOR


def written_actor(change: Change, column: str) -> Actor:
    """The user id in an actor column (``updated_by``, ``created_by``, ``entered_by``, …) as the
    actor, but only where this change wrote it: an insert's value, an update's new value when it
    changed. The application leaves ``updated_by`` stale on most edits (SPEC §7.6), so an
    unchanged value says nothing about who acted now."""
    after = change.after
    if after is None or (change.op == "update" and not change.changed(column)):
        return NO_ACTOR
    return user_actor(after.get(column))


def audit_row_actor(row: Image) -> Actor | None:
    """The actor an application audit row names (its ``actor_type`` / ``actor_user_id`` /
    ``actor_contact_id``), or None when it names none we can use."""
    kind = row.get("actor_type")
    if kind in ("system", "workflow"):
        return SYSTEM_ACTOR
    user_id = row.get("actor_user_id")
    contact_id = row.get("actor_contact_id")
    if kind == "user":
        return user_actor(user_id) or None
    if kind == "contact":
        return contact_actor(contact_id) or None
    if kind == "api":
        # API keys belong to users; a key without one is an integration acting on its own.
        return user_actor(user_id) or SYSTEM_ACTOR
    if kind == "email_sender":
        return contact_actor(contact_id) or user_actor(user_id) or None
    return None


AUDIT_ACTOR_COLUMNS: Final = ("actor_type", "actor_user_id", "actor_contact_id")


@dataclass(frozen=True)
class AuditTable:
    """An application table whose rows, inserted in the same transaction as a change, say who
    made it: ``table`` (schema-qualified), ``subject`` the column naming the subject's id, the
    actor in :data:`AUDIT_ACTOR_COLUMNS` (read by :func:`audit_row_actor`)."""

    table: str
    subject: str

    def reads(self, event_types: Iterable[str]) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
        """The ``declare_reads`` row of the actor rule for these event types."""
        return (self.table, ("tenant", self.subject, *AUDIT_ACTOR_COLUMNS), tuple(event_types))


CONTEXT_PREFIX: Final = "cdc.context"
"""The prefix of the transactional logical message in which a writer may say who acts:
``pg_logical_emit_message(true, 'cdc.context', '{"actorUserId": "<uuid>"}')`` (or
``actorContactId``) inside its transaction."""


def context_actor(messages: Sequence[tuple[str, bytes]]) -> Actor | None:
    """The actor of the first ``cdc.context`` message that names one; a message that is not a
    JSON object with a uuid there is ignored (a writer's mistake must not dead-letter events)."""
    for prefix, content in messages:
        if prefix != CONTEXT_PREFIX:
            continue
        try:
            declared = json.loads(content)
        except ValueError:
            continue
        if not isinstance(declared, dict):
            continue
        actor = user_actor(canonical_uuid(declared.get("actorUserId"))) or contact_actor(
            canonical_uuid(declared.get("actorContactId"))
        )
        if actor:
            return actor
    return None


def canonical_uuid(value: object) -> str | None:
    """``value`` as a canonical uuid (lower case, hyphens), None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


# --- payload helpers ---------------------------------------------------------------------------------


def fields(**values: Any) -> dict[str, Any]:
    """The keyword arguments that are not ``None``: optional payload fields are left out, never
    sent as null (the v1 schemas are zod ``.optional()``, which rejects null)."""
    return {k: v for k, v in values.items() if v is not None}


def camel_case(column: str) -> str:
    """``sla_policy_id`` → ``slaPolicyId``: how the v1 payloads name a column (SPEC §3.3)."""
    head, *rest = column.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def subject(row: Image, id_column: str) -> tuple[str, str]:
    """A row's tenant and the id in ``id_column``: who an event is about (every PSA table
    carries ``tenant``)."""
    return row["tenant"], row[id_column]


class Edits:
    """The columns of one table whose change makes an update an *edit*, in the order
    ``updatedFields`` lists them, and the names a payload gives them: camelCase (the v1
    convention) unless ``camel=False`` keeps the application's column names. Columns not listed
    are bookkeeping (keys, ``updated_at``, columns other events report) and never an edit; a
    fixed list also keeps an update's cost bounded."""

    __slots__ = ("_names", "_order", "_set", "columns")

    def __init__(self, columns: Sequence[str], *, camel: bool = True) -> None:
        self.columns: tuple[str, ...] = tuple(columns)
        self._set = frozenset(self.columns)
        self._order = {column: i for i, column in enumerate(self.columns)}
        self._names = {column: camel_case(column) for column in self.columns} if camel else None

    def edited(self, changed: frozenset[str]) -> list[str]:
        """The edit columns among ``changed`` (a change's changed columns), in list order."""
        found = changed & self._set
        if len(found) == 2:  # the common edit (status and assignee, say): no sort call
            first, second = found
            order = self._order
            return [first, second] if order[first] < order[second] else [second, first]
        return sorted(found, key=self._order.__getitem__) if found else []

    def payload(
        self, edited: Sequence[str], old: Mapping[str, Any], new: Mapping[str, Any]
    ) -> dict[str, Any]:
        """``updatedFields`` and ``changes`` for the ``edited`` columns, whose values before and
        after are in ``old`` / ``new``; empty when nothing was edited."""
        if not edited:
            return {}
        names = self._names
        changes: dict[str, dict[str, Any]] = {}
        if names is None:
            # A loop, not a comprehension: one frame fewer per update (3.11 comprehensions are functions).
            for column in edited:
                changes[column] = {"previous": old[column], "new": new[column]}
            return {"updatedFields": list(edited), "changes": changes}
        for column in edited:
            changes[names[column]] = {"previous": old[column], "new": new[column]}
        return {"updatedFields": [names[column] for column in edited], "changes": changes}

    def of(self, change: Change) -> dict[str, Any]:
        """``updatedFields`` and ``changes`` of an update (empty when it edited nothing)."""
        before, after = change.before, change.after
        if before is None or after is None:
            return {}
        edited = self.edited(change.changed_columns())
        old = {column: before.get(column) for column in edited}
        new = {column: after.get(column) for column in edited}
        return self.payload(edited, old, new)


# --- one transaction of one family --------------------------------------------------------------------

_tuple_new: Final = tuple.__new__
if len(EventDraft._fields) != 7 or len(Derived._fields) != 3:  # FamilyTx.add builds them positionally
    raise ImportError("derivers.toolkit: EventDraft or Derived changed shape; update FamilyTx.add")

_UNSEEN: Final[Any] = object()


class FamilyTx:
    """One transaction as a family's rules see it: its changes of the family's tables, the
    reference state, the timers, who acted, and the drafts derived so far.

    ``tables`` are the tables whose changes the rules read (:meth:`changes`); the ``audit``
    table's rows are read for the actor rule."""

    __slots__ = (
        "_audit",
        "_audit_rows",
        "_by_table",
        "_context",
        "occurred_at",
        "out",
        "state",
        "timers",
        "tx",
    )

    def __init__(
        self,
        tx: TxView,
        state: StateView,
        timers: TimerOps,
        tables: Iterable[str],
        audit: AuditTable | None = None,
    ) -> None:
        self.tx = tx
        self.state = state
        self.timers = timers
        self.occurred_at = tx.occurred_at
        self.out: list[Derived] = []
        by_table: dict[str, list[Change]] = {table: [] for table in tables}
        if audit is not None:
            by_table.setdefault(audit.table, [])
        for change in tx.changes:
            bucket = by_table.get(change.table)
            if bucket is not None:
                bucket.append(change)
        self._by_table = by_table
        self._audit = audit
        self._audit_rows: dict[tuple[str, str], Image] | None = None
        self._context: Actor | None = _UNSEEN

    def changes(self, table: str) -> list[Change]:
        """The folded changes of ``table`` (one of the family's tables), in position order."""
        return self._by_table[table]

    # --- the actor rule -----------------------------------------------------------------------------

    def _audit_index(self) -> dict[tuple[str, str], Image]:
        """(tenant, subject id) → the first audit row inserted in this transaction for it that
        names an actor; built on first use."""
        index = self._audit_rows
        if index is None:
            index = self._audit_rows = {}
            audit = self._audit
            if audit is not None:
                column = audit.subject
                for change in self._by_table[audit.table]:
                    row = change.after
                    if change.op != "insert" or row is None or audit_row_actor(row) is None:
                        continue
                    index.setdefault((row["tenant"], row[column]), row)
        return index

    def audit_row(self, tenant: str, subject_id: str) -> Image | None:
        """The first audit row inserted in this transaction for the subject that names an actor."""
        index = self._audit_rows if self._audit_rows is not None else self._audit_index()
        return index.get((tenant, subject_id)) if index else None

    @property
    def context_actor(self) -> Actor | None:
        """The actor the transaction's ``cdc.context`` message names, if any."""
        actor = self._context
        if actor is _UNSEEN:
            messages = self.tx.messages
            actor = self._context = context_actor(messages) if messages else None
        return actor

    def written_time(self, change: Change, column: str) -> Any:
        """A time column's value where this change wrote it (an insert's, an update's new value
        when it changed), else the commit time: a writer that did not touch ``updated_at`` left
        it stale, and the change happened when it committed."""
        after = change.after
        if after is None or (change.op == "update" and not change.changed(column)):
            return self.occurred_at
        return after.get(column) or self.occurred_at

    def declared_actor(self, tenant: str, *subject_ids: str) -> Actor | None:
        """Who the application says acted: the audit row of the first of ``subject_ids`` that has
        one, else the transaction's context message, else None. A rule falls back on its own
        evidence after it — ``declared_actor(...) or written_actor(change, "updated_by")`` — and
        on no actor fields at all (``NO_ACTOR``) after that."""
        index = self._audit_rows if self._audit_rows is not None else self._audit_index()
        if index:  # most transactions have no audit row: no lookups then
            for subject_id in subject_ids:
                row = index.get((tenant, subject_id))
                if row is not None:
                    return audit_row_actor(row)
        actor = self._context
        return self.context_actor if actor is _UNSEEN else actor

    # --- output -------------------------------------------------------------------------------------

    def emit(
        self,
        change: Change,
        event_type: str,
        tenant: str,
        subject_id: str,
        actor: Actor,
        payload_fields: Mapping[str, Any],
        discriminator: str | None = None,
    ) -> None:
        """A draft about ``subject_id`` caused by ``change``: the base fields, then the event's own."""
        payload = {"tenantId": tenant, "occurredAt": self.occurred_at, **actor, **payload_fields}
        self.add(change, event_type, tenant, subject_id, payload, discriminator)

    def add(
        self,
        change: Change,
        event_type: str,
        tenant: str,
        subject_id: str,
        payload: dict[str, Any],
        discriminator: str | None = None,
    ) -> None:
        """Append a draft whose ``payload`` is complete (base and actor fields included)."""
        # tuple.__new__ directly: the NamedTuples' own constructors cost a Python frame each,
        # twice per event on the hot path.
        draft = _tuple_new(EventDraft, (event_type, tenant, subject_id, payload, discriminator, None, None))
        self.out.append(_tuple_new(Derived, (draft, change.position, change.table)))

    def drafts(self) -> list[Derived]:
        """The drafts in delivery order: by the causing row's position, then in the order the rules
        added them (the family's declared order of event types)."""
        out = self.out
        out.sort(key=_position)
        return out


def _position(derived: Derived) -> int:
    return derived.position
