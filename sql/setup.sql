-- Setup of the watcher's own objects.  Every statement is idempotent.
-- Identifiers from configuration are {placeholders} filled with psycopg.sql.Identifier.

-- name: server_facts
SELECT current_setting('wal_level') AS wal_level,
       current_setting('server_version_num')::int AS version_num,
       current_database() AS database,
       (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user) AS can_replicate

-- name: schema_exists
SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %(schema)s)

-- name: create_schema
-- Only when it is missing: even with IF NOT EXISTS the statement needs CREATE on the database,
-- which a least-privilege watcher with a schema of its own does not have.
CREATE SCHEMA {schema}

-- name: tables_for_the_schema_owner
-- Tables of the watcher's schema that the current role made but the schema's owner does not
-- own (`cdc setup` run by the tables' owner into a schema made for the watcher's role), where
-- the current role may give them away.
SELECT c.relname, pg_get_userbyid(n.nspowner)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s
  AND c.relkind IN ('r', 'p')
  AND c.relowner <> n.nspowner
  AND c.relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
  AND pg_has_role(current_user, n.nspowner, 'USAGE')

-- name: give_table_to
ALTER TABLE {table} OWNER TO {owner}

-- name: create_slots
-- Slots made by `cdc setup`, with the point their exported snapshot shows and whether the
-- reference-state bootstrap under that snapshot completed.
CREATE TABLE IF NOT EXISTS {schema}.slots (
    slot_name        text        PRIMARY KEY,
    publication      text        NOT NULL,
    consistent_point pg_lsn      NOT NULL,
    snapshot_name    text,
    bootstrapped_at  timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
)

-- name: record_slot
INSERT INTO {schema}.slots (slot_name, publication, consistent_point, snapshot_name)
VALUES (%(slot)s, %(publication)s, %(lsn)s::pg_lsn, %(snapshot)s)
ON CONFLICT (slot_name) DO UPDATE
   SET publication = EXCLUDED.publication, consistent_point = EXCLUDED.consistent_point,
       snapshot_name = EXCLUDED.snapshot_name, bootstrapped_at = NULL, bootstrapped_tables = NULL,
       created_at = now()

-- name: add_bootstrapped_tables
-- Which reference tables the bootstrap copied (NULL for slots recorded before this column:
-- their bootstrap is taken to have covered every reference table).
ALTER TABLE {schema}.slots ADD COLUMN IF NOT EXISTS bootstrapped_tables text[]

-- name: mark_bootstrapped
UPDATE {schema}.slots SET bootstrapped_at = now(), bootstrapped_tables = %(tables)s WHERE slot_name = %(slot)s

-- name: read_bootstrapped_tables
SELECT bootstrapped_at IS NOT NULL, bootstrapped_tables FROM {schema}.slots WHERE slot_name = %(slot)s

-- name: remove_bootstrapped_table
UPDATE {schema}.slots SET bootstrapped_tables = array_remove(bootstrapped_tables, %(table)s::text)
 WHERE slot_name = %(slot)s

-- name: add_bootstrapped_table
UPDATE {schema}.slots
   SET bootstrapped_tables = array_append(bootstrapped_tables, %(table)s::text)
 WHERE slot_name = %(slot)s AND NOT (%(table)s::text = ANY (bootstrapped_tables))

-- name: forget_slot
DELETE FROM {schema}.slots WHERE slot_name = %(slot)s

-- name: forget_checkpoint
-- The slot is gone (teardown, a recreated slot): its checkpoint (sql/checkpoints.sql) goes too.
DELETE FROM {schema}.checkpoints WHERE slot_name = %(slot)s RETURNING lsn::text

-- name: watcher_record_tables
-- Every table in this database that could be a watcher's slot record or checkpoint, whatever
-- the schema is called (`cdc tail --slot` must not consume a slot any of them names).
SELECT table_schema, table_name
FROM information_schema.columns
WHERE table_name IN ('slots', 'checkpoints') AND column_name = 'slot_name'
ORDER BY 1, 2

-- name: names_slot
SELECT EXISTS (SELECT 1 FROM {table} WHERE slot_name = %(slot)s)

-- name: create_slot_gaps
-- Changes a slot can no longer deliver, because the server invalidated it (reason 'lost':
-- max_slot_wal_keep_size) or it disappeared (reason 'missing': dropped, or a failover), and
-- `cdc setup` made a new slot of the same name.  ``from_lsn``/``from_time``: the last position
-- delivered (the checkpoint's end LSN and commit time; the old slot's consistent point and
-- creation time when nothing was delivered yet), written before the old slot is dropped so
-- the start survives a crash.  ``to_lsn``/``to_time``: the new slot's consistent point and
-- when it was made (NULL until then).  Changes committed after ``from`` and before ``to``
-- were never delivered; the times bound their commit times.
CREATE TABLE IF NOT EXISTS {schema}.slot_gaps (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slot_name   text        NOT NULL,
    reason      text        NOT NULL CHECK (reason IN ('lost', 'missing')),
    from_lsn    pg_lsn      NOT NULL,
    from_time   timestamptz,
    to_lsn      pg_lsn,
    to_time     timestamptz,
    opened_at   timestamptz NOT NULL DEFAULT now()
)

-- name: create_slot_gaps_open
-- At most one gap per slot waits for its new slot.
CREATE UNIQUE INDEX IF NOT EXISTS slot_gaps_open ON {schema}.slot_gaps (slot_name) WHERE to_lsn IS NULL

-- name: open_slot_gap
-- A gap left open by an earlier attempt that crashed keeps its (earlier) start.
INSERT INTO {schema}.slot_gaps (slot_name, reason, from_lsn, from_time)
SELECT %(slot)s, %(reason)s, COALESCE(c.lsn, s.consistent_point),
       CASE WHEN c.lsn IS NOT NULL THEN c.commit_time ELSE s.created_at END
  FROM (SELECT) AS one
  LEFT JOIN {schema}.checkpoints c ON c.slot_name = %(slot)s
  LEFT JOIN {schema}.slots s ON s.slot_name = %(slot)s
 WHERE COALESCE(c.lsn, s.consistent_point) IS NOT NULL
ON CONFLICT (slot_name) WHERE to_lsn IS NULL DO NOTHING

-- name: slot_gap_is_open
-- An open gap on an existing slot: `cdc setup` stopped between dropping the invalidated slot
-- and recording where its replacement starts.
SELECT EXISTS (SELECT 1 FROM {schema}.slot_gaps WHERE slot_name = %(slot)s AND to_lsn IS NULL)

-- name: close_slot_gap
UPDATE {schema}.slot_gaps SET to_lsn = %(lsn)s::pg_lsn, to_time = %(time)s
 WHERE slot_name = %(slot)s AND to_lsn IS NULL
RETURNING reason, from_lsn::text, from_time, to_lsn::text, to_time

-- name: table_facts
-- For each requested name: does it exist, its primary key columns, its replica identity.
SELECT t.name,
       c.oid IS NOT NULL AS found,
       n.nspname AS schema,
       c.relname AS table,
       c.relreplident::text AS replica_identity,
       ARRAY(
           SELECT a.attname::text
             FROM pg_index i
             JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
            WHERE i.indrelid = c.oid AND i.indisprimary
            ORDER BY k.ord
       ) AS primary_key
  FROM unnest(%(names)s::text[]) AS t(name)
  LEFT JOIN pg_class c ON c.oid = to_regclass(t.name) AND c.relkind IN ('r', 'p')
  LEFT JOIN pg_namespace n ON n.oid = c.relnamespace

-- name: set_replica_identity_full
ALTER TABLE {table} REPLICA IDENTITY FULL

-- name: publication_tables
SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = %(publication)s

-- name: publication_exists
SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = %(publication)s)

-- name: create_publication
CREATE PUBLICATION {publication} FOR TABLE {tables}

-- name: set_publication_tables
ALTER PUBLICATION {publication} SET TABLE {tables}

-- name: drop_publication
DROP PUBLICATION IF EXISTS {publication}

-- name: slot_facts
-- ``database``: the database the slot was created in (a logical slot serves only that one);
-- ``wal_status`` 'lost': the server removed WAL the slot still needed (max_slot_wal_keep_size).
SELECT slot_name, plugin, slot_type, database, temporary, active, active_pid,
       restart_lsn::text, confirmed_flush_lsn::text, wal_status
  FROM pg_replication_slots WHERE slot_name = %(slot)s

-- name: drop_slot
SELECT pg_drop_replication_slot(%(slot)s)

-- name: current_wal_lsn
SELECT pg_current_wal_lsn()::text
