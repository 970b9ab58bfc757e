-- `cdc lag` (cdc/lag.py): how far the watcher of a slot is behind, read from the server alone.
-- {schema} is the watcher's own schema (default cdc), filled with psycopg.sql.Identifier.

-- name: slot_position
-- The slot (any database: the caller refuses one of another database by name) and the server's
-- WAL position and clock, in one statement so the differences are of one moment. A lost slot has
-- no restart_lsn: its retained bytes are NULL.
SELECT s.slot_type,
       s.database,
       s.database IS NOT DISTINCT FROM current_database() AS here,
       pg_current_wal_lsn()::text AS current_lsn,
       s.confirmed_flush_lsn::text AS confirmed_flush_lsn,
       s.restart_lsn::text AS restart_lsn,
       pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::bigint AS lag_bytes,
       pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::bigint AS retained_bytes,
       s.wal_status,
       s.safe_wal_size,
       s.active_pid,
       now() AS server_time
  FROM pg_replication_slots s
 WHERE s.slot_name = %(slot)s

-- name: slot_row
-- The slot's whole row, whatever columns this server version has (PG 16 `conflicting`, PG 17
-- `invalidation_reason`), and the database connected to: judged by cdc/slot_health.py.
SELECT to_jsonb(s) AS slot, current_database() AS here
  FROM pg_replication_slots s WHERE s.slot_name = %(slot)s

-- name: own_tables
-- Which of the watcher's tables exist in this database (a watcher whose own tables live in the
-- outbox database of another server has none here).
SELECT to_regclass(format('%%I.checkpoints', %(schema)s::text)) IS NOT NULL AS has_checkpoints,
       to_regclass(format('%%I.outbox', %(schema)s::text)) IS NOT NULL AS has_outbox

-- name: waiting_watchers
-- Standby watchers of the slot: sessions of this database that cdc/standby.py names
-- `cdc watch <slot>: standby` (truncated to 63 bytes as the server stores it) while they wait for
-- the slot's lock.
SELECT count(*)::int
  FROM pg_stat_activity
 WHERE datname = current_database()
   AND application_name = left('cdc watch ' || %(slot)s::text || ': standby', 63)

-- name: events_last_minute
-- Outbox rows created in the last minute, counted over at most %(cap)s of the newest rows: a
-- backward walk of the primary key (seq is the delivery order, and created_at grows with it for
-- the one watcher that writes), so the cost stays bounded however long the outbox is.
SELECT count(*) FILTER (WHERE created_at >= now() - interval '1 minute')::int AS events
  FROM (SELECT created_at FROM {schema}.outbox ORDER BY seq DESC LIMIT %(cap)s) AS newest
