-- The watcher's replicated reference state and durable timers, per slot.
-- Both are written in the same transaction as the checkpoint, so after a restart they are
-- exactly as of the checkpoint LSN and the stream resumes right after it.

-- name: create_state
CREATE TABLE IF NOT EXISTS {schema}.state_rows (
    slot_name   text    NOT NULL,
    table_name  text    NOT NULL,   -- schema-qualified source table
    row_key     text    NOT NULL,   -- JSON array of the primary-key values (canonical text)
    row_data    jsonb   NOT NULL,   -- the row in canonical JSON forms
    PRIMARY KEY (slot_name, table_name, row_key)
)

-- name: create_timers
-- One row per stage instance. state: armed (counting), paused, fired (the timer event was
-- delivered), settled (a change gave the verdict first). armed_*: the change that armed it,
-- named in the timer event's source.
CREATE TABLE IF NOT EXISTS {schema}.timers (
    slot_name         text        NOT NULL,
    timer_key         text        NOT NULL,
    deriver           text        NOT NULL,
    tenant            text        NOT NULL,
    subject_id        text        NOT NULL,
    stage             text        NOT NULL,
    due_at            timestamptz NOT NULL,
    state             text        NOT NULL CHECK (state IN ('armed', 'paused', 'fired', 'settled')),
    data              jsonb       NOT NULL DEFAULT '{{}}'::jsonb,
    armed_lsn         pg_lsn      NOT NULL,
    armed_xid         bigint      NOT NULL,
    armed_commit_time timestamptz NOT NULL,
    armed_table       text        NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (slot_name, timer_key)
)

-- name: load_state
SELECT table_name, row_key, row_data::text FROM {schema}.state_rows WHERE slot_name = %(slot)s

-- A checkpoint's state changes go through a staging table, filled with COPY: one statement for
-- the upserts and one for the deletes, whatever their number (row_data NULL: the row is gone).
-- name: create_state_stage
CREATE TEMP TABLE cdc_state_stage (
    table_name text NOT NULL,
    row_key    text NOT NULL,
    row_data   jsonb
) ON COMMIT DROP

-- name: copy_state_stage
COPY cdc_state_stage (table_name, row_key, row_data) FROM STDIN

-- name: upsert_state_staged
INSERT INTO {schema}.state_rows (slot_name, table_name, row_key, row_data)
SELECT %(slot)s, table_name, row_key, row_data FROM cdc_state_stage WHERE row_data IS NOT NULL
ON CONFLICT (slot_name, table_name, row_key) DO UPDATE SET row_data = EXCLUDED.row_data

-- name: delete_state_staged
DELETE FROM {schema}.state_rows AS s USING cdc_state_stage AS d
WHERE s.slot_name = %(slot)s AND d.row_data IS NULL AND s.table_name = d.table_name AND s.row_key = d.row_key

-- name: analyze_state
-- After a bootstrap: the planner's statistics then know the slot's rows. Without them a new
-- slot's rows count as none, and the checkpoints' delete_state_staged joined every one of them
-- against the whole staging table (seconds per checkpoint until autovacuum's next analyze).
-- A role that does not own the table gets a warning, not an error.
ANALYZE {schema}.state_rows

-- name: clear_state
DELETE FROM {schema}.state_rows WHERE slot_name = %(slot)s

-- name: clear_state_table
DELETE FROM {schema}.state_rows WHERE slot_name = %(slot)s AND table_name = %(table)s

-- name: load_timers
SELECT timer_key, deriver, tenant, subject_id, stage, due_at, state, data::text,
       armed_lsn::text, armed_xid, armed_commit_time, armed_table
  FROM {schema}.timers WHERE slot_name = %(slot)s

-- name: upsert_timer
INSERT INTO {schema}.timers AS t (slot_name, timer_key, deriver, tenant, subject_id, stage, due_at, state,
                                  data, armed_lsn, armed_xid, armed_commit_time, armed_table, updated_at)
VALUES (%(slot)s, %(key)s, %(deriver)s, %(tenant)s, %(subject_id)s, %(stage)s, %(due_at)s, %(state)s,
        %(data)s::jsonb, %(armed_lsn)s::pg_lsn, %(armed_xid)s, %(armed_commit_time)s, %(armed_table)s, now())
ON CONFLICT (slot_name, timer_key) DO UPDATE
   SET deriver = EXCLUDED.deriver, tenant = EXCLUDED.tenant, subject_id = EXCLUDED.subject_id,
       stage = EXCLUDED.stage, due_at = EXCLUDED.due_at, state = EXCLUDED.state, data = EXCLUDED.data,
       armed_lsn = EXCLUDED.armed_lsn, armed_xid = EXCLUDED.armed_xid,
       armed_commit_time = EXCLUDED.armed_commit_time, armed_table = EXCLUDED.armed_table, updated_at = now()

-- name: delete_timer
DELETE FROM {schema}.timers WHERE slot_name = %(slot)s AND timer_key = %(key)s

-- name: clear_timers
DELETE FROM {schema}.timers WHERE slot_name = %(slot)s
