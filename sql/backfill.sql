-- Backfill runs (cdc/backfill.py): one row per `cdc backfill`, in the schema of the journal it
-- replays. {schema} is the watcher's own schema, filled with psycopg.sql.Identifier.
--
-- * ``from_lsn``/``to_lsn``: the range whose events the run emits — transactions with an end
--   LSN after from_lsn and up to to_lsn (the run's --since and --until, resolved when it
--   started); ``since_text``/``until_text`` as given;
-- * ``event_types``/``derivers``: what it emits (NULL: everything); ``sink``: where to, with
--   credentials masked (two running runs into one sink must not overlap);
-- * ``position``: the end LSN of the last replayed transaction whose events the sink has
--   durably taken — `--resume ID` goes on after it;
-- * ``status``: running, done, failed (an error ended it) — a run killed outright stays
--   'running' without its lock: the session that ran it holds an advisory lock on
--   (run_lock_class, id) while it runs, and only a run whose lock is held is running.

-- name: create_backfill_runs
CREATE TABLE IF NOT EXISTS {schema}.backfill_runs (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slot_name   text        NOT NULL,
    since_text  text,
    until_text  text,
    from_lsn    pg_lsn      NOT NULL,
    to_lsn      pg_lsn      NOT NULL,
    event_types text[],
    derivers    text[],
    sink        text        NOT NULL,
    position    pg_lsn      NOT NULL,
    status      text        NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    events      bigint      NOT NULL DEFAULT 0,
    started_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
)

-- name: lock_registry
-- Serialises the overlap check and the insert of concurrent starts (until the transaction ends).
SELECT pg_advisory_xact_lock(%(lock_class)s::int, 0)

-- name: lock_run
SELECT pg_try_advisory_lock(%(lock_class)s::int, %(id)s::int)

-- name: unlock_run
SELECT pg_advisory_unlock(%(lock_class)s::int, %(id)s::int)

-- name: overlapping_runs
-- Running runs (their session holds the run's lock) into the same sink over a range that
-- overlaps [from, to].
SELECT r.id, r.from_lsn::text, r.to_lsn::text
  FROM {schema}.backfill_runs r
 WHERE r.slot_name = %(slot)s AND r.sink = %(sink)s AND r.status = 'running' AND r.id <> %(id)s
   AND r.from_lsn < %(to_lsn)s::pg_lsn AND %(from_lsn)s::pg_lsn < r.to_lsn
   AND EXISTS (SELECT 1 FROM pg_locks l
                WHERE l.locktype = 'advisory' AND l.granted
                  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                  AND l.classid::bigint = %(lock_class)s::bigint AND l.objid::bigint = r.id AND l.objsubid = 2)

-- name: insert_run
INSERT INTO {schema}.backfill_runs (slot_name, since_text, until_text, from_lsn, to_lsn, event_types,
                                    derivers, sink, position, status)
VALUES (%(slot)s, %(since)s, %(until)s, %(from_lsn)s::pg_lsn, %(to_lsn)s::pg_lsn, %(event_types)s,
        %(derivers)s, %(sink)s, %(from_lsn)s::pg_lsn, 'running')
RETURNING id

-- name: read_run
SELECT slot_name, since_text, until_text, from_lsn::text, to_lsn::text, event_types, derivers, sink,
       position::text, status, events
  FROM {schema}.backfill_runs WHERE id = %(id)s

-- name: restart_run
UPDATE {schema}.backfill_runs SET status = 'running', updated_at = now(), finished_at = NULL WHERE id = %(id)s

-- name: advance_run
-- Monotonic, like a checkpoint.
UPDATE {schema}.backfill_runs
   SET position = GREATEST(position, %(position)s::pg_lsn), events = events + %(events)s, updated_at = now()
 WHERE id = %(id)s

-- name: finish_run
UPDATE {schema}.backfill_runs SET status = %(status)s, updated_at = now(), finished_at = now() WHERE id = %(id)s
