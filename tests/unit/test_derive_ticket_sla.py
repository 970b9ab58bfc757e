"""SLA stage events and their timers, policy model and ITIL fallback, and the breach a fired
timer yields (derivers.ticket_sla).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from catalog import build_envelope
from cdc.config import DEFAULT_SLA_THRESHOLD_SHARE, load_settings
from cdc.errors import ConfigError
from derivers import default_derivers
from derivers.base import canonical_time
from derivers.testing import FakeTimers, make_tx
from derivers.ticket_sla import DEFAULT_THRESHOLD_SHARE
from derivers.tickets import TicketDeriver
from tests.unit.derive_cases import (
    ARMING,
    CLOSE_TIME,
    CLOSED_STATUS,
    COMMIT,
    EARLIER,
    LATER,
    NOW,
    OPEN,
    P2,
    POLICY,
    TENANT,
    TICKET,
    TICKETS,
    USER_STAFF,
    Expected,
    base_state,
    check,
    dele,
    ins,
    run,
    ticket_row,
    ticket_upd,
)

# --- SLA: policy model -----------------------------------------------------------------------------------

RESPONSE_DUE = "2026-01-02T04:00:00.000Z"
RESOLUTION_DUE = "2026-01-02T11:00:00.000Z"
MOVED_DUE = "2026-01-02T12:30:00.000Z"
RESPONSE_KEY = f"sla:{TENANT}:{TICKET}:response"
RESOLUTION_KEY = f"sla:{TENANT}:{TICKET}:resolution"
ITIL_KEY = f"sla:{TENANT}:{TICKET}:itil"

POLICY_SLA = {
    "sla_policy_id": POLICY,
    "sla_started_at": EARLIER,
    "sla_response_due_at": RESPONSE_DUE,
    "sla_resolution_due_at": RESOLUTION_DUE,
}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def armed(*keys: str, due: str | None = None, state: str = "armed") -> FakeTimers:
    timers = FakeTimers()
    for key in keys:
        stage = key.rsplit(":", 1)[1]
        stage = "resolution" if stage == "itil" else stage
        default = RESPONSE_DUE if stage == "response" else RESOLUTION_DUE
        timers.arm(
            key,
            ARMING,
            tenant=TENANT,
            subject_id=TICKET,
            stage=stage,
            due_at=at(due or default),
            data={"slaPolicyId": TENANT if key.endswith("itil") else POLICY},
        )
        if state == "fired":
            timers.mark_fired(key)
        elif state == "paused":
            timers.pause(key)
    return timers


def timer_view(timers: FakeTimers) -> dict[str, tuple[str, str]]:
    """The stage timers (their threshold twins have tests of their own below)."""
    return {
        k: (t.state, t.due_at.isoformat()) for k, t in timers.timers.items() if not k.endswith(":threshold")
    }


def test_policy_ticket_created_enters_both_stages() -> None:
    result = run([ins(TICKETS, ticket_row(**POLICY_SLA))])
    check(
        result,
        [
            ("TICKET_CREATED", {}),
            (
                "TICKET_SLA_STAGE_ENTERED",
                {
                    "slaPolicyId": POLICY,
                    "stage": "response",
                    "enteredAt": EARLIER,
                    "targetAt": RESPONSE_DUE,
                    **USER_STAFF,
                },
            ),
            ("TICKET_SLA_STAGE_ENTERED", {"stage": "resolution", "targetAt": RESOLUTION_DUE}),
        ],
    )
    assert result.timers.timers[RESPONSE_KEY].due_at == at(RESPONSE_DUE)
    assert result.timers.timers[RESOLUTION_KEY].data == {"slaPolicyId": POLICY}
    assert {t.state for t in result.timers.timers.values()} == {"armed"}
    assert [d.draft.discriminator for d in result.derived] == [None, "response", "resolution"]


def test_policy_ticket_created_paused_and_already_responded() -> None:
    values: dict[str, Any] = {
        **POLICY_SLA,
        "sla_paused_at": EARLIER,
        "sla_response_at": EARLIER,
        "sla_response_met": True,
    }
    result = run([ins(TICKETS, ticket_row(**values))])
    assert result.types == [
        "TICKET_CREATED",
        "TICKET_SLA_STAGE_ENTERED",
        "TICKET_SLA_STAGE_MET",
        "TICKET_SLA_STAGE_ENTERED",
    ]
    assert result.envelopes[2].payload["metAt"] == EARLIER
    assert result.timers.timers[RESPONSE_KEY].state == "settled"
    assert result.timers.timers[RESOLUTION_KEY].state == "paused"


SLA_POLICY_CASES = [
    pytest.param(
        {"sla_policy_id": None},
        POLICY_SLA,
        FakeTimers(),
        [
            ("TICKET_SLA_STAGE_ENTERED", {"stage": "response", "enteredAt": EARLIER}),
            ("TICKET_SLA_STAGE_ENTERED", {"stage": "resolution"}),
        ],
        {RESPONSE_KEY: ("armed", RESPONSE_DUE), RESOLUTION_KEY: ("armed", RESOLUTION_DUE)},
        id="sla-started-arms-both",
    ),
    pytest.param(
        {**POLICY_SLA, "sla_started_at": None, "sla_resolution_due_at": None},
        {**POLICY_SLA, "sla_started_at": None},
        armed(RESPONSE_KEY),
        [("TICKET_SLA_STAGE_ENTERED", {"stage": "resolution", "enteredAt": NOW})],
        {RESPONSE_KEY: ("armed", RESPONSE_DUE), RESOLUTION_KEY: ("armed", RESOLUTION_DUE)},
        id="due-appears-entered-at-commit-time",
    ),
    pytest.param(
        POLICY_SLA,
        {**POLICY_SLA, "sla_resolution_due_at": MOVED_DUE},
        armed(RESPONSE_KEY, RESOLUTION_KEY),
        [],
        {RESPONSE_KEY: ("armed", RESPONSE_DUE), RESOLUTION_KEY: ("armed", MOVED_DUE)},
        id="due-moves",
    ),
    pytest.param(
        POLICY_SLA,
        {**POLICY_SLA, "sla_paused_at": NOW},
        armed(RESPONSE_KEY, RESOLUTION_KEY),
        [],
        {RESPONSE_KEY: ("paused", RESPONSE_DUE), RESOLUTION_KEY: ("paused", RESOLUTION_DUE)},
        id="pause",
    ),
    pytest.param(
        {**POLICY_SLA, "sla_paused_at": EARLIER},
        {**POLICY_SLA, "sla_resolution_due_at": MOVED_DUE, "sla_total_pause_minutes": 90},
        armed(RESPONSE_KEY, RESOLUTION_KEY, state="paused"),
        [],
        {RESPONSE_KEY: ("armed", RESPONSE_DUE), RESOLUTION_KEY: ("armed", MOVED_DUE)},
        id="resume-with-shifted-due",
    ),
    pytest.param(
        {**POLICY_SLA, "sla_paused_at": EARLIER, "sla_response_at": EARLIER, "sla_response_met": True},
        {**POLICY_SLA, "sla_response_at": EARLIER, "sla_response_met": True},
        armed(RESOLUTION_KEY, state="paused"),
        [],
        {RESOLUTION_KEY: ("armed", RESOLUTION_DUE)},
        id="resume-leaves-a-completed-stage-alone",
    ),
    pytest.param(
        POLICY_SLA,
        {**POLICY_SLA, "sla_response_at": CLOSE_TIME, "sla_response_met": True},
        armed(RESPONSE_KEY, RESOLUTION_KEY),
        [
            (
                "TICKET_SLA_STAGE_MET",
                {"stage": "response", "metAt": CLOSE_TIME, "targetAt": RESPONSE_DUE, "slaPolicyId": POLICY},
            )
        ],
        {RESPONSE_KEY: ("settled", RESPONSE_DUE), RESOLUTION_KEY: ("armed", RESOLUTION_DUE)},
        id="first-response-met",
    ),
    pytest.param(
        {**POLICY_SLA, "sla_paused_at": EARLIER},
        {**POLICY_SLA, "sla_paused_at": EARLIER, "sla_resolution_met": True},
        armed(RESOLUTION_KEY, state="paused"),
        [("TICKET_SLA_STAGE_MET", {"stage": "resolution", "metAt": NOW})],
        {RESOLUTION_KEY: ("settled", RESOLUTION_DUE)},
        id="met-flag-while-paused",
    ),
    pytest.param(
        POLICY_SLA,
        {**POLICY_SLA, "sla_response_at": LATER, "sla_response_met": False},
        armed(RESPONSE_KEY, state="fired"),
        [],
        {RESPONSE_KEY: ("fired", RESPONSE_DUE)},
        id="no-met-after-breach-fired",
    ),
    pytest.param(
        POLICY_SLA,
        {**POLICY_SLA, "sla_response_at": CLOSE_TIME},
        FakeTimers(),
        [("TICKET_SLA_STAGE_MET", {"stage": "response"})],
        {},
        id="no-timer-met-on-time",
    ),
    pytest.param(
        POLICY_SLA,
        {**POLICY_SLA, "sla_response_at": LATER},
        FakeTimers(),
        [],
        {},
        id="no-timer-late-gets-no-verdict",
    ),
    pytest.param(
        POLICY_SLA,
        {**POLICY_SLA, "sla_policy_id": None, "sla_response_due_at": None, "sla_resolution_due_at": None},
        armed(RESPONSE_KEY, RESOLUTION_KEY),
        [],
        {},
        id="policy-removed",
    ),
    pytest.param(
        {"itil_priority_level": 3},
        {**POLICY_SLA, "itil_priority_level": 3},
        armed(ITIL_KEY),
        [
            ("TICKET_SLA_STAGE_ENTERED", {"stage": "response"}),
            ("TICKET_SLA_STAGE_ENTERED", {"stage": "resolution"}),
        ],
        {RESPONSE_KEY: ("armed", RESPONSE_DUE), RESOLUTION_KEY: ("armed", RESOLUTION_DUE)},
        id="policy-replaces-itil-fallback",
    ),
]


@pytest.mark.parametrize(("before", "after", "timers", "expected", "timers_after"), SLA_POLICY_CASES)
def test_sla_policy_model(
    before: dict[str, Any],
    after: dict[str, Any],
    timers: FakeTimers,
    expected: Expected,
    timers_after: dict[str, tuple[str, str]],
) -> None:
    timers = FakeTimers(dict(timers.timers))  # parametrize shares the instance between runs
    result = run([ticket_upd(before, after)], timers=timers)
    check(result, expected)
    assert timer_view(timers) == {k: (s, at(d).isoformat()) for k, (s, d) in timers_after.items()}


# --- SLA: ITIL fallback ------------------------------------------------------------------------------

ITIL_TARGET = "2026-01-02T05:00:00.000Z"  # EARLIER (01:00) + 4 h for level 2


def test_itil_ticket_created_enters_resolution() -> None:
    result = run([ins(TICKETS, ticket_row(itil_priority_level=2))])
    check(
        result,
        [
            ("TICKET_CREATED", {}),
            (
                "TICKET_SLA_STAGE_ENTERED",
                {"slaPolicyId": TENANT, "stage": "resolution", "enteredAt": EARLIER, "targetAt": ITIL_TARGET},
            ),
        ],
    )
    assert timer_view(result.timers) == {ITIL_KEY: ("armed", at(ITIL_TARGET).isoformat())}
    assert result.timers.timers[ITIL_KEY].data == {"slaPolicyId": TENANT}


@pytest.mark.parametrize(
    ("level", "target"),
    [
        (1, "2026-01-02T02:00:00.000Z"),
        (3, "2026-01-03T01:00:00.000Z"),
        (4, "2026-01-05T01:00:00.000Z"),
        (5, "2026-01-09T01:00:00.000Z"),
        (9, "2026-01-03T01:00:00.000Z"),
    ],
)
def test_itil_targets(level: int, target: str) -> None:
    result = run([ins(TICKETS, ticket_row(itil_priority_level=level))])
    assert result.envelopes[1].payload["targetAt"] == target


def test_itil_ticket_created_closed_or_without_level_has_no_stage() -> None:
    assert run([ins(TICKETS, ticket_row(itil_priority_level=2, is_closed=True))]).types == ["TICKET_CREATED"]
    assert run([ins(TICKETS, ticket_row(itil_priority_level=None))]).types == ["TICKET_CREATED"]
    assert run([ins(TICKETS, ticket_row(itil_priority_level=2, entered_at=None))]).types == ["TICKET_CREATED"]


CLOSE = {"status_id": CLOSED_STATUS, "is_closed": True, "closed_at": CLOSE_TIME}

SLA_ITIL_CASES = [
    pytest.param(
        {"itil_priority_level": 2},
        {"itil_priority_level": 1, "itil_urgency": 1, "priority_id": P2},
        armed(ITIL_KEY, due=ITIL_TARGET),
        ["TICKET_PRIORITY_CHANGED", "TICKET_UPDATED"],
        {ITIL_KEY: ("armed", "2026-01-02T02:00:00.000Z")},
        id="level-change-moves-the-timer",
    ),
    pytest.param(
        {"itil_priority_level": 2},
        {"itil_priority_level": 1},
        FakeTimers(),
        ["TICKET_UPDATED"],
        {},
        id="level-change-without-timer-arms-nothing",
    ),
    pytest.param(
        {"itil_priority_level": None},
        {"itil_priority_level": 2},
        FakeTimers(),
        ["TICKET_UPDATED", "TICKET_SLA_STAGE_ENTERED"],
        {ITIL_KEY: ("armed", ITIL_TARGET)},
        id="level-first-set-enters",
    ),
    pytest.param(
        {"itil_priority_level": 2},
        {"itil_priority_level": None},
        armed(ITIL_KEY, due=ITIL_TARGET),
        ["TICKET_UPDATED"],
        {},
        id="level-cleared-forgets",
    ),
    pytest.param(
        {"itil_priority_level": 2},
        {"itil_priority_level": 2, **CLOSE},
        armed(ITIL_KEY, due=ITIL_TARGET),
        ["TICKET_STATUS_CHANGED", "TICKET_CLOSED", "TICKET_SLA_STAGE_MET"],
        {ITIL_KEY: ("settled", ITIL_TARGET)},
        id="close-before-due-is-met",
    ),
    pytest.param(
        {"itil_priority_level": 2},
        {"itil_priority_level": 2, **CLOSE},
        armed(ITIL_KEY, due=ITIL_TARGET, state="fired"),
        ["TICKET_STATUS_CHANGED", "TICKET_CLOSED"],
        {ITIL_KEY: ("fired", ITIL_TARGET)},
        id="close-after-breach-fired-no-met",
    ),
    pytest.param(
        {"itil_priority_level": 2},
        {"itil_priority_level": 2, **CLOSE},
        FakeTimers(),
        ["TICKET_STATUS_CHANGED", "TICKET_CLOSED", "TICKET_SLA_STAGE_MET"],
        {},
        id="close-without-timer-on-time-by-entered_at",
    ),
    pytest.param(
        {"itil_priority_level": 1, "entered_at": "2026-01-01T00:00:00.000Z"},
        {"itil_priority_level": 1, "entered_at": "2026-01-01T00:00:00.000Z", **CLOSE},
        FakeTimers(),
        ["TICKET_STATUS_CHANGED", "TICKET_CLOSED"],
        {},
        id="close-without-timer-late-no-verdict",
    ),
    pytest.param(
        {"itil_priority_level": 2, "status_id": CLOSED_STATUS, "is_closed": True},
        {"itil_priority_level": 2, "status_id": OPEN},
        FakeTimers(),
        ["TICKET_STATUS_CHANGED", "TICKET_REOPENED", "TICKET_UPDATED"],
        {},
        id="reopen-starts-no-new-stage",
    ),
]


@pytest.mark.parametrize(("before", "after", "timers", "types", "timers_after"), SLA_ITIL_CASES)
def test_sla_itil_model(
    before: dict[str, Any],
    after: dict[str, Any],
    timers: FakeTimers,
    types: list[str],
    timers_after: dict[str, tuple[str, str]],
) -> None:
    timers = FakeTimers(dict(timers.timers))
    result = run([ticket_upd(before, after)], timers=timers)
    assert result.types == types
    assert timer_view(timers) == {k: (s, at(d).isoformat()) for k, (s, d) in timers_after.items()}
    for envelope in result.envelopes:
        if envelope.event_type == "TICKET_SLA_STAGE_MET":
            assert envelope.payload["metAt"] == CLOSE_TIME
            assert envelope.payload["slaPolicyId"] == TENANT
            assert envelope.payload["targetAt"] == ITIL_TARGET


# --- SLA: timers fired by the framework ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "stage", "policy"),
    [
        (RESPONSE_KEY, "response", POLICY),
        (RESOLUTION_KEY, "resolution", POLICY),
        (ITIL_KEY, "resolution", TENANT),
    ],
)
def test_fire_breaches_at_the_due_time(key: str, stage: str, policy: str) -> None:
    timers = armed(key, due=RESPONSE_DUE)
    timer = timers.timers[key]
    drafts = TicketDeriver().fire(timer, base_state())
    assert len(drafts) == 1
    draft = drafts[0]
    env = build_envelope(
        draft, slot="t", lsn=0x16B3748, xid=1000, commit_time=COMMIT, table=TICKETS, timer=True
    )
    assert env.event_type == "TICKET_SLA_STAGE_BREACHED"
    assert env.idempotency_key == f"TICKET_SLA_STAGE_BREACHED:{TENANT}:{TICKET}:{stage}@{RESPONSE_DUE}"
    assert env.timestamp == RESPONSE_DUE
    assert env.payload == {
        "tenantId": TENANT,
        "occurredAt": RESPONSE_DUE,
        "ticketId": TICKET,
        "slaPolicyId": policy,
        "stage": stage,
        "breachedAt": RESPONSE_DUE,
        "targetAt": RESPONSE_DUE,
        "overdueBySeconds": 0,
    }
    assert (draft.timer_stage, draft.due_at) == (stage, at(RESPONSE_DUE))


def test_fire_without_policy_in_timer_data_emits_nothing() -> None:
    timers = FakeTimers()
    timers.arm(
        RESPONSE_KEY, ARMING, tenant=TENANT, subject_id=TICKET, stage="response", due_at=at(RESPONSE_DUE)
    )
    assert TicketDeriver().fire(timers.timers[RESPONSE_KEY], base_state()) == []


def test_itil_lifecycle_breach_then_close_gives_one_verdict() -> None:
    """Created → the framework fires the due timer → a later close finds it fired: BREACHED only."""
    deriver = TicketDeriver()
    timers = FakeTimers()
    created = run([ins(TICKETS, ticket_row(itil_priority_level=1))], timers=timers)
    assert created.types == ["TICKET_CREATED", "TICKET_SLA_STAGE_ENTERED"]
    timer = timers.timers[ITIL_KEY]
    breached = deriver.fire(timer, base_state())
    timers.mark_fired(ITIL_KEY)
    assert [d.event_type for d in breached] == ["TICKET_SLA_STAGE_BREACHED"]
    closed = run(
        [ticket_upd({"itil_priority_level": 1}, {"itil_priority_level": 1, **CLOSE})],
        timers=timers,
        commit_time=datetime(2026, 1, 2, 8, tzinfo=UTC),
    )
    assert closed.types == ["TICKET_STATUS_CHANGED", "TICKET_CLOSED"]


def test_policy_lifecycle_move_pause_resume_met() -> None:
    timers = FakeTimers()
    run([ins(TICKETS, ticket_row(**POLICY_SLA))], timers=timers)
    run([ticket_upd(POLICY_SLA, {**POLICY_SLA, "sla_paused_at": NOW})], timers=timers)
    assert {t.state for t in timers.timers.values()} == {"paused"}
    resumed = {**POLICY_SLA, "sla_resolution_due_at": MOVED_DUE}
    run([ticket_upd({**POLICY_SLA, "sla_paused_at": NOW}, resumed)], timers=timers)
    assert timer_view(timers)[RESOLUTION_KEY] == ("armed", at(MOVED_DUE).isoformat())
    met = run(
        [ticket_upd(resumed, {**resumed, "sla_resolution_at": LATER, "sla_resolution_met": True})],
        timers=timers,
    )
    check(met, [("TICKET_SLA_STAGE_MET", {"stage": "resolution", "metAt": LATER, "targetAt": MOVED_DUE})])
    assert timers.timers[RESOLUTION_KEY].state == "settled"
    again = run([ticket_upd(resumed, {**resumed, "sla_resolution_due_at": RESOLUTION_DUE})], timers=timers)
    assert again.types == []
    assert timers.timers[RESOLUTION_KEY].state == "settled"


# --- SLA: threshold timers (TICKET_SLA_THRESHOLD_REACHED) ---------------------------------------------

RESPONSE_TWIN = f"{RESPONSE_KEY}:threshold"
RESOLUTION_TWIN = f"{RESOLUTION_KEY}:threshold"
ITIL_TWIN = f"{ITIL_KEY}:threshold"
# 75 % of each stage's time from EARLIER (01:00): response to 04:00, resolution to 11:00
RESPONSE_THRESHOLD = "2026-01-02T03:15:00.000Z"
RESOLUTION_THRESHOLD = "2026-01-02T08:30:00.000Z"


def twins(timers: FakeTimers) -> dict[str, tuple[str, str]]:
    return {
        k: (t.state, canonical_time(t.due_at)) for k, t in timers.timers.items() if k.endswith(":threshold")
    }


def test_threshold_twins_are_armed_with_their_stages() -> None:
    result = run([ins(TICKETS, ticket_row(**POLICY_SLA))])
    assert twins(result.timers) == {
        RESPONSE_TWIN: ("armed", RESPONSE_THRESHOLD),
        RESOLUTION_TWIN: ("armed", RESOLUTION_THRESHOLD),
    }
    twin = result.timers.timers[RESPONSE_TWIN]
    assert (twin.tenant, twin.subject_id, twin.stage) == (TENANT, TICKET, "response")
    assert twin.data == {
        "slaPolicyId": POLICY,
        "startedAt": EARLIER,
        "targetAt": RESPONSE_DUE,
        "thresholdPercent": 75,
    }
    assert result.types == ["TICKET_CREATED", "TICKET_SLA_STAGE_ENTERED", "TICKET_SLA_STAGE_ENTERED"]


def test_itil_threshold_and_level_change_move_it() -> None:
    timers = FakeTimers()
    run([ins(TICKETS, ticket_row(itil_priority_level=2))], timers=timers)  # 4 h from 01:00
    assert twins(timers) == {ITIL_TWIN: ("armed", "2026-01-02T04:00:00.000Z")}
    assert timers.timers[ITIL_TWIN].data["slaPolicyId"] == TENANT
    run([ticket_upd({"itil_priority_level": 2}, {"itil_priority_level": 3})], timers=timers)  # 24 h
    assert twins(timers) == {ITIL_TWIN: ("armed", "2026-01-02T19:00:00.000Z")}


def test_the_share_is_the_derivers_setting() -> None:
    tx = make_tx([ins(TICKETS, ticket_row(**POLICY_SLA))], commit_time=COMMIT)
    timers = FakeTimers()
    TicketDeriver(sla_threshold_share=0.5).derive(tx, base_state(), timers)
    assert twins(timers)[RESPONSE_TWIN] == ("armed", "2026-01-02T02:30:00.000Z")
    assert timers.timers[RESPONSE_TWIN].data["thresholdPercent"] == 50


def test_the_registry_passes_the_share_and_keeps_the_default() -> None:
    (tickets,) = [d for d in default_derivers(sla_threshold_share=0.9) if d.name == "tickets"]
    assert isinstance(tickets, TicketDeriver) and tickets.sla_threshold_share == 0.9
    (default,) = [d for d in default_derivers() if d.name == "tickets"]
    assert (
        isinstance(default, TicketDeriver) and default.sla_threshold_share == DEFAULT_THRESHOLD_SHARE == 0.75
    )
    assert DEFAULT_SLA_THRESHOLD_SHARE == DEFAULT_THRESHOLD_SHARE  # the setting's default is the deriver's


@pytest.mark.parametrize("share", [0, 1, 1.5, -0.25])
def test_a_share_outside_zero_to_one_is_refused(share: float) -> None:
    with pytest.raises(ValueError, match="sla_threshold_share"):
        TicketDeriver(sla_threshold_share=share)


def test_a_stage_without_time_has_no_threshold() -> None:
    result = run([ins(TICKETS, ticket_row(**{**POLICY_SLA, "sla_response_due_at": EARLIER}))])
    assert set(twins(result.timers)) == {RESOLUTION_TWIN}


def test_fire_threshold_at_its_time() -> None:
    timers = run([ins(TICKETS, ticket_row(**POLICY_SLA))]).timers
    (draft,) = TicketDeriver().fire(timers.timers[RESPONSE_TWIN], base_state())
    env = build_envelope(
        draft, slot="t", lsn=0x16B3748, xid=1000, commit_time=COMMIT, table=TICKETS, timer=True
    )
    assert env.event_type == "TICKET_SLA_THRESHOLD_REACHED"
    assert (
        env.idempotency_key == f"TICKET_SLA_THRESHOLD_REACHED:{TENANT}:{TICKET}:response@{RESPONSE_THRESHOLD}"
    )
    assert env.timestamp == RESPONSE_THRESHOLD
    assert env.payload == {
        "tenantId": TENANT,
        "occurredAt": RESPONSE_THRESHOLD,
        "ticketId": TICKET,
        "phase": "response",
        "thresholdPercent": 75,
        "slaPolicyId": POLICY,
        "targetAt": RESPONSE_DUE,
    }
    # the stage timer still breaches as before
    (breach,) = TicketDeriver().fire(timers.timers[RESPONSE_KEY], base_state())
    assert breach.event_type == "TICKET_SLA_STAGE_BREACHED"


def test_threshold_pauses_and_moves_with_the_pause_service() -> None:
    timers = FakeTimers()
    run([ins(TICKETS, ticket_row(**POLICY_SLA))], timers=timers)
    paused = {**POLICY_SLA, "sla_paused_at": NOW}
    run([ticket_upd(POLICY_SLA, paused)], timers=timers)
    assert {state for state, _ in twins(timers).values()} == {"paused"}
    # resumed after 90 minutes: the pause service shifts the due time and counts the pause
    resumed = {
        **POLICY_SLA,
        "sla_response_due_at": "2026-01-02T05:30:00.000Z",
        "sla_resolution_due_at": MOVED_DUE,
        "sla_total_pause_minutes": 90,
    }
    run([ticket_upd(paused, resumed)], timers=timers)
    assert twins(timers) == {  # each moved by the 90 paused minutes
        RESPONSE_TWIN: ("armed", "2026-01-02T04:45:00.000Z"),
        RESOLUTION_TWIN: ("armed", "2026-01-02T10:00:00.000Z"),
    }


def test_met_before_the_threshold_settles_it_and_a_fired_one_never_fires_again() -> None:
    timers = FakeTimers()
    run([ins(TICKETS, ticket_row(**POLICY_SLA))], timers=timers)
    timers.mark_fired(RESOLUTION_TWIN)  # the watermark passed 08:30
    met = {**POLICY_SLA, "sla_response_at": NOW, "sla_response_met": True}
    result = run([ticket_upd(POLICY_SLA, met)], timers=timers)
    assert result.types == ["TICKET_SLA_STAGE_MET"]
    moved = {**met, "sla_resolution_due_at": MOVED_DUE}
    run([ticket_upd(met, moved)], timers=timers)
    assert twins(timers) == {
        RESPONSE_TWIN: ("settled", RESPONSE_THRESHOLD),
        RESOLUTION_TWIN: ("fired", RESOLUTION_THRESHOLD),  # once per stage instance
    }
    assert timer_view(timers)[RESOLUTION_KEY] == ("armed", at(MOVED_DUE).isoformat())


def test_threshold_twins_go_with_the_stage() -> None:
    timers = FakeTimers()
    run([ins(TICKETS, ticket_row(**POLICY_SLA))], timers=timers)
    run([ticket_upd(POLICY_SLA, {**POLICY_SLA, "sla_response_due_at": None})], timers=timers)
    assert set(twins(timers)) == {RESOLUTION_TWIN}  # the stage was withdrawn
    run([ticket_upd(POLICY_SLA, {**POLICY_SLA, "sla_policy_id": None})], timers=timers)
    assert twins(timers) == {}  # the policy was removed
    run([ins(TICKETS, ticket_row(itil_priority_level=2))], timers=timers)
    assert set(twins(timers)) == {ITIL_TWIN}
    run([dele(TICKETS, ticket_row(itil_priority_level=2))], timers=timers)
    assert timers.timers == {}  # the ticket was deleted


def test_the_share_setting_comes_from_the_environment_and_the_config_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CDC_CONFIG", raising=False)
    monkeypatch.delenv("CDC_SLA_THRESHOLD_SHARE", raising=False)
    assert load_settings().sla_threshold_share == 0.75
    config = tmp_path / "cdc.toml"
    config.write_text("sla_threshold_share = 0.6\n")
    monkeypatch.setenv("CDC_CONFIG", str(config))
    assert load_settings().sla_threshold_share == 0.6
    monkeypatch.setenv("CDC_SLA_THRESHOLD_SHARE", "0.8")  # a variable over the file
    assert load_settings().sla_threshold_share == 0.8
    monkeypatch.setenv("CDC_SLA_THRESHOLD_SHARE", "1")
    with pytest.raises(ConfigError, match="sla_threshold_share"):
        load_settings()
