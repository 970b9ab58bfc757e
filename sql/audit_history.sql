-- History from the application's own audit log (cdc/audit_history.py): the rows of
-- public.ticket_audit_logs that `cdc backfill --from-audit-log` maps to ticket events.
--
-- Read through a server-side cursor, in (occurred_at, audit_id) order, so that the events come
-- in the order the application recorded the changes and a re-run yields them in the same order.
-- Every filter is optional (NULL: no filter): tenant; occurred_at from %(since)s (inclusive) to
-- %(until)s (exclusive); event_type among %(audit_types)s, the audit event types that can yield
-- one of the requested events. Ids come as text (canonical lower-case uuids), changes and details
-- as jsonb (parsed by psycopg).

-- name: audit_rows
SELECT tenant::text AS tenant,
       audit_id::text AS audit_id,
       ticket_id::text AS ticket_id,
       event_type,
       entity_type,
       entity_id,
       actor_type,
       actor_user_id::text AS actor_user_id,
       actor_contact_id::text AS actor_contact_id,
       source,
       occurred_at,
       changes,
       details
  FROM public.ticket_audit_logs
 WHERE (%(tenant)s::uuid IS NULL OR tenant = %(tenant)s::uuid)
   AND (%(since)s::timestamptz IS NULL OR occurred_at >= %(since)s::timestamptz)
   AND (%(until)s::timestamptz IS NULL OR occurred_at < %(until)s::timestamptz)
   AND (%(audit_types)s::text[] IS NULL OR event_type = ANY (%(audit_types)s::text[]))
 ORDER BY occurred_at, audit_id
