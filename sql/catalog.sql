-- Catalog sync (cdc/catalog_sync.py): upsert the event catalog into the application's
-- system_event_catalog, or, where that table does not exist, into the watcher's own copy.
-- {schema} and {table} are filled with psycopg.sql.Identifier.

-- name: find_app_catalog
-- The application's table as the search_path resolves it, with the columns sync writes.
SELECT n.nspname AS table_schema,
       c.relname AS table_name,
       array(SELECT a.attname::text
             FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = to_regclass('system_event_catalog');

-- name: create_event_catalog
-- The watcher's copy mirrors the columns of the application's system_event_catalog (SPEC §6.1).
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.event_catalog (
    event_id            uuid            NOT NULL DEFAULT gen_random_uuid(),
    event_type          varchar(255)    NOT NULL,
    name                varchar(255)    NOT NULL,
    description         text,
    category            varchar(100),
    payload_schema      jsonb,
    created_at          timestamptz     NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at          timestamptz     NOT NULL DEFAULT CURRENT_TIMESTAMP,
    payload_schema_ref  text,
    PRIMARY KEY (event_id),
    UNIQUE (event_type)
);

-- name: select_catalog_rows
SELECT event_type, name, description, category, payload_schema_ref
FROM {table}
WHERE event_type = ANY(%(event_types)s)
FOR UPDATE;

-- name: upsert_catalog_row
-- updated_at is a bound value, not now(): Citus refuses non-immutable functions in
-- ON CONFLICT updates (the application's own upserts do the same).
INSERT INTO {table} AS t
    (event_type, name, description, category, payload_schema_ref, created_at, updated_at)
VALUES
    (%(event_type)s, %(name)s, %(description)s, %(category)s, %(payload_schema_ref)s, %(now)s, %(now)s)
ON CONFLICT (event_type) DO UPDATE SET
    name = EXCLUDED.name,
    description = EXCLUDED.description,
    category = EXCLUDED.category,
    payload_schema_ref = EXCLUDED.payload_schema_ref,
    updated_at = EXCLUDED.updated_at;
