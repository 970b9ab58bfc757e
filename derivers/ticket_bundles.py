"""Bundle events: TICKET_MERGED and TICKET_SPLIT from ``tickets.master_ticket_id`` and the
``ticket_bundle_settings`` rows of the same transaction (SPEC §5.4).

A bundle action is one transaction, so the rules read the whole of it:

* attach (``master_ticket_id`` NULL → M): one MERGED per child, reason ``bundle:<mode>`` when M's
  settings row was written in the transaction (bundle created), else ``bundle:added_children``;
* promote (ticket P goes M → NULL while M goes NULL → P): one MERGED source = M, target = P,
  reason ``bundle:promote_master``; the other children's M → P re-points are not events;
* detach (X → NULL, not a promotion): one SPLIT per old master X listing its detached children,
  reason ``bundle:unbundle_master`` when X's settings row was deleted and no ticket of the
  transaction still points at X, else ``bundle:remove_child``. Removing the last child deletes the
  settings row too, so it reads as unbundling a one-child bundle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from .base import Change
from .tables import BUNDLE_SETTINGS, TICKETS
from .toolkit import written_actor

if TYPE_CHECKING:
    from .tickets import TicketTx

BUNDLE_EVENTS: Final = ("TICKET_MERGED", "TICKET_SPLIT")

#: What these rules read (see ``derivers.base.Reads``); the actor is declared with the ticket rules.
READS: Final = (
    (TICKETS, ("tenant", "ticket_id", "master_ticket_id", "updated_by"), BUNDLE_EVENTS),
    (BUNDLE_SETTINGS, ("tenant", "master_ticket_id", "mode"), BUNDLE_EVENTS),
)

# (change, tenant, ticket, master before or after)
_Move = tuple[Change, str, str, str]


def bundle_events(ctx: TicketTx) -> None:
    attached: list[_Move] = []
    detached: list[_Move] = []
    for change in ctx.tickets:
        op = change.op
        if op == "update":
            if not change.changed("master_ticket_id"):
                continue
            before, after = change.before, change.after
            assert before is not None and after is not None
            old, new = before.get("master_ticket_id"), after.get("master_ticket_id")
            if new is not None and old is None:
                attached.append((change, after["tenant"], after["ticket_id"], new))
            elif old is not None and new is None:
                detached.append((change, after["tenant"], after["ticket_id"], old))
            # old → new re-points happen only inside a promotion: no event of their own.
        elif op == "insert":
            after = change.after
            assert after is not None
            new = after.get("master_ticket_id")
            if new is not None:
                attached.append((change, after["tenant"], after["ticket_id"], new))
    if not attached and not detached:
        return

    promoted = _promotions(ctx, attached, detached)
    written: dict[tuple[str, str], str] = {}
    deleted: set[tuple[str, str]] = set()
    for change in ctx.settings:
        if change.op == "delete" and change.before is not None:
            deleted.add((change.before["tenant"], change.before["master_ticket_id"]))
        elif change.after is not None:
            # Insert, or an upsert over a row (a delete + insert of one key folds to an update).
            written[(change.after["tenant"], change.after["master_ticket_id"])] = (
                change.after.get("mode") or ""
            )

    for move in attached:
        change, tenant, child, master = move
        if id(change) in promoted:
            continue
        mode = written.get((tenant, master))
        actor = ctx.declared_actor(tenant, child, master) or written_actor(change, "updated_by")
        ctx.emit(
            change,
            "TICKET_MERGED",
            tenant,
            child,
            actor,
            {
                "sourceTicketId": child,
                "targetTicketId": master,
                "mergedAt": ctx.occurred_at,
                "reason": f"bundle:{mode}" if mode else "bundle:added_children",
            },
        )

    groups: dict[tuple[str, str], list[_Move]] = {}
    for move in detached:
        if id(move[0]) not in promoted:
            groups.setdefault((move[1], move[3]), []).append(move)
    for (tenant, master), moves in groups.items():
        unbundled = (tenant, master) in deleted and not _still_pointing(ctx, tenant, master)
        first = moves[0][0]
        actor = ctx.declared_actor(tenant, master, moves[0][2]) or written_actor(first, "updated_by")
        ctx.emit(
            first,
            "TICKET_SPLIT",
            tenant,
            master,
            actor,
            {
                "originalTicketId": master,
                "newTicketIds": [move[2] for move in moves],
                "splitAt": ctx.occurred_at,
                "reason": "bundle:unbundle_master" if unbundled else "bundle:remove_child",
            },
        )


def _promotions(ctx: TicketTx, attached: list[_Move], detached: list[_Move]) -> set[int]:
    """Emit the promotion MERGED events; return the ids of the changes they account for."""
    if not attached or not detached:
        return set()
    joined = {(tenant, ticket): move for move in attached for _, tenant, ticket, _ in [move]}
    promoted: set[int] = set()
    for leaving in detached:
        change, tenant, new_master, old_master = leaving
        joining = joined.get((tenant, old_master))
        if joining is None or joining[3] != new_master:
            continue
        promoted.update((id(change), id(joining[0])))
        old_change = joining[0]
        actor = ctx.declared_actor(tenant, old_master, new_master) or written_actor(old_change, "updated_by")
        ctx.emit(
            old_change,
            "TICKET_MERGED",
            tenant,
            old_master,
            actor,
            {
                "sourceTicketId": old_master,
                "targetTicketId": new_master,
                "mergedAt": ctx.occurred_at,
                "reason": "bundle:promote_master",
            },
        )
    return promoted


def _still_pointing(ctx: TicketTx, tenant: str, master: str) -> bool:
    """Whether a ticket written in this transaction is left pointing at ``master``."""
    for change in ctx.tickets:
        row = change.after
        if row is not None and row.get("master_ticket_id") == master and row["tenant"] == tenant:
            return True
    return False
