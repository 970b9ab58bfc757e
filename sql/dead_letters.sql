-- Dead letters: event drafts that failed payload validation, and valid events larger than
-- their sink takes (over max_event_bytes) — catalog/dead_letters.py.
-- {schema} is the watcher's own schema (default cdc), filled with psycopg.sql.Identifier.
-- A row is keyed by the idempotency key the event would have had, so a replay of the same
-- history (restart, backfill) finds the row already there and adds nothing.

-- name: create_dead_letters
CREATE TABLE IF NOT EXISTS {schema}.dead_letters (
    idempotency_key text        NOT NULL PRIMARY KEY,
    event_type      text        NOT NULL,
    payload         jsonb       NOT NULL,   -- the payload as the deriver gave it
    errors          jsonb       NOT NULL,   -- [path, type, message] per failing field, no values;
                                            -- type envelope_too_large: the size and the sink's cap
    slot            text        NOT NULL,   -- source position: the change that produced the draft
    lsn             pg_lsn      NOT NULL,   -- the transaction's end LSN
    xid             bigint      NOT NULL,
    commit_time     timestamptz NOT NULL,
    source_table    text        NOT NULL,
    timer           boolean     NOT NULL DEFAULT false,
    dead_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS dead_letters_event_type_dead_at
    ON {schema}.dead_letters (event_type, dead_at);

-- name: insert_dead_letter
INSERT INTO {schema}.dead_letters
    (idempotency_key, event_type, payload, errors, slot, lsn, xid, commit_time, source_table, timer)
VALUES
    (%(idempotency_key)s, %(event_type)s, %(payload)s::jsonb, %(errors)s::jsonb, %(slot)s,
     %(lsn)s::pg_lsn, %(xid)s, %(commit_time)s::timestamptz, %(source_table)s, %(timer)s)
ON CONFLICT (idempotency_key) DO NOTHING;

-- name: count_dead_letters
SELECT event_type, count(*) AS dead_letters
FROM {schema}.dead_letters
GROUP BY event_type
ORDER BY event_type;
