-- The Postgres outbox (cdc/sinks/outbox.py): events committed in the same transaction as the
-- watcher's checkpoint, state, timers and dead letters, for a relay to publish.
-- {schema} is the watcher's own schema (default cdc), filled with psycopg.sql.Identifier.
--
-- One row per event.  ``seq`` is the delivery order (commit order, then the order of events
-- within a transaction); ``id`` is the envelope id (UUIDv5 of the idempotency key), and the
-- unique idempotency key is the second guard against a replayed batch.  ``published_at`` is
-- NULL until a relay has published the row; ``claimed_by``/``claimed_until`` are a relay's
-- lease on a row it is publishing (see claim_batch / mark_published below).

-- name: create_outbox
-- The schema exists already (cdc.state.ensure_schema).
CREATE TABLE IF NOT EXISTS {schema}.outbox (
    seq             bigint      GENERATED ALWAYS AS IDENTITY,
    id              uuid        NOT NULL PRIMARY KEY,   -- the envelope id
    idempotency_key text        NOT NULL UNIQUE,
    event_type      text        NOT NULL,
    tenant          uuid        NOT NULL,
    envelope        jsonb       NOT NULL,   -- the whole envelope (DESIGN §4), camelCase
    payload         jsonb       GENERATED ALWAYS AS (envelope -> 'payload') STORED,
    source_lsn      pg_lsn      NOT NULL,   -- end LSN of the source transaction
    commit_time     timestamptz NOT NULL,   -- commit time of the source transaction
    created_at      timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz,            -- set by the relay once published
    claimed_by      text,                   -- the relay holding the lease
    claimed_until   timestamptz,            -- the lease expires at
    publish_attempts integer    NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS outbox_seq ON {schema}.outbox (seq);
CREATE INDEX IF NOT EXISTS outbox_unpublished ON {schema}.outbox (seq) WHERE published_at IS NULL;

-- name: create_load_table
-- A session-local staging table for COPY; its rows vanish at every commit.
CREATE TEMP TABLE IF NOT EXISTS cdc_outbox_load (
    ord             integer     NOT NULL,
    id              uuid        NOT NULL,
    idempotency_key text        NOT NULL,
    event_type      text        NOT NULL,
    tenant          uuid        NOT NULL,
    envelope        jsonb       NOT NULL,
    source_lsn      pg_lsn      NOT NULL,
    commit_time     timestamptz NOT NULL
) ON COMMIT DELETE ROWS

-- name: copy_load
COPY cdc_outbox_load (ord, id, idempotency_key, event_type, tenant, envelope, source_lsn, commit_time)
FROM STDIN

-- name: insert_from_load
INSERT INTO {schema}.outbox (id, idempotency_key, event_type, tenant, envelope, source_lsn, commit_time)
SELECT id, idempotency_key, event_type, tenant, envelope, source_lsn, commit_time
  FROM cdc_outbox_load
 ORDER BY ord
ON CONFLICT (idempotency_key) DO NOTHING

-- name: insert_unnest
-- The whole batch as eight arrays in one statement; seq follows the array order.
INSERT INTO {schema}.outbox (id, idempotency_key, event_type, tenant, envelope, source_lsn, commit_time)
SELECT u.id, u.idempotency_key, u.event_type, u.tenant, u.envelope, u.source_lsn, u.commit_time
  FROM unnest(%(ids)s::uuid[], %(keys)s::text[], %(types)s::text[], %(tenants)s::uuid[],
              %(envelopes)s::jsonb[], %(lsns)s::pg_lsn[], %(times)s::timestamptz[])
       WITH ORDINALITY AS u(id, idempotency_key, event_type, tenant, envelope, source_lsn, commit_time, ord)
 ORDER BY u.ord
ON CONFLICT (idempotency_key) DO NOTHING

-- name: read_envelopes
-- Every event in delivery order (tests, inspection).
SELECT envelope FROM {schema}.outbox ORDER BY seq

-- Relay side -------------------------------------------------------------------------------
-- A relay loops: claim_batch, publish the claimed rows in seq order, mark_published (or
-- release_claims after a failed publish).  FOR UPDATE SKIP LOCKED lets several relays share
-- the table without blocking each other; an expired lease (a relay that died) makes its rows
-- claimable again.  With one relay, rows are published in seq order; with several, each
-- relay's batches are ordered but batches interleave, so a consumer that needs strict order
-- runs one relay (or de-duplicates and orders by source_lsn, which is also in the envelope).

-- name: claim_batch
-- %(relay)s: the relay's name; %(limit)s: rows per claim; %(lease)s: lease length (interval text).
WITH next AS (
    SELECT seq
      FROM {schema}.outbox
     WHERE published_at IS NULL
       AND (claimed_until IS NULL OR claimed_until < now())
     ORDER BY seq
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
)
UPDATE {schema}.outbox AS o
   SET claimed_by = %(relay)s,
       claimed_until = now() + %(lease)s::interval,
       publish_attempts = o.publish_attempts + 1
  FROM next
 WHERE o.seq = next.seq
RETURNING o.seq, o.id, o.idempotency_key, o.event_type, o.tenant, o.envelope

-- name: mark_published
-- %(ids)s: the published envelope ids; only rows this relay still holds are marked.
UPDATE {schema}.outbox
   SET published_at = now(), claimed_by = NULL, claimed_until = NULL
 WHERE id = ANY(%(ids)s::uuid[])
   AND claimed_by = %(relay)s
   AND published_at IS NULL

-- name: release_claims
-- After a failed publish: give the rows back at once instead of waiting for the lease.
UPDATE {schema}.outbox
   SET claimed_by = NULL, claimed_until = NULL
 WHERE id = ANY(%(ids)s::uuid[])
   AND claimed_by = %(relay)s
   AND published_at IS NULL

-- name: purge_published
-- Housekeeping: drop rows published before %(before)s (timestamptz).
DELETE FROM {schema}.outbox WHERE published_at < %(before)s

-- name: outbox_backlog
-- For monitoring: rows waiting and the age of the oldest one.
SELECT count(*) AS unpublished, min(created_at) AS oldest
  FROM {schema}.outbox
 WHERE published_at IS NULL
