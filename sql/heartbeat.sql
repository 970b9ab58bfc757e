-- The watcher's heartbeat (cdc/heartbeat.py): a transactional logical message carrying the
-- server's clock; when it comes back through the stream, everything committed before it has been
-- received (its commit time is a safe watermark).

-- name: emit
SELECT pg_logical_emit_message(true, %(prefix)s, now()::text)
