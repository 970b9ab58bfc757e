-- The replication connection's own statements (cdc/stream.py), besides START_REPLICATION, which the
-- replication protocol takes as a command without parameters (built there, with quoted names).

-- name: wal_sender_timeout
-- How long the walsender waits for a word from this client before it ends the connection: the
-- stream sends its status updates well within it.
SHOW wal_sender_timeout
