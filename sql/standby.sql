-- Standby (cdc/standby.py): one `cdc watch` per slot streams; it holds a session advisory lock on
-- its store connection, the others poll for it.
--
-- The lock's key: a 64-bit hash of the store database's name and the slot name
-- (hashtextextended(current_database() || '/' || slot, 0)), taken in the two-int4 form:
-- key1 = its high 32 bits, key2 = its low 32 bits. pg_locks shows it as locktype 'advisory',
-- classid = key1 and objid = key2 (as unsigned oids), objsubid = 2.

-- name: try_lock
-- True when this session now holds the slot's lock (or held it already).
SELECT pg_try_advisory_lock((h.k >> 32)::int4, h.k::bit(32)::int4) AS held
  FROM (SELECT hashtextextended(current_database() || '/' || %(slot)s::text, 0) AS k) AS h

-- name: lock_holder
-- The pid of the session holding the slot's lock, if any.
SELECT l.pid
  FROM pg_locks l,
       (SELECT hashtextextended(current_database() || '/' || %(slot)s::text, 0) AS k) AS h
 WHERE l.locktype = 'advisory'
   AND l.granted
   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND l.objsubid = 2
   AND l.classid::text::bigint = ((h.k >> 32) & 4294967295)
   AND l.objid::text::bigint = (h.k & 4294967295)
 LIMIT 1

-- name: end_silent_holder
-- Ends the session %(pid)s — the lock's holder, as lock_holder read it just before — when its
-- client has not said a word for longer than the lease (state_change: the last time the session
-- went from one state to another), and returns whether it was ended. A session that let go of the
-- lock between the two statements did so by a statement, so it is not silent, and a pid is not
-- reused while its session exists. Two kinds of silence count (cdc/standby.py says why):
-- * idle, or idle inside a transaction: a leader frozen between statements (the server's
--   idle_session_timeout, set to the lease, ends it too; this also covers a role that resets it);
-- * active, waiting for the rest of a statement from its client (wait_event ClientRead: a frozen
--   COPY), and only when the slot has no walsender any more (%(slot_streaming)s false, read on the
--   watched server): a frozen leader's walsender is ended by wal_sender_timeout, while a healthy
--   leader in a long COPY of the outbox, the journal or the state keeps its walsender streaming.
SELECT pg_terminate_backend(a.pid) AS ended
  FROM pg_stat_activity a
 WHERE a.pid = %(pid)s
   AND a.state_change < clock_timestamp() - make_interval(secs => %(lease_s)s)
   AND (a.state IN ('idle', 'idle in transaction', 'idle in transaction (aborted)')
        OR (a.state = 'active' AND a.wait_event = 'ClientRead' AND NOT %(slot_streaming)s::bool))

-- name: set_application_name
-- The session's application_name (a waiting watcher is named `cdc watch <slot>: standby`, which
-- `cdc lag` counts); returns the name it had.
SELECT current_setting('application_name') AS previous, set_config('application_name', %(name)s, false)

-- name: lease
-- The active watcher's store session ends when it stays silent (idle, or idle inside a
-- transaction) longer than the lease: a frozen watcher (SIGSTOP, a hung host) then loses the lock.
SELECT set_config('idle_session_timeout', %(ms)s, false),
       set_config('idle_in_transaction_session_timeout', %(ms)s, false)

-- name: touch
-- What the active watcher sends on its store session every so often: the session is not idle.
SELECT 1

-- name: slot_holder
-- The process streaming from the slot (NULL: nobody), its application name and whether it still
-- has a session in pg_stat_activity (a walsender on its way out may have none any more). No row:
-- no such slot.
SELECT s.active_pid, a.application_name, a.pid IS NOT NULL AS has_session
  FROM pg_replication_slots s
  LEFT JOIN pg_stat_activity a ON a.pid = s.active_pid
 WHERE s.slot_name = %(slot)s

-- name: end_walsender
-- Ends the slot's walsender, if it is still the process given (a watcher's, which the lock proves
-- is not the active one any more).
SELECT pg_terminate_backend(s.active_pid) AS ended
  FROM pg_replication_slots s
 WHERE s.slot_name = %(slot)s
   AND s.active_pid = %(pid)s
