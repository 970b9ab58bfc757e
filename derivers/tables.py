"""The application tables the ticket rules read, schema-qualified as the stream names them.

One definition for the family modules (:mod:`derivers.tickets` imports the others, so they
cannot import their table names from it) and for their ``READS`` declarations.
"""

from __future__ import annotations

from typing import Final

TICKETS: Final = "public.tickets"
COMMENTS: Final = "public.comments"
TICKET_RESOURCES: Final = "public.ticket_resources"
BUNDLE_SETTINGS: Final = "public.ticket_bundle_settings"
BUNDLE_MIRRORS: Final = "public.ticket_bundle_mirrors"
AUDIT_LOGS: Final = "public.ticket_audit_logs"
TIME_ENTRIES: Final = "public.time_entries"
STATUSES: Final = "public.statuses"
USERS: Final = "public.users"
