-- The change journal (cdc/journal.py): every row change `cdc watch` consumed, in the
-- transaction of the checkpoint that covers it, so that `cdc backfill` can replay history
-- through the derivers.  {schema} is the watcher's own schema, filled with psycopg.sql.Identifier.
--
-- One row per change, in the order the server sent it:
-- * ``end_lsn``, ``xid``, ``commit_time``: the source transaction (Commit.end_lsn, the one its
--   events' keys name); ``position``: the change's index in its transaction. Logical messages
--   of the transaction (op 'message': the watcher's heartbeat, the application's cdc.context)
--   come after its changes, from position 2^32 on; a transaction with neither is one op
--   'commit' row (it still moved the watermark). Snapshot entries — the reference rows the
--   slot's bootstrap copied, op 'insert' with xid 0 at the slot's consistent point (a table
--   copied later: op 'truncate' then its rows) — take positions from 2^40 on;
-- * ``table_name``/``op``: as the stream said (insert, update, delete, truncate);
-- * ``shape_id``: the table's columns as the Relation message described them (change_log_shapes),
--   which is how a replay turns the images back into the very row values the watcher had;
-- * ``before``/``after``: a whole image is a JSON array of the values in the shape's column
--   order — the server's text form of each, null for NULL, false for a value the server did
--   not send (an unchanged TOAST value nobody could know); for an update with a before-image,
--   ``after`` is an object of only the columns whose value changed. (The column names are in
--   the shape once, not in every row: a 50-column image takes half the bytes. The view
--   change_log_rows shows both images as objects keyed by column.) ``unknown``: the
--   after-image's columns whose value is unknown (a JSON array, NULL: none);
-- * ``message``: a logical message's content (``table_name`` holds its prefix).
--
-- Partitioned by day of commit time (UTC), a partition created on demand by the first batch
-- that needs it (create_partition); `cdc journal prune` drops whole days past the retention
-- horizon and writes what it dropped into journal_history.

-- name: create_change_log
CREATE TABLE IF NOT EXISTS {schema}.change_log (
    slot_name   text        NOT NULL,
    end_lsn     pg_lsn      NOT NULL,
    xid         bigint      NOT NULL,
    commit_time timestamptz NOT NULL,
    position    bigint      NOT NULL,
    table_name  text        NOT NULL,
    op          text        NOT NULL,
    shape_id    bigint,
    before      jsonb,
    after       jsonb,
    unknown     jsonb,
    message     bytea
) PARTITION BY RANGE (commit_time)

-- name: create_change_log_order
-- The replay's order (a merge of the day partitions' indexes).
CREATE INDEX IF NOT EXISTS change_log_order ON {schema}.change_log (slot_name, end_lsn, position)

-- name: create_change_log_shapes
-- A table's columns as a Relation message described them (names, type oids, modifiers, flags)
-- and its primary key; ``shape_id`` is a hash of all of it, so a shape is written once.
CREATE TABLE IF NOT EXISTS {schema}.change_log_shapes (
    slot_name   text        NOT NULL,
    shape_id    bigint      NOT NULL,
    table_name  text        NOT NULL,
    columns     jsonb       NOT NULL,   -- [[name, type oid, type modifier, flags], ...] in order
    primary_key text[]      NOT NULL,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (slot_name, shape_id)
)

-- name: create_journal_history
-- What the journal of a slot covers: 'bootstrap' (its first entry: the snapshot at the slot's
-- consistent point), 'snapshot' (a state snapshot at from_lsn, journal_snapshots: a replay can
-- start there instead), 'off' (a watcher ran with --no-journal from from_lsn to to_lsn: those
-- changes are not in it), 'pruned' (`cdc journal prune` dropped the changes from from_lsn to
-- to_lsn, committed from from_time to to_time).
CREATE TABLE IF NOT EXISTS {schema}.journal_history (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slot_name   text        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('bootstrap', 'snapshot', 'off', 'pruned')),
    from_lsn    pg_lsn      NOT NULL,
    to_lsn      pg_lsn      NOT NULL,
    from_time   timestamptz,
    to_time     timestamptz,
    recorded_at timestamptz NOT NULL DEFAULT now()
)

-- name: change_log_rows_exists
SELECT to_regclass(format('%%I.change_log_rows', %(schema)s::text)) IS NOT NULL

-- name: create_change_log_rows
-- For operators: the journal with both images as objects keyed by column (the whole
-- after-image of an update is its before-image with the changed columns over it).
CREATE VIEW {schema}.change_log_rows AS
SELECT c.slot_name, c.end_lsn, c.xid, c.commit_time, c.position, c.table_name, c.op,
       b.image AS before,
       CASE WHEN c.before IS NOT NULL AND c.after IS NOT NULL THEN b.image || c.after ELSE a.image END AS after,
       c.unknown, c.message
  FROM {schema}.change_log c
  LEFT JOIN {schema}.change_log_shapes s ON s.slot_name = c.slot_name AND s.shape_id = c.shape_id
  LEFT JOIN LATERAL (SELECT jsonb_object_agg(x.col ->> 0, c.before -> (x.n::int - 1)) AS image
                       FROM jsonb_array_elements(s.columns) WITH ORDINALITY AS x (col, n)
                      WHERE c.before IS NOT NULL) b ON true
  LEFT JOIN LATERAL (SELECT jsonb_object_agg(x.col ->> 0, c.after -> (x.n::int - 1)) AS image
                       FROM jsonb_array_elements(s.columns) WITH ORDINALITY AS x (col, n)
                      WHERE jsonb_typeof(c.after) = 'array') a ON true

-- name: create_journal_snapshots
-- The replicated state and the timers as of ``lsn`` (after the transaction that ends there,
-- with the watermark ``watermark``), rebuilt by `cdc journal prune` from the journal before it
-- drops the days up to there: a backfill starts at the latest snapshot at or before its range.
-- kind 'state': table_name, row_key (JSON array of the key) and the row as the state holds it;
-- kind 'timer': row_key is the timer's key, data the timer and the change that armed it.
CREATE TABLE IF NOT EXISTS {schema}.journal_snapshots (
    slot_name   text        NOT NULL,
    lsn         pg_lsn      NOT NULL,
    watermark   timestamptz,
    kind        text        NOT NULL CHECK (kind IN ('state', 'timer')),
    table_name  text        NOT NULL,
    row_key     text        NOT NULL,
    data        jsonb       NOT NULL,
    PRIMARY KEY (slot_name, lsn, kind, table_name, row_key)
)

-- name: insert_snapshot_row
INSERT INTO {schema}.journal_snapshots (slot_name, lsn, watermark, kind, table_name, row_key, data)
VALUES (%(slot)s, %(lsn)s::pg_lsn, %(watermark)s, %(kind)s, %(table)s, %(key)s, %(data)s::jsonb)

-- name: load_snapshot
SELECT kind, table_name, row_key, data::text, watermark
  FROM {schema}.journal_snapshots WHERE slot_name = %(slot)s AND lsn = %(lsn)s::pg_lsn

-- name: drop_snapshots_before
-- Snapshots older than the one just written are of no more use once their days are pruned.
DELETE FROM {schema}.journal_snapshots WHERE slot_name = %(slot)s AND lsn < %(lsn)s::pg_lsn

-- name: partitions
-- The day partitions of change_log (change_log_pYYYYMMDD: the day is in the name).
SELECT c.relname
  FROM pg_inherits i
  JOIN pg_class c ON c.oid = i.inhrelid
  JOIN pg_class p ON p.oid = i.inhparent
  JOIN pg_namespace n ON n.oid = p.relnamespace
 WHERE n.nspname = %(schema)s AND p.relname = 'change_log'
 ORDER BY c.relname

-- name: lock_partitions
-- Watchers of several slots may share the schema: one at a time creates a day's partition
-- (until the creating transaction ends; the next one then finds it there).
SELECT pg_advisory_xact_lock(hashtext(%(schema)s || '.change_log'))

-- name: create_partition
CREATE TABLE IF NOT EXISTS {partition} PARTITION OF {schema}.change_log
    FOR VALUES FROM ({start}) TO ({end})

-- name: partition_extent
-- Per slot, what one partition holds (before it is dropped).
SELECT slot_name, min(end_lsn)::text, max(end_lsn)::text, min(commit_time), max(commit_time)
  FROM {partition}
 GROUP BY slot_name

-- name: drop_lock_timeout
-- A partition's DROP takes an ACCESS EXCLUSIVE lock on change_log: it waits for a backfill's
-- long read, and the watcher's next journal write would queue behind it. So it waits this
-- long at most (for the rest of its transaction).
SELECT set_config('lock_timeout', %(timeout)s, true)

-- name: drop_partition
DROP TABLE {partition}

-- name: snapshot_time
-- The time of a snapshot's transaction (the bootstrap's journal entry is stamped with it).
SELECT now()

-- name: copy_change_log
COPY {schema}.change_log (slot_name, end_lsn, xid, commit_time, position, table_name, op, shape_id,
                          before, after, unknown, message)
FROM STDIN (FORMAT BINARY)

-- name: known_shapes
SELECT shape_id FROM {schema}.change_log_shapes WHERE slot_name = %(slot)s

-- name: insert_shape
INSERT INTO {schema}.change_log_shapes (slot_name, shape_id, table_name, columns, primary_key)
VALUES (%(slot)s, %(shape_id)s, %(table)s, %(columns)s::jsonb, %(primary_key)s)
ON CONFLICT (slot_name, shape_id) DO NOTHING

-- name: load_shapes
SELECT shape_id, table_name, columns::text, primary_key
  FROM {schema}.change_log_shapes WHERE slot_name = %(slot)s ORDER BY first_seen, shape_id

-- name: record_history
INSERT INTO {schema}.journal_history (slot_name, kind, from_lsn, to_lsn, from_time, to_time)
VALUES (%(slot)s, %(kind)s, %(from_lsn)s::pg_lsn, %(to_lsn)s::pg_lsn, %(from_time)s, %(to_time)s)
RETURNING id

-- name: extend_off
-- A watcher with --no-journal moves the end of its 'off' range with every checkpoint.
UPDATE {schema}.journal_history SET to_lsn = GREATEST(to_lsn, %(to_lsn)s::pg_lsn), to_time = %(to_time)s
 WHERE id = %(id)s

-- name: read_history
SELECT kind, from_lsn::text, to_lsn::text, from_time, to_time, recorded_at
  FROM {schema}.journal_history WHERE slot_name = %(slot)s ORDER BY id

-- name: replay
-- The slot's journal after %(after)s up to %(until)s, in commit order (a server-side cursor
-- reads it a few thousand rows at a time).
SELECT end_lsn::text, xid, commit_time, position, table_name, op, shape_id,
       before::text, after::text, unknown::text, message
  FROM {schema}.change_log
 WHERE slot_name = %(slot)s AND end_lsn >= %(after)s::pg_lsn AND end_lsn <= %(until)s::pg_lsn
 ORDER BY end_lsn, position

-- name: count_rows
-- How many rows a replay reads (for its progress; a scan of the range: run it on the replay's
-- own connection, which has no statement timeout).
SELECT count(*)
  FROM {schema}.change_log
 WHERE slot_name = %(slot)s AND end_lsn >= %(after)s::pg_lsn AND end_lsn <= %(until)s::pg_lsn

-- name: last_lsn
-- The end LSN of the slot's last journaled transaction (the top of change_log_order).
SELECT max(end_lsn)::text FROM {schema}.change_log WHERE slot_name = %(slot)s

-- name: lsn_at
-- The end LSN of the last transaction committed before %(time)s (the replay's bound for a time):
-- in the journal, or at the end of a pruned stretch or a state snapshot from before that time
-- (the days that held it may be gone; a replay starts at the snapshot after them).
SELECT GREATEST(
         (SELECT max(end_lsn) FROM {schema}.change_log
           WHERE slot_name = %(slot)s AND commit_time < %(time)s),
         (SELECT max(to_lsn) FROM {schema}.journal_history
           WHERE slot_name = %(slot)s AND kind IN ('pruned', 'snapshot') AND to_time < %(time)s))::text
