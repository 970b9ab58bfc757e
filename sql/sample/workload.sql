-- Application-shaped writes for the demo and the integration tests: each named query is one
-- transaction written the way Alga PSA writes it (shared/alga/SPEC.md §5).
-- Fixed ids: tenant 1111…, client 2222…, users dana/lee (internal) 3333…/4444…, portal user sam
-- 5555… (contact 5656…), board 7070…, statuses open/working/closed 6661/6662/6663,
-- priorities 8881/8882, tickets T1 9991, T2 9992, T3 9993.

-- name: seed
INSERT INTO tenants (tenant, client_name, email) VALUES
  ('11111111-1111-4111-8111-111111111111', 'Acme MSP', 'ops@acme.test');
INSERT INTO clients (tenant, client_id, client_name) VALUES
  ('11111111-1111-4111-8111-111111111111', '22222222-2222-4222-8222-222222222222', 'Globex');
INSERT INTO contacts (tenant, contact_name_id, full_name, email, client_id) VALUES
  ('11111111-1111-4111-8111-111111111111', '56565656-5656-4565-8565-565656565656', 'Sam Client', 'sam@globex.test',
   '22222222-2222-4222-8222-222222222222');
INSERT INTO users (tenant, user_id, username, hashed_password, email, user_type, contact_id) VALUES
  ('11111111-1111-4111-8111-111111111111', '33333333-3333-4333-8333-333333333333', 'dana', 'x', 'dana@acme.test', 'internal', NULL),
  ('11111111-1111-4111-8111-111111111111', '44444444-4444-4444-8444-444444444444', 'lee', 'x', 'lee@acme.test', 'internal', NULL),
  ('11111111-1111-4111-8111-111111111111', '34343434-3434-4343-8343-343434343434', 'kim', 'x', 'kim@acme.test', 'internal', NULL),
  ('11111111-1111-4111-8111-111111111111', '55555555-5555-4555-8555-555555555555', 'sam', 'x', 'sam@globex.test', 'client',
   '56565656-5656-4565-8565-565656565656');
INSERT INTO boards (tenant, board_id, board_name) VALUES
  ('11111111-1111-4111-8111-111111111111', '70707070-7070-4707-8707-707070707070', 'Service Desk'),
  ('11111111-1111-4111-8111-111111111111', '71717171-7171-4717-8717-717171717171', 'Escalations');
INSERT INTO statuses (tenant, status_id, name, status_type, order_number, is_closed) VALUES
  ('11111111-1111-4111-8111-111111111111', '66666666-6666-4666-8666-666666666661', 'Open', 'ticket', 1, false),
  ('11111111-1111-4111-8111-111111111111', '66666666-6666-4666-8666-666666666662', 'In Progress', 'ticket', 2, false),
  ('11111111-1111-4111-8111-111111111111', '66666666-6666-4666-8666-666666666663', 'Closed', 'ticket', 3, true);
INSERT INTO priorities (tenant, priority_id, priority_name, created_by) VALUES
  ('11111111-1111-4111-8111-111111111111', '88888888-8888-4888-8888-888888888881', 'Medium', '33333333-3333-4333-8333-333333333333'),
  ('11111111-1111-4111-8111-111111111111', '88888888-8888-4888-8888-888888888882', 'High', '33333333-3333-4333-8333-333333333333');

-- name: create_ticket
INSERT INTO tickets (tenant, ticket_id, ticket_number, title, status_id, board_id, client_id, priority_id,
                     entered_by, entered_at, itil_priority_level, source)
VALUES ('11111111-1111-4111-8111-111111111111', '99999999-9999-4999-8999-999999999991', 'T-1001', 'Printer on fire',
        '66666666-6666-4666-8666-666666666661', '70707070-7070-4707-8707-707070707070',
        '22222222-2222-4222-8222-222222222222', '88888888-8888-4888-8888-888888888881',
        '33333333-3333-4333-8333-333333333333', now(), 3, 'ui');
INSERT INTO ticket_audit_logs (tenant, ticket_id, event_type, entity_type, actor_type, actor_user_id, source, occurred_at)
VALUES ('11111111-1111-4111-8111-111111111111', '99999999-9999-4999-8999-999999999991', 'TICKET_CREATED', 'ticket',
        'user', '33333333-3333-4333-8333-333333333333', 'ui', now());

-- name: assign
UPDATE tickets SET assigned_to = '44444444-4444-4444-8444-444444444444'
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND ticket_id = '99999999-9999-4999-8999-999999999991';
INSERT INTO ticket_audit_logs (tenant, ticket_id, event_type, entity_type, actor_type, actor_user_id, source, occurred_at)
VALUES ('11111111-1111-4111-8111-111111111111', '99999999-9999-4999-8999-999999999991', 'TICKET_ASSIGNED', 'ticket',
        'user', '33333333-3333-4333-8333-333333333333', 'ui', now());

-- name: add_agent
INSERT INTO ticket_resources (tenant, ticket_id, assigned_to, additional_user_id, role)
VALUES ('11111111-1111-4111-8111-111111111111', '99999999-9999-4999-8999-999999999991',
        '44444444-4444-4444-8444-444444444444', '33333333-3333-4333-8333-333333333333', 'support');

-- name: status_in_progress
UPDATE tickets SET status_id = '66666666-6666-4666-8666-666666666662'
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND ticket_id = '99999999-9999-4999-8999-999999999991';
INSERT INTO ticket_audit_logs (tenant, ticket_id, event_type, entity_type, actor_type, actor_user_id, source, occurred_at)
VALUES ('11111111-1111-4111-8111-111111111111', '99999999-9999-4999-8999-999999999991', 'TICKET_STATUS_CHANGED', 'ticket',
        'user', '44444444-4444-4444-8444-444444444444', 'ui', now());

-- name: priority_high
UPDATE tickets SET priority_id = '88888888-8888-4888-8888-888888888882'
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND ticket_id = '99999999-9999-4999-8999-999999999991';

-- name: internal_note
INSERT INTO comment_threads (tenant, thread_id, ticket_id, root_comment_id, is_internal)
VALUES ('11111111-1111-4111-8111-111111111111', 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaa1',
        '99999999-9999-4999-8999-999999999991', 'cccccccc-cccc-4ccc-8ccc-ccccccccccc1', true);
INSERT INTO comments (tenant, comment_id, ticket_id, user_id, note, is_internal, is_resolution, author_type, thread_id)
VALUES ('11111111-1111-4111-8111-111111111111', 'cccccccc-cccc-4ccc-8ccc-ccccccccccc1',
        '99999999-9999-4999-8999-999999999991', '44444444-4444-4444-8444-444444444444',
        'Extinguisher applied.', true, false, 'internal', 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaa1');

-- name: customer_reply
INSERT INTO comment_threads (tenant, thread_id, ticket_id, root_comment_id, is_internal)
VALUES ('11111111-1111-4111-8111-111111111111', 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaa2',
        '99999999-9999-4999-8999-999999999991', 'cccccccc-cccc-4ccc-8ccc-ccccccccccc2', false);
INSERT INTO comments (tenant, comment_id, ticket_id, user_id, note, is_internal, is_resolution, author_type, thread_id,
                      metadata)
VALUES ('11111111-1111-4111-8111-111111111111', 'cccccccc-cccc-4ccc-8ccc-ccccccccccc2',
        '99999999-9999-4999-8999-999999999991', '55555555-5555-4555-8555-555555555555',
        'It is still smoking.', false, false, 'client', 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaa2',
        '{"responseSource": "client_portal"}');
UPDATE tickets SET response_state = 'awaiting_internal'
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND ticket_id = '99999999-9999-4999-8999-999999999991';

-- name: time_entry
INSERT INTO time_entries (tenant, entry_id, user_id, start_time, end_time, work_item_id, work_item_type,
                          billable_duration, created_at, work_date, work_timezone)
VALUES ('11111111-1111-4111-8111-111111111111', 'eeeeeeee-eeee-4eee-8eee-eeeeeeeeeee1',
        '44444444-4444-4444-8444-444444444444', date_trunc('minute', now()) - interval '45 minutes',
        date_trunc('minute', now()), '99999999-9999-4999-8999-999999999991', 'ticket', 45, now(),
        current_date, 'UTC');

-- name: bundle
INSERT INTO tickets (tenant, ticket_id, ticket_number, title, status_id, board_id, client_id, entered_by, entered_at)
VALUES ('11111111-1111-4111-8111-111111111111', '99999999-9999-4999-8999-999999999992', 'T-1002',
        'Second printer also on fire', '66666666-6666-4666-8666-666666666661',
        '70707070-7070-4707-8707-707070707070', '22222222-2222-4222-8222-222222222222',
        '33333333-3333-4333-8333-333333333333', now());
-- (its own transaction in the app; here the bundle action follows in the next one)

-- name: bundle_attach
UPDATE tickets SET master_ticket_id = '99999999-9999-4999-8999-999999999991', updated_at = now(),
                   updated_by = '33333333-3333-4333-8333-333333333333'
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND ticket_id = '99999999-9999-4999-8999-999999999992';
INSERT INTO ticket_bundle_settings (tenant, master_ticket_id, mode)
VALUES ('11111111-1111-4111-8111-111111111111', '99999999-9999-4999-8999-999999999991', 'link_only');

-- name: close
UPDATE tickets SET status_id = '66666666-6666-4666-8666-666666666663'
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND ticket_id = '99999999-9999-4999-8999-999999999991';
UPDATE tickets SET is_closed = true
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND ticket_id = '99999999-9999-4999-8999-999999999991';
UPDATE tickets SET closed_at = now(), closed_by = '44444444-4444-4444-8444-444444444444'
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND ticket_id = '99999999-9999-4999-8999-999999999991';
UPDATE tickets SET response_state = NULL
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND ticket_id = '99999999-9999-4999-8999-999999999991';
INSERT INTO ticket_audit_logs (tenant, ticket_id, event_type, entity_type, actor_type, actor_user_id, source, occurred_at)
VALUES ('11111111-1111-4111-8111-111111111111', '99999999-9999-4999-8999-999999999991', 'TICKET_CLOSED', 'ticket',
        'user', '44444444-4444-4444-8444-444444444444', 'ui', now());

-- name: reopen
UPDATE tickets SET status_id = '66666666-6666-4666-8666-666666666661', is_closed = false, closed_at = NULL,
                   closed_by = NULL
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND ticket_id = '99999999-9999-4999-8999-999999999991';

-- name: sla_ticket
INSERT INTO tickets (tenant, ticket_id, ticket_number, title, status_id, board_id, client_id, entered_by, entered_at,
                     sla_policy_id, sla_started_at, sla_resolution_due_at)
VALUES ('11111111-1111-4111-8111-111111111111', '99999999-9999-4999-8999-999999999993', 'T-1003',
        'Server room at 40 degrees', '66666666-6666-4666-8666-666666666661',
        '70707070-7070-4707-8707-707070707070', '22222222-2222-4222-8222-222222222222',
        '33333333-3333-4333-8333-333333333333', now(), 'abababab-abab-4bab-8bab-abababababab', now(),
        now() + interval '2 seconds');

-- ---------------------------------------------------------------------------------------
-- More application shapes for the integration tests (run after create_ticket / bundle).
-- ---------------------------------------------------------------------------------------

-- name: reassign_with_resource_churn
-- The app deletes the ticket_resources rows (they reference the primary assignee), updates
-- assigned_to and re-inserts them with the new primary, in one transaction.
DELETE FROM ticket_resources
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND ticket_id = '99999999-9999-4999-8999-999999999991';
UPDATE tickets SET assigned_to = '34343434-3434-4343-8343-343434343434'
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND ticket_id = '99999999-9999-4999-8999-999999999991';
INSERT INTO ticket_resources (tenant, ticket_id, assigned_to, additional_user_id, role)
VALUES ('11111111-1111-4111-8111-111111111111', '99999999-9999-4999-8999-999999999991',
        '34343434-3434-4343-8343-343434343434', '33333333-3333-4333-8333-333333333333', 'support');

-- name: rest_status_only
-- A REST API writer: only status_id changes, no audit row.
UPDATE tickets SET status_id = '66666666-6666-4666-8666-666666666662'
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND ticket_id = '99999999-9999-4999-8999-999999999991';

-- name: staff_reply
INSERT INTO comment_threads (tenant, thread_id, ticket_id, root_comment_id, is_internal)
VALUES ('11111111-1111-4111-8111-111111111111', 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaa3',
        '99999999-9999-4999-8999-999999999991', 'cccccccc-cccc-4ccc-8ccc-ccccccccccc3', false);
INSERT INTO comments (tenant, comment_id, ticket_id, user_id, note, is_internal, is_resolution, author_type, thread_id)
VALUES ('11111111-1111-4111-8111-111111111111', 'cccccccc-cccc-4ccc-8ccc-ccccccccccc3',
        '99999999-9999-4999-8999-999999999991', '44444444-4444-4444-8444-444444444444',
        'We are on our way.', false, false, 'internal', 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaa3');
UPDATE tickets SET response_state = 'awaiting_client'
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND ticket_id = '99999999-9999-4999-8999-999999999991';

-- name: email_reply
-- Inbound email from the contact: no user_id, contact_id set, responseSource inbound_email,
-- and the audit row the email path writes.
INSERT INTO comment_threads (tenant, thread_id, ticket_id, root_comment_id, is_internal)
VALUES ('11111111-1111-4111-8111-111111111111', 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaa4',
        '99999999-9999-4999-8999-999999999991', 'cccccccc-cccc-4ccc-8ccc-ccccccccccc4', false);
INSERT INTO comments (tenant, comment_id, ticket_id, contact_id, note, is_internal, is_resolution, author_type,
                      thread_id, metadata)
VALUES ('11111111-1111-4111-8111-111111111111', 'cccccccc-cccc-4ccc-8ccc-ccccccccccc4',
        '99999999-9999-4999-8999-999999999991', '56565656-5656-4565-8565-565656565656',
        'Replying from my mail client.', false, false, 'client', 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaa4',
        '{"responseSource": "inbound_email", "email": {"provider": "imap"}}');
INSERT INTO ticket_audit_logs (tenant, ticket_id, event_type, entity_type, actor_type, actor_contact_id, source,
                               occurred_at)
VALUES ('11111111-1111-4111-8111-111111111111', '99999999-9999-4999-8999-999999999991', 'TICKET_CUSTOMER_REPLIED',
        'comment', 'email_sender', '56565656-5656-4565-8565-565656565656', 'inbound_email', now());

-- name: bundle_sync_mode
-- Bundle T2 under T1 in sync_updates mode (T2 must exist and be unbundled).
UPDATE tickets SET master_ticket_id = '99999999-9999-4999-8999-999999999991', updated_at = now()
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND ticket_id = '99999999-9999-4999-8999-999999999992';
INSERT INTO ticket_bundle_settings (tenant, master_ticket_id, mode)
VALUES ('11111111-1111-4111-8111-111111111111', '99999999-9999-4999-8999-999999999991', 'sync_updates');

-- name: mirrored_comment
-- A public comment on the sync_updates master, mirrored onto the child (the copy is recorded).
INSERT INTO comment_threads (tenant, thread_id, ticket_id, root_comment_id, is_internal)
VALUES ('11111111-1111-4111-8111-111111111111', 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaa5',
        '99999999-9999-4999-8999-999999999991', 'cccccccc-cccc-4ccc-8ccc-ccccccccccc5', false),
       ('11111111-1111-4111-8111-111111111111', 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaa6',
        '99999999-9999-4999-8999-999999999992', 'cccccccc-cccc-4ccc-8ccc-ccccccccccc6', false);
INSERT INTO comments (tenant, comment_id, ticket_id, user_id, note, is_internal, is_resolution, author_type, thread_id)
VALUES ('11111111-1111-4111-8111-111111111111', 'cccccccc-cccc-4ccc-8ccc-ccccccccccc5',
        '99999999-9999-4999-8999-999999999991', '44444444-4444-4444-8444-444444444444',
        'Fixed for both.', false, false, 'internal', 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaa5'),
       ('11111111-1111-4111-8111-111111111111', 'cccccccc-cccc-4ccc-8ccc-ccccccccccc6',
        '99999999-9999-4999-8999-999999999992', '44444444-4444-4444-8444-444444444444',
        'Fixed for both.', false, false, 'internal', 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaa6');
INSERT INTO ticket_bundle_mirrors (tenant, source_comment_id, child_ticket_id, child_comment_id)
VALUES ('11111111-1111-4111-8111-111111111111', 'cccccccc-cccc-4ccc-8ccc-ccccccccccc5',
        '99999999-9999-4999-8999-999999999992', 'cccccccc-cccc-4ccc-8ccc-ccccccccccc6');

-- name: sync_propagation
-- The master's priority change, propagated by the app to the sync_updates child (no child events).
UPDATE tickets SET priority_id = '88888888-8888-4888-8888-888888888882'
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND ticket_id = '99999999-9999-4999-8999-999999999991';
UPDATE tickets SET priority_id = '88888888-8888-4888-8888-888888888882', updated_at = now(),
                   updated_by = '33333333-3333-4333-8333-333333333333'
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND master_ticket_id = '99999999-9999-4999-8999-999999999991';

-- name: third_ticket
INSERT INTO tickets (tenant, ticket_id, ticket_number, title, status_id, board_id, client_id, entered_by, entered_at)
VALUES ('11111111-1111-4111-8111-111111111111', '99999999-9999-4999-8999-999999999994', 'T-1004',
        'Third printer', '66666666-6666-4666-8666-666666666661',
        '70707070-7070-4707-8707-707070707070', '22222222-2222-4222-8222-222222222222',
        '33333333-3333-4333-8333-333333333333', now());

-- name: bundle_add_child
-- addChildrenToBundleAction: a new child, settings untouched.
UPDATE tickets SET master_ticket_id = '99999999-9999-4999-8999-999999999991', updated_at = now()
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND ticket_id = '99999999-9999-4999-8999-999999999994';

-- name: bundle_promote
-- promoteBundleMasterAction: T2 becomes the master of T1 and T4.
DELETE FROM ticket_bundle_settings
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND master_ticket_id = '99999999-9999-4999-8999-999999999991';
INSERT INTO ticket_bundle_settings (tenant, master_ticket_id, mode)
VALUES ('11111111-1111-4111-8111-111111111111', '99999999-9999-4999-8999-999999999992', 'link_only');
UPDATE tickets SET master_ticket_id = '99999999-9999-4999-8999-999999999992', updated_at = now()
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND ticket_id = '99999999-9999-4999-8999-999999999994';
UPDATE tickets SET master_ticket_id = NULL, updated_at = now()
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND ticket_id = '99999999-9999-4999-8999-999999999992';
UPDATE tickets SET master_ticket_id = '99999999-9999-4999-8999-999999999992', updated_at = now()
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND ticket_id = '99999999-9999-4999-8999-999999999991';

-- name: bundle_remove_child
-- removeChildFromBundleAction: T4 leaves T2's bundle (T1 remains, settings stay).
UPDATE tickets SET master_ticket_id = NULL, updated_at = now()
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND ticket_id = '99999999-9999-4999-8999-999999999994';

-- name: bundle_unbundle
-- unbundleMasterTicketAction: every child of T2 leaves, settings deleted.
UPDATE tickets SET master_ticket_id = NULL, updated_at = now()
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND master_ticket_id = '99999999-9999-4999-8999-999999999992';
DELETE FROM ticket_bundle_settings
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND master_ticket_id = '99999999-9999-4999-8999-999999999992';

-- name: timer_start
-- A running time-tracking session (no end time yet): nothing to report.
INSERT INTO time_entries (tenant, entry_id, user_id, start_time, work_item_id, work_item_type, billable_duration,
                          created_at, work_date, work_timezone)
VALUES ('11111111-1111-4111-8111-111111111111', 'eeeeeeee-eeee-4eee-8eee-eeeeeeeeeee2',
        '33333333-3333-4333-8333-333333333333', date_trunc('minute', now()) - interval '90 minutes',
        '99999999-9999-4999-8999-999999999991', 'ticket', 0, now(), current_date, 'UTC');

-- name: timer_stop
UPDATE time_entries SET end_time = date_trunc('minute', now()), updated_at = now()
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND entry_id = 'eeeeeeee-eeee-4eee-8eee-eeeeeeeeeee2';

-- name: scheduled_comment
INSERT INTO comment_threads (tenant, thread_id, ticket_id, root_comment_id, is_internal)
VALUES ('11111111-1111-4111-8111-111111111111', 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaa7',
        '99999999-9999-4999-8999-999999999991', 'cccccccc-cccc-4ccc-8ccc-ccccccccccc7', false);
INSERT INTO comments (tenant, comment_id, ticket_id, user_id, note, is_internal, is_resolution, author_type, thread_id,
                      publish_state, scheduled_publish_at)
VALUES ('11111111-1111-4111-8111-111111111111', 'cccccccc-cccc-4ccc-8ccc-ccccccccccc7',
        '99999999-9999-4999-8999-999999999991', '44444444-4444-4444-8444-444444444444',
        'Good morning!', false, false, 'internal', 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaa7', 'scheduled',
        now() + interval '1 day');

-- name: scheduled_comment_published
UPDATE comments SET publish_state = 'published', published_at = now()
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND comment_id = 'cccccccc-cccc-4ccc-8ccc-ccccccccccc7';
