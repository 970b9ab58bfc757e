"""SLA stage events of tickets: TICKET_SLA_STAGE_ENTERED and _MET from ticket row changes,
TICKET_SLA_STAGE_BREACHED from the durable timers this module arms, moves, pauses, settles
and forgets (DESIGN §4, "Watermark and timers").

Two models, chosen per ticket row:

* **policy** (``sla_policy_id`` set): stages ``response`` and ``resolution`` follow the SLA
  package's columns ``sla_<stage>_due_at`` / ``_at`` / ``_met`` and ``sla_paused_at``. A stage
  is entered when its due time appears, its timer moves with the due time (the pause service
  shifts it on resume), pauses while ``sla_paused_at`` is set, and is met when ``_at`` is set or
  ``_met`` turns true. Timer key ``sla:<tenant>:<ticket>:<stage>``.
* **ITIL fallback** (no ``sla_policy_id``): the application's own rule (SPEC §5.6), stage
  ``resolution`` with ``slaPolicyId`` = tenant id, target ``entered_at`` + hours by
  ``itil_priority_level``; met when the ticket closes. Timer key ``sla:<tenant>:<ticket>:itil``.

Exactly one verdict per stage instance: a MET is emitted only while the timer has not fired
(the framework fires it, and marks it fired, once the watermark passes the due time); a fired or
settled timer ignores later arms. :func:`sla_breach` turns a fired timer into the BREACHED draft.

**TICKET_SLA_THRESHOLD_REACHED** (the application's Temporal SLA workflow; no row change shows
it): every stage timer has a twin, key ``<stage timer key>:threshold``, due when a share of the
stage's time has elapsed — ``share`` is the deriver's ``sla_threshold_share`` (setting
``sla_threshold_share`` / ``CDC_SLA_THRESHOLD_SHARE``, default 0.75, ``thresholdPercent`` =
the share in whole percent). The stage's time is its target minus its start (``sla_started_at``,
or the commit time that entered it; ``entered_at`` for the ITIL fallback) minus the minutes it
spent paused (``sla_total_pause_minutes``, policy model only), so the threshold moves with the
due time when the pause service shifts it: due at ``target − (1 − share) × working time``. The
twin is armed, moved, paused, settled and forgotten with its stage timer: a stage met (or a ticket
deleted, a policy removed) before the threshold never reports it; a threshold that has fired does
not fire again when the due time moves (once per stage instance, like the verdict). It fires
before the breach (it is due earlier); a stage that begins already past its threshold reports it at
the next watermark. Its key is ``TICKET_SLA_THRESHOLD_REACHED:<tenant>:<ticket>:<stage>@<due>``
and its source names the change that armed or last moved it. The phase is ``response`` or
``resolution`` (the ITIL fallback's stage is ``resolution``); the payload adds ``slaPolicyId`` and
``targetAt`` as of the arming (extras the schema allows). A changed share applies to stages armed
or moved after the change: armed timers keep their due time (a backfill with another share yields
other keys for those events).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final

from catalog.envelope import EventDraft

from .base import Change, Timer, canonical_time, parse_time
from .tables import TICKETS
from .toolkit import Actor

if TYPE_CHECKING:
    from .tickets import TicketTx

# (stage, due column, completed-at column, met flag column)
POLICY_STAGES: Final = (
    ("response", "sla_response_due_at", "sla_response_at", "sla_response_met"),
    ("resolution", "sla_resolution_due_at", "sla_resolution_at", "sla_resolution_met"),
)
ITIL_TARGET_HOURS: Final = {1: 1, 2: 4, 3: 24, 4: 72, 5: 168}
ITIL_DEFAULT_HOURS: Final = 24
ITIL_STAGE: Final = "resolution"

THRESHOLD_EVENT: Final = "TICKET_SLA_THRESHOLD_REACHED"
SLA_EVENTS: Final = (
    "TICKET_SLA_STAGE_ENTERED",
    "TICKET_SLA_STAGE_MET",
    "TICKET_SLA_STAGE_BREACHED",
    THRESHOLD_EVENT,
)
# fired by timers, not by a row change
TIMER_EVENTS: Final = ("TICKET_SLA_STAGE_BREACHED", THRESHOLD_EVENT)

#: The share of a stage's time after which TICKET_SLA_THRESHOLD_REACHED fires (the setting
#: ``sla_threshold_share`` of cdc/config.py has the same default).
DEFAULT_THRESHOLD_SHARE: Final = 0.75

#: What these rules read (see ``derivers.base.Reads``). The actor and the close of a ticket, which
#: the MET rules also use, are declared with the ticket rules.
READS: Final = (
    (
        TICKETS,
        (
            "tenant",
            "ticket_id",
            "sla_policy_id",
            "sla_started_at",
            "sla_paused_at",
            *(column for _, *columns in POLICY_STAGES for column in columns),
            "itil_priority_level",
            "entered_at",
            "is_closed",
        ),
        SLA_EVENTS,
    ),
    (TICKETS, ("sla_total_pause_minutes",), (THRESHOLD_EVENT,)),
)


def policy_timer_key(tenant: str, ticket_id: str, stage: str) -> str:
    return f"sla:{tenant}:{ticket_id}:{stage}"


def itil_timer_key(tenant: str, ticket_id: str) -> str:
    # Its own key, so that a ticket moving to a policy never collides with the fallback stage.
    return f"sla:{tenant}:{ticket_id}:itil"


def threshold_key(stage_key: str) -> str:
    """The threshold twin of a stage timer."""
    return f"{stage_key}:threshold"


def threshold_due(started_at: str, target_at: str, paused_minutes: object, share: float) -> datetime | None:
    """When ``share`` of the stage's working time has elapsed: ``target − (1 − share) × (target −
    start − paused)``, in whole milliseconds (the keys' precision); None when the stage has no time."""
    target = parse_time(target_at)
    paused = paused_minutes if isinstance(paused_minutes, int) and paused_minutes > 0 else 0
    working = target - parse_time(started_at) - timedelta(minutes=paused)
    working_ms = working // timedelta(milliseconds=1)
    if working_ms <= 0:
        return None
    return target - timedelta(milliseconds=round(working_ms * (1 - share)))


def threshold_percent(share: float) -> int:
    return round(share * 100)


def itil_target(entered_at: str, level: object) -> str:
    hours = ITIL_TARGET_HOURS.get(level, ITIL_DEFAULT_HOURS) if isinstance(level, int) else ITIL_DEFAULT_HOURS
    return canonical_time(parse_time(entered_at) + timedelta(hours=hours))


# --- shared steps ---------------------------------------------------------------------------------


def _enter(
    ctx: TicketTx,
    change: Change,
    tenant: str,
    ticket_id: str,
    actor: Actor,
    key: str,
    stage: str,
    policy_id: str,
    entered_at: str,
    target_at: str,
    paused_minutes: object = 0,
) -> None:
    ctx.timers.arm(
        key,
        change,
        tenant=tenant,
        subject_id=ticket_id,
        stage=stage,
        due_at=parse_time(target_at),
        data={"slaPolicyId": policy_id},
    )
    _arm_threshold(
        ctx, change, tenant, ticket_id, key, stage, policy_id, entered_at, target_at, paused_minutes
    )
    ctx.emit(
        change,
        "TICKET_SLA_STAGE_ENTERED",
        tenant,
        ticket_id,
        actor,
        {
            "ticketId": ticket_id,
            "slaPolicyId": policy_id,
            "stage": stage,
            "enteredAt": entered_at,
            "targetAt": target_at,
        },
        discriminator=stage,  # both stages of a policy can start in one transaction
    )


def _met(
    ctx: TicketTx,
    change: Change,
    tenant: str,
    ticket_id: str,
    actor: Actor,
    key: str,
    stage: str,
    policy_id: str,
    met_at: str,
    target_at: str,
) -> None:
    """MET unless the stage already has its verdict. Without a timer (the stage began before the
    watcher knew the ticket) the times decide: on time is MET, late gets no verdict."""
    timer = ctx.timers.get(key)
    if timer is None:
        if parse_time(met_at) > parse_time(target_at):
            return
    elif timer.state in ("fired", "settled"):
        return
    else:
        ctx.timers.settle(key)
        ctx.timers.settle(threshold_key(key))
    ctx.emit(
        change,
        "TICKET_SLA_STAGE_MET",
        tenant,
        ticket_id,
        actor,
        {
            "ticketId": ticket_id,
            "slaPolicyId": policy_id,
            "stage": stage,
            "metAt": met_at,
            "targetAt": target_at,
        },
        discriminator=stage,
    )


def _arm(
    ctx: TicketTx,
    change: Change,
    tenant: str,
    ticket_id: str,
    key: str,
    stage: str,
    due: str,
    policy_id: str,
    started_at: str | None = None,
    paused_minutes: object = 0,
) -> None:
    """Arm or move a stage timer and its threshold twin (which keeps the start it was armed with;
    ``started_at`` is the start for a twin not armed yet)."""
    ctx.timers.arm(
        key,
        change,
        tenant=tenant,
        subject_id=ticket_id,
        stage=stage,
        due_at=parse_time(due),
        data={"slaPolicyId": policy_id},
    )
    twin = ctx.timers.get(threshold_key(key))
    if twin is not None:
        known = twin.data.get("startedAt")
        started_at = known if isinstance(known, str) else started_at
    if started_at is not None:
        _arm_threshold(ctx, change, tenant, ticket_id, key, stage, policy_id, started_at, due, paused_minutes)


def _arm_threshold(
    ctx: TicketTx,
    change: Change,
    tenant: str,
    ticket_id: str,
    key: str,
    stage: str,
    policy_id: str,
    started_at: str,
    target_at: str,
    paused_minutes: object,
) -> None:
    share = ctx.threshold_share
    due = threshold_due(started_at, target_at, paused_minutes, share)
    if due is None:
        return
    ctx.timers.arm(
        threshold_key(key),
        change,
        tenant=tenant,
        subject_id=ticket_id,
        stage=stage,
        due_at=due,
        data={
            "slaPolicyId": policy_id,
            "startedAt": started_at,
            "targetAt": target_at,
            "thresholdPercent": threshold_percent(share),
        },
    )


def _pause(ctx: TicketTx, key: str) -> None:
    ctx.timers.pause(key)
    ctx.timers.pause(threshold_key(key))


def _forget(ctx: TicketTx, key: str) -> None:
    ctx.timers.forget(key)
    ctx.timers.forget(threshold_key(key))


# --- ticket inserted -------------------------------------------------------------------------------


def sla_on_insert(ctx: TicketTx, change: Change, tenant: str, ticket_id: str, actor: Actor) -> None:
    row = change.after
    assert row is not None
    policy_id = row.get("sla_policy_id")
    if policy_id is not None:
        paused = row.get("sla_paused_at") is not None
        pause = row.get("sla_total_pause_minutes")
        entered_at = row.get("sla_started_at") or ctx.occurred_at
        for stage, due_col, at_col, met_col in POLICY_STAGES:
            due = row.get(due_col)
            if due is None:
                continue
            key = policy_timer_key(tenant, ticket_id, stage)
            _enter(ctx, change, tenant, ticket_id, actor, key, stage, policy_id, entered_at, due, pause)
            met_at = row.get(at_col)
            if met_at is not None or row.get(met_col) is True:
                _met(
                    ctx,
                    change,
                    tenant,
                    ticket_id,
                    actor,
                    key,
                    stage,
                    policy_id,
                    met_at or ctx.occurred_at,
                    due,
                )
            elif paused:
                _pause(ctx, key)
        return

    level = row.get("itil_priority_level")
    entered_at = row.get("entered_at")
    if level is None or entered_at is None or row.get("is_closed") is True:
        return
    key = itil_timer_key(tenant, ticket_id)
    _enter(
        ctx,
        change,
        tenant,
        ticket_id,
        actor,
        key,
        ITIL_STAGE,
        tenant,
        entered_at,
        itil_target(entered_at, level),
    )


# --- ticket updated --------------------------------------------------------------------------------


def sla_on_update(
    ctx: TicketTx,
    change: Change,
    tenant: str,
    ticket_id: str,
    actor: Actor,
    closed_at: str | None,
    itil_level_changed: bool,
) -> None:
    """``closed_at`` is set when this update closes the ticket (open → closed)."""
    before, after = change.before, change.after
    assert before is not None and after is not None
    policy_id = after.get("sla_policy_id")
    if policy_id is not None:
        _policy_update(ctx, change, tenant, ticket_id, actor, policy_id)
    elif change.changed("sla_policy_id"):
        # The policy was removed: its stages end without a verdict.
        for stage, *_ in POLICY_STAGES:
            _forget(ctx, policy_timer_key(tenant, ticket_id, stage))
    elif itil_level_changed or closed_at is not None:
        _itil_update(ctx, change, tenant, ticket_id, actor, closed_at, itil_level_changed)


def _policy_update(
    ctx: TicketTx, change: Change, tenant: str, ticket_id: str, actor: Actor, policy_id: str
) -> None:
    before, after = change.before, change.after
    assert before is not None and after is not None
    policy_changed = change.changed("sla_policy_id")
    if policy_changed and before.get("sla_policy_id") is None:
        # The ITIL fallback no longer applies once a policy governs the ticket.
        _forget(ctx, itil_timer_key(tenant, ticket_id))
    pause_changed = change.changed("sla_paused_at")
    paused = after.get("sla_paused_at") is not None
    pause = after.get("sla_total_pause_minutes")
    started_at = after.get("sla_started_at")
    for stage, due_col, at_col, met_col in POLICY_STAGES:
        key = policy_timer_key(tenant, ticket_id, stage)
        due_changed = change.changed(due_col)
        due = after.get(due_col)
        if due is None:
            if due_changed:
                _forget(ctx, key)  # the stage was withdrawn; a new due time is a new instance
            continue
        met_now = (change.changed(at_col) and after.get(at_col) is not None) or (
            change.changed(met_col) and after.get(met_col) is True
        )
        if not met_now and (after.get(at_col) is not None or after.get(met_col) is True):
            continue  # completed earlier: nothing left to time
        if due_changed and before.get(due_col) is None:
            entered_at = started_at or ctx.occurred_at
            _enter(ctx, change, tenant, ticket_id, actor, key, stage, policy_id, entered_at, due, pause)
            if paused:
                _pause(ctx, key)
        elif due_changed or policy_changed or (pause_changed and not paused):
            # Moved (the pause service shifts due times on resume), re-governed, or resumed.
            _arm(ctx, change, tenant, ticket_id, key, stage, due, policy_id, started_at, pause)
            if paused:
                _pause(ctx, key)
        elif pause_changed:
            _pause(ctx, key)
        if met_now:
            met_at = after.get(at_col) or ctx.occurred_at
            _met(ctx, change, tenant, ticket_id, actor, key, stage, policy_id, met_at, due)


def _itil_update(
    ctx: TicketTx,
    change: Change,
    tenant: str,
    ticket_id: str,
    actor: Actor,
    closed_at: str | None,
    level_changed: bool,
) -> None:
    before, after = change.before, change.after
    assert before is not None and after is not None
    key = itil_timer_key(tenant, ticket_id)
    entered_at = after.get("entered_at")
    if level_changed:
        level = after.get("itil_priority_level")
        if level is None:
            _forget(ctx, key)
        elif entered_at is not None:
            target = itil_target(entered_at, level)
            if before.get("itil_priority_level") is None:
                if closed_at is None and after.get("is_closed") is not True:
                    _enter(ctx, change, tenant, ticket_id, actor, key, ITIL_STAGE, tenant, entered_at, target)
            elif ctx.timers.get(key) is not None:
                _arm(ctx, change, tenant, ticket_id, key, ITIL_STAGE, target, tenant, entered_at)

    if closed_at is None:
        return
    timer = ctx.timers.get(key)
    if timer is not None:
        target_at = canonical_time(timer.due_at)
    else:
        # No timer: judge by the pre-update level and entered_at, as the application does.
        level, entered = before.get("itil_priority_level"), before.get("entered_at")
        if level is None or entered is None:
            return
        target_at = itil_target(entered, level)
    _met(ctx, change, tenant, ticket_id, actor, key, ITIL_STAGE, tenant, closed_at, target_at)


# --- ticket deleted -------------------------------------------------------------------------------


def sla_on_delete(ctx: TicketTx, tenant: str, ticket_id: str) -> None:
    """A deleted ticket has no stages left to breach."""
    for stage, *_ in POLICY_STAGES:
        _forget(ctx, policy_timer_key(tenant, ticket_id, stage))
    _forget(ctx, itil_timer_key(tenant, ticket_id))


# --- timer fired -----------------------------------------------------------------------------------


def sla_timer_fired(timer: Timer) -> list[EventDraft]:
    """The drafts of a fired timer of this module: a threshold twin, or a stage's breach."""
    if "thresholdPercent" in timer.data:
        return sla_threshold(timer)
    return sla_breach(timer)


def sla_threshold(timer: Timer) -> list[EventDraft]:
    """The watermark passed a stage's threshold: THRESHOLD_REACHED at the threshold time."""
    percent = timer.data.get("thresholdPercent")
    if timer.stage not in ("response", "resolution") or not isinstance(percent, int):
        return []
    due = canonical_time(timer.due_at)
    payload = {
        "tenantId": timer.tenant,
        "occurredAt": due,
        "ticketId": timer.subject_id,
        "phase": timer.stage,
        "thresholdPercent": percent,
    }
    for name in ("slaPolicyId", "targetAt"):
        value = timer.data.get(name)
        if isinstance(value, str):
            payload[name] = value
    return [
        EventDraft(
            THRESHOLD_EVENT,
            timer.tenant,
            timer.subject_id,
            payload,
            timer_stage=timer.stage,
            due_at=timer.due_at,
        )
    ]


def sla_breach(timer: Timer) -> list[EventDraft]:
    """The watermark passed the due time of an armed stage: BREACHED at the due time."""
    policy_id = timer.data.get("slaPolicyId")
    if not isinstance(policy_id, str):
        return []  # slaPolicyId is required and only the arming change knew it
    due = canonical_time(timer.due_at)
    payload = {
        "tenantId": timer.tenant,
        "occurredAt": due,
        "ticketId": timer.subject_id,
        "slaPolicyId": policy_id,
        "stage": timer.stage,
        "breachedAt": due,
        "targetAt": due,
        "overdueBySeconds": 0,
    }
    return [
        EventDraft(
            "TICKET_SLA_STAGE_BREACHED",
            timer.tenant,
            timer.subject_id,
            payload,
            timer_stage=timer.stage,
            due_at=timer.due_at,
        )
    ]
