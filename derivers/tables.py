"""The application tables the rules read, schema-qualified as the stream names them.

One definition for the family modules and for their ``READS`` declarations, and the audit table
whose rows name the actor of a ticket's changes (:class:`derivers.toolkit.AuditTable`).
"""

from __future__ import annotations

from typing import Final

from .toolkit import AuditTable

TICKETS: Final = "public.tickets"
COMMENTS: Final = "public.comments"
TICKET_RESOURCES: Final = "public.ticket_resources"
BUNDLE_SETTINGS: Final = "public.ticket_bundle_settings"
BUNDLE_MIRRORS: Final = "public.ticket_bundle_mirrors"
AUDIT_LOGS: Final = "public.ticket_audit_logs"
TIME_ENTRIES: Final = "public.time_entries"
STATUSES: Final = "public.statuses"
USERS: Final = "public.users"

#: ``ticket_audit_logs``: written by the application in the transaction of a ticket's change,
#: with who acted; keyed by the ticket, so it names the actor of every ticket-subject event.
TICKET_AUDIT: Final = AuditTable(AUDIT_LOGS, "ticket_id")
