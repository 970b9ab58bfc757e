"""The catalogued event types of the four families (tickets, scheduling, projects, time entries)
that no registered deriver emits, each with why the data cannot show it.

One definition: ``cdc catalog list`` prints the reason beside every type no deriver emits,
``docs/derivers.md`` lists the same table, and a test holds that every type of the four families
is either emitted by a registered deriver (its declared reads feed it) or named here — never both.
"""

from __future__ import annotations

from typing import Final

_NO_BILLING = (
    "no table in the schema: project_billing_configs / project_billing_schedule_entries / "
    "project_billing_cap_usage are not among the application tables this release watches"
)
_NO_TASK_COMMENTS = "no table in the schema: project task comments are not among the application tables"
_NEVER = "application context only: the application never emits it and no row records an approval"
_NO_SERVICE = (
    "no table in the schema: the required serviceName lives in service_catalog, which is not among "
    "the application tables (and requesterEmail is NULL for authenticated portal requests)"
)

NOT_DERIVED: Final[dict[str, str]] = {
    # tickets
    "TICKET_APPROVAL_REQUESTED": _NEVER,
    "TICKET_APPROVAL_GRANTED": _NEVER,
    "TICKET_APPROVAL_REJECTED": _NEVER,
    "TICKET_TAGS_CHANGED": "no table in the schema: tag_mappings is not among the application tables",
    "TICKET_AUTO_CLOSE_WARNING": (
        "no table in the schema: the auto-close job's ticket_auto_close_state and "
        "board_auto_close_rules are not among the application tables"
    ),
    # scheduling
    "APPOINTMENT_REQUEST_CREATED": _NO_SERVICE,
    "APPOINTMENT_REQUEST_APPROVED": _NO_SERVICE,
    "APPOINTMENT_REQUEST_DECLINED": _NO_SERVICE,
    "APPOINTMENT_REQUEST_CANCELLED": _NO_SERVICE,
    # projects
    "PROJECT_APPROVAL_REQUESTED": _NEVER,
    "PROJECT_APPROVAL_GRANTED": _NEVER,
    "PROJECT_APPROVAL_REJECTED": _NEVER,
    "PROJECT_BILLING_CONFIG_CREATED": _NO_BILLING,
    "PROJECT_BILLING_CONFIG_UPDATED": _NO_BILLING,
    "PROJECT_BILLING_CONFIG_DELETED": _NO_BILLING,
    "PROJECT_BILLING_PAYMENT_STATUS_CHANGED": _NO_BILLING,
    "PROJECT_BILLING_SCHEDULE_ENTRY_CREATED": _NO_BILLING,
    "PROJECT_BILLING_SCHEDULE_ENTRY_UPDATED": _NO_BILLING,
    "PROJECT_BILLING_SCHEDULE_ENTRY_DELETED": _NO_BILLING,
    "PROJECT_BILLING_SCHEDULE_STATUS_CHANGED": _NO_BILLING,
    "PROJECT_BUDGET_THRESHOLD_REACHED": _NO_BILLING,
    "PROJECT_BUDGET_EXCEEDED": _NO_BILLING,
    "PROJECT_MILESTONE_READY": _NO_BILLING,
    "PROJECT_TASK_COMMENT_CREATED": _NO_TASK_COMMENTS,
    "PROJECT_TASK_COMMENT_UPDATED": _NO_TASK_COMMENTS,
    "PROJECT_TASK_COMMENT_DELETED": _NO_TASK_COMMENTS,
    "TASK_COMMENT_ADDED": _NO_TASK_COMMENTS,
    "TASK_COMMENT_UPDATED": _NO_TASK_COMMENTS,
}
"""Event type → why no deriver emits it (the tables it would need are not in the schema, or only
the application's context knows it)."""
