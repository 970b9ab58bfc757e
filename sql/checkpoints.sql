-- The watcher's checkpoint (cdc/checkpoint.py): one row per slot.
--
-- What the stored LSN means: ``lsn`` is the end LSN (Commit.end_lsn) of the last transaction
-- whose events are durably delivered — in the sink, and with the state, timers and dead
-- letters of the same batch committed next to it. A restart streams from the first
-- transaction committed after it, and the server is told ``flush = lsn`` only once this row
-- committed. ``xid`` and ``commit_time`` are those of that transaction.
--
-- The rule: it moves only after durable hand-off, and never backward. advance_checkpoint is
-- the only statement that writes it, in the caller's transaction, and keeps the greater of the
-- stored and the offered position (an older position never overwrites a newer one).

-- name: create_checkpoints
CREATE TABLE IF NOT EXISTS {schema}.checkpoints (
    slot_name   text        PRIMARY KEY,
    lsn         pg_lsn      NOT NULL,
    xid         bigint,
    commit_time timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now()
)

-- name: advance_checkpoint
INSERT INTO {schema}.checkpoints AS c (slot_name, lsn, xid, commit_time, updated_at)
VALUES (%(slot)s, %(lsn)s::pg_lsn, %(xid)s, %(commit_time)s, now())
ON CONFLICT (slot_name) DO UPDATE
   SET lsn = GREATEST(c.lsn, EXCLUDED.lsn),
       xid = CASE WHEN EXCLUDED.lsn > c.lsn THEN EXCLUDED.xid ELSE c.xid END,
       commit_time = CASE WHEN EXCLUDED.lsn > c.lsn THEN EXCLUDED.commit_time ELSE c.commit_time END,
       updated_at = now()

-- name: read_checkpoint
SELECT lsn::text, xid, commit_time FROM {schema}.checkpoints WHERE slot_name = %(slot)s
