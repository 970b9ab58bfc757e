-- Watched tables changing shape under the watcher (cdc/relations.py): their definitions in the
-- catalog, and the derivation gaps, per slot.

-- name: table_shapes
-- Each watched table's replica identity and columns as the catalog has them now.
SELECT n.nspname || '.' || c.relname AS qualified,
       c.relreplident::text AS replica_identity,
       ARRAY(
           SELECT a.attname::text FROM pg_attribute a
            WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY a.attnum
       ) AS columns
  FROM unnest(%(names)s::text[]) AS t(name)
  JOIN pg_class c ON c.oid = to_regclass(t.name)
  JOIN pg_namespace n ON n.oid = c.relnamespace

-- name: create_derivation_gaps
-- Ranges of the stream from which some events could not be derived: a column the derivers read
-- was missing from the table's definition (reason columns_missing: events of event_types were
-- not emitted), or the table's changes were written without REPLICA IDENTITY FULL (reason
-- replica_identity: nothing was derived from that table's changes). The gap covers the
-- transactions whose commit LSN is at or after from_lsn and before to_lsn; to_lsn stays NULL
-- while the gap is open, and seen_lsn is then the checkpoint up to which it is known to extend
-- (both written in the checkpoint's transaction). What a backfill would have to re-derive.
CREATE TABLE IF NOT EXISTS {schema}.derivation_gaps (
    slot_name       text        NOT NULL,
    table_name      text        NOT NULL,   -- schema-qualified source table
    reason          text        NOT NULL CHECK (reason IN ('columns_missing', 'replica_identity')),
    missing_columns text[]      NOT NULL,
    event_types     text[]      NOT NULL,
    from_lsn        pg_lsn      NOT NULL,   -- commit LSN of the first transaction in the gap
    seen_lsn        pg_lsn      NOT NULL,
    to_lsn          pg_lsn,                 -- commit LSN of the first transaction after it
    detected_at     timestamptz NOT NULL DEFAULT now(),
    closed_at       timestamptz,
    PRIMARY KEY (slot_name, table_name, reason, from_lsn)
)

-- name: load_open_gaps
SELECT table_name, reason, missing_columns, event_types, from_lsn::text
  FROM {schema}.derivation_gaps WHERE slot_name = %(slot)s AND to_lsn IS NULL

-- name: open_gap
-- A replay after a crash may open the same gap again: the first record stands.
INSERT INTO {schema}.derivation_gaps (slot_name, table_name, reason, missing_columns, event_types,
                                      from_lsn, seen_lsn)
VALUES (%(slot)s, %(table)s, %(reason)s, %(missing_columns)s, %(event_types)s,
        %(from_lsn)s::pg_lsn, %(from_lsn)s::pg_lsn)
ON CONFLICT (slot_name, table_name, reason, from_lsn) DO NOTHING

-- name: close_gap
UPDATE {schema}.derivation_gaps SET to_lsn = %(to_lsn)s::pg_lsn, closed_at = now()
 WHERE slot_name = %(slot)s AND table_name = %(table)s AND reason = %(reason)s
   AND from_lsn = %(from_lsn)s::pg_lsn AND to_lsn IS NULL

-- name: advance_open_gaps
UPDATE {schema}.derivation_gaps SET seen_lsn = GREATEST(seen_lsn, %(lsn)s::pg_lsn)
 WHERE slot_name = %(slot)s AND to_lsn IS NULL
