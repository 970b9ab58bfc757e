"""Bundle events, TICKET_MERGED and TICKET_SPLIT (derivers.ticket_bundles)."""

from __future__ import annotations

from typing import Any

import pytest

from derivers.testing import FakeChange
from tests.unit.derive_cases import (
    CHILD1,
    CHILD2,
    CHILD3,
    MASTER,
    NOW,
    SETTINGS,
    STAFF,
    TENANT,
    TICKETS,
    USER_STAFF,
    Expected,
    check,
    dele,
    ins,
    run,
    ticket_row,
    ticket_upd,
    upd,
)

# --- bundles -------------------------------------------------------------------------------------------


def settings_row(master: str, mode: str = "sync_updates") -> dict[str, Any]:
    return {"tenant": TENANT, "master_ticket_id": master, "mode": mode, "reopen_on_child_reply": False}


def attach(child: str, master: str | None, old: str | None = None) -> FakeChange:
    return upd(
        TICKETS,
        ticket_row(child, master_ticket_id=old, updated_by=None),
        ticket_row(child, master_ticket_id=master, updated_by=STAFF, updated_at=NOW),
    )


BUNDLE_CASES = [
    pytest.param(
        [ins(SETTINGS, settings_row(MASTER)), attach(CHILD1, MASTER), attach(CHILD2, MASTER)],
        [
            (
                "TICKET_MERGED",
                {
                    "sourceTicketId": CHILD1,
                    "targetTicketId": MASTER,
                    "mergedAt": NOW,
                    "reason": "bundle:sync_updates",
                    **USER_STAFF,
                },
            ),
            ("TICKET_MERGED", {"sourceTicketId": CHILD2, "reason": "bundle:sync_updates"}),
        ],
        [CHILD1, CHILD2],
        id="create-bundle-sync-updates",
    ),
    pytest.param(
        [attach(CHILD1, MASTER), ins(SETTINGS, settings_row(MASTER, "link_only"))],
        [("TICKET_MERGED", {"reason": "bundle:link_only"})],
        [CHILD1],
        id="create-bundle-link-only",
    ),
    pytest.param(
        [attach(CHILD3, MASTER)],
        [("TICKET_MERGED", {"sourceTicketId": CHILD3, "reason": "bundle:added_children"})],
        [CHILD3],
        id="add-children",
    ),
    pytest.param(
        [
            dele(SETTINGS, settings_row(MASTER)),
            ins(SETTINGS, settings_row(CHILD1)),
            attach(CHILD1, None, old=MASTER),
            attach(MASTER, CHILD1),
            attach(CHILD2, CHILD1, old=MASTER),
        ],
        [
            (
                "TICKET_MERGED",
                {"sourceTicketId": MASTER, "targetTicketId": CHILD1, "reason": "bundle:promote_master"},
            )
        ],
        [MASTER],
        id="promote-master",
    ),
    pytest.param(
        [attach(CHILD1, None, old=MASTER)],
        [
            (
                "TICKET_SPLIT",
                {
                    "originalTicketId": MASTER,
                    "newTicketIds": [CHILD1],
                    "splitAt": NOW,
                    "reason": "bundle:remove_child",
                },
            )
        ],
        [MASTER],
        id="remove-child",
    ),
    pytest.param(
        [
            attach(CHILD1, None, old=MASTER),
            attach(CHILD2, None, old=MASTER),
            dele(SETTINGS, settings_row(MASTER)),
        ],
        [("TICKET_SPLIT", {"newTicketIds": [CHILD1, CHILD2], "reason": "bundle:unbundle_master"})],
        [MASTER],
        id="unbundle",
    ),
    pytest.param(
        [attach(CHILD1, None, old=MASTER), dele(SETTINGS, settings_row(MASTER))],
        [("TICKET_SPLIT", {"newTicketIds": [CHILD1], "reason": "bundle:unbundle_master"})],
        [MASTER],
        id="remove-last-child-reads-as-unbundle",
    ),
    pytest.param(
        [
            attach(CHILD1, None, old=MASTER),
            dele(SETTINGS, settings_row(MASTER)),
            ticket_upd(
                {"master_ticket_id": MASTER, "title": "a"}, {"master_ticket_id": MASTER, "title": "b"}, CHILD2
            ),
        ],
        [
            ("TICKET_SPLIT", {"newTicketIds": [CHILD1], "reason": "bundle:remove_child"}),
            ("TICKET_UPDATED", {}),
        ],
        [MASTER, CHILD2],
        id="settings-deleted-but-a-child-still-points",
    ),
]


@pytest.mark.parametrize(("changes", "expected", "subjects"), BUNDLE_CASES)
def test_bundles(changes: list[FakeChange], expected: Expected, subjects: list[str]) -> None:
    result = run(changes)
    check(result, expected)
    assert [d.draft.subject_id for d in result.derived] == subjects
