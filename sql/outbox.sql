-- The Postgres outbox (cdc/sinks/outbox.py): events committed in the same transaction as the
-- watcher's checkpoint, state, timers and dead letters, for a relay to publish.
-- {schema} is the watcher's own schema (default cdc), filled with psycopg.sql.Identifier.
--
-- One row per event, as lean as the relay and an operator need it: every row is written once
-- by the watcher and read once by a relay, and each index or byte more is paid per event
-- (docs/sinks.md § Postgres outbox has the measurements).
-- * ``seq`` is the delivery order (commit order, then the order of events within a
--   transaction) and the row's identity;
-- * ``id`` is the envelope id, the UUIDv5 of the idempotency key (catalog/envelope.py): unique
--   ids are unique keys, so its unique index is the second guard against a replayed batch (a
--   16-byte index instead of one on the ~100-byte key text) and the relays' lookup for
--   mark_published / release_claims;
-- * ``envelope`` is the envelope's byte-stable JSON exactly as the watcher serialised it (json
--   keeps the text; jsonb would re-order and re-space it, and parsing into jsonb nearly doubled
--   the insert's cost); the payload, source LSN and commit time are in it;
-- * ``published_at`` is NULL until a relay has published the row; ``claimed_by`` /
--   ``claimed_until`` are a relay's lease on a row it is publishing (claim_batch below). The
--   partial index on unpublished rows keeps a claim from walking the published rows that
--   are still in the table (purge_published removes them).

-- name: create_outbox
-- The schema exists already (cdc.schema.ensure_schema).
CREATE TABLE IF NOT EXISTS {schema}.outbox (
    seq              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id               uuid        NOT NULL UNIQUE,   -- the envelope id (UUIDv5 of the key)
    idempotency_key  text        NOT NULL,
    event_type       text        NOT NULL,
    tenant           uuid        NOT NULL,
    envelope         json        NOT NULL,          -- the byte-stable envelope (DESIGN §4)
    created_at       timestamptz NOT NULL DEFAULT now(),
    published_at     timestamptz,                   -- set by the relay once published
    claimed_by       text,                          -- the relay holding the lease
    claimed_until    timestamptz,                   -- the lease expires at
    publish_attempts integer     NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_unpublished ON {schema}.outbox (seq) WHERE published_at IS NULL;

-- name: envelope_type
-- The type of an existing outbox's envelope column (NULL: no outbox yet). jsonb is the first
-- shape (before issue 12: uuid primary key, unique key text, a generated copy of the payload,
-- source_lsn and commit_time columns), which migrate_first_shape turns into today's.
SELECT format_type(a.atttypid, NULL)
  FROM pg_attribute a
  JOIN pg_class c ON c.oid = a.attrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = %(schema)s AND c.relname = 'outbox' AND a.attname = 'envelope' AND NOT a.attisdropped

-- name: lock_outbox
LOCK TABLE {schema}.outbox IN ACCESS EXCLUSIVE MODE

-- name: migrate_first_shape
-- In place, in the caller's transaction, rows, order and relay state kept. The type change
-- rewrites the table once (the drops are catalog changes); its old unique index on seq becomes
-- the primary key, and the index names end up those create_outbox gives a new table.
ALTER TABLE {schema}.outbox
    DROP COLUMN IF EXISTS payload,
    DROP COLUMN IF EXISTS source_lsn,
    DROP COLUMN IF EXISTS commit_time,
    DROP CONSTRAINT IF EXISTS outbox_idempotency_key_key,
    DROP CONSTRAINT IF EXISTS outbox_pkey,
    ALTER COLUMN envelope TYPE json USING envelope::json;
ALTER TABLE {schema}.outbox ADD CONSTRAINT outbox_pkey PRIMARY KEY USING INDEX outbox_seq;
ALTER TABLE {schema}.outbox ADD CONSTRAINT outbox_id_key UNIQUE (id);

-- name: transaction_wrote
-- Whether the current transaction has written anything yet (it has an xid once it has).
SELECT pg_current_xact_id_if_assigned() IS NOT NULL

-- name: existing_ids
-- Which of a batch's envelope ids (%(ids)s: an array literal) the outbox holds already: one
-- index probe per id, whatever the table's size. OFFSET 0 keeps the subquery from being
-- flattened into a join; for ``id = ANY(…)`` the planner chose a parallel scan of the whole
-- table at 100,000 to 300,000 rows.
SELECT o.id::text
  FROM unnest(%(ids)s::uuid[]) AS batch(id)
 CROSS JOIN LATERAL (SELECT id FROM {schema}.outbox WHERE id = batch.id OFFSET 0) AS o

-- name: copy_outbox
-- Binary: the envelope goes in as the bytes the watcher serialised (cdc/sinks/outbox.py).
COPY {schema}.outbox (id, idempotency_key, event_type, tenant, envelope) FROM STDIN (FORMAT BINARY)

-- Relay side -------------------------------------------------------------------------------
-- A relay loops: claim_batch, publish the claimed rows in seq order, mark_published (or
-- release_claims after a failed publish).  FOR UPDATE SKIP LOCKED lets several relays share
-- the table without blocking each other; an expired lease (a relay that died) makes its rows
-- claimable again.  With one relay, rows are published in seq order; with several, each
-- relay's batches are ordered but batches interleave, so a consumer that needs strict order
-- runs one relay (or de-duplicates and orders by the envelope's source.lsn).

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
