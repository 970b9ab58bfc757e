-- The demo's workload beyond tickets: scheduling, capacity, projects and tasks, time-entry
-- approval. Each named query is one transaction written the way Alga PSA writes it
-- (shared/alga/SPEC.md §5.8–§5.9); cdc/demo.py runs them after workload.sql's ticket steps.
-- Ids of workload.sql's seed (tenant 1111…, users dana 3333…, lee 4444…, kim 3434…, ticket
-- T-1001 9991…, its time entry eeee…1) and these: team "Field" 7a7a…, appointment 5c5c…01,
-- block 5c5c…02, bookings 5c5c…11/12/13, project statuses 6a6a…01–04, standard status 6a6a…05,
-- project 9a9a…01, phase 9a9a…02, status mappings 9b9b…01–03, tasks 9c9c…01/02, dependency 9d9d…01.
-- Transactions that say who acts carry the opt-in context message (schedule entries, projects
-- and tasks have no actor column): pg_logical_emit_message(true, 'cdc.context', '{"actorUserId": …}').

-- name: seed
-- Reference rows written before the slot exists (they reach the derivers via the state bootstrap):
-- dana and lee are the "Field" team, 4 h a day each (a daily capacity of 8 h); the project
-- statuses and the task board's status.
UPDATE users SET first_name = 'Dana', last_name = 'Lopez'
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND user_id = '33333333-3333-4333-8333-333333333333';
UPDATE users SET first_name = 'Lee', last_name = 'Chen'
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND user_id = '44444444-4444-4444-8444-444444444444';
UPDATE users SET first_name = 'Kim', last_name = 'Park'
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND user_id = '34343434-3434-4343-8343-343434343434';
INSERT INTO teams (tenant, team_id, team_name, manager_id) VALUES
  ('11111111-1111-4111-8111-111111111111', '7a7a7a7a-7a7a-47a7-87a7-7a7a7a7a7a7a', 'Field',
   '33333333-3333-4333-8333-333333333333');
INSERT INTO team_members (tenant, team_id, user_id) VALUES
  ('11111111-1111-4111-8111-111111111111', '7a7a7a7a-7a7a-47a7-87a7-7a7a7a7a7a7a', '33333333-3333-4333-8333-333333333333'),
  ('11111111-1111-4111-8111-111111111111', '7a7a7a7a-7a7a-47a7-87a7-7a7a7a7a7a7a', '44444444-4444-4444-8444-444444444444');
INSERT INTO resources (tenant, user_id, max_daily_capacity) VALUES
  ('11111111-1111-4111-8111-111111111111', '33333333-3333-4333-8333-333333333333', 4),
  ('11111111-1111-4111-8111-111111111111', '44444444-4444-4444-8444-444444444444', 4);
INSERT INTO statuses (tenant, status_id, name, status_type, item_type, order_number, is_closed) VALUES
  ('11111111-1111-4111-8111-111111111111', '6a6a6a6a-0000-4000-8000-000000000001', 'Active', 'project', 'project', 1, false),
  ('11111111-1111-4111-8111-111111111111', '6a6a6a6a-0000-4000-8000-000000000002', 'On Hold', 'project', 'project', 2, false),
  ('11111111-1111-4111-8111-111111111111', '6a6a6a6a-0000-4000-8000-000000000003', 'Completed', 'project', 'project', 3, true),
  ('11111111-1111-4111-8111-111111111111', '6a6a6a6a-0000-4000-8000-000000000004', 'To Do', 'project_task', 'project_task', 1, false);
INSERT INTO standard_statuses (standard_status_id, name, item_type, display_order, is_closed) VALUES
  ('6a6a6a6a-0000-4000-8000-000000000005', 'Done', 'project_task', 9, true);

-- ---------------------------------------------------------------------------------------
-- An appointment's life (addScheduleEntry / updateScheduleEntry on the MSP calendar).
-- ---------------------------------------------------------------------------------------

-- name: appointment_create
-- The entry for ticket T-1001, then its two assignee rows.
INSERT INTO schedule_entries (tenant, entry_id, title, work_item_id, scheduled_start, scheduled_end, status,
                              work_item_type, is_private, created_at, updated_at)
VALUES ('11111111-1111-4111-8111-111111111111', '5c5c5c5c-0000-4000-8000-000000000001', 'Replace the printer',
        '99999999-9999-4999-8999-999999999991', '2027-01-11 09:00Z', '2027-01-11 10:00Z', 'scheduled', 'ticket',
        false, now(), now());
INSERT INTO schedule_entry_assignees (tenant, entry_id, user_id) VALUES
  ('11111111-1111-4111-8111-111111111111', '5c5c5c5c-0000-4000-8000-000000000001', '33333333-3333-4333-8333-333333333333'),
  ('11111111-1111-4111-8111-111111111111', '5c5c5c5c-0000-4000-8000-000000000001', '44444444-4444-4444-8444-444444444444');

-- name: appointment_reschedule
UPDATE schedule_entries SET scheduled_start = '2027-01-11 13:00Z', scheduled_end = '2027-01-11 14:30Z', updated_at = now()
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND entry_id = '5c5c5c5c-0000-4000-8000-000000000001';

-- name: appointment_reassign
-- Dana hands the visit to kim: the app deletes and re-inserts the assignee rows; the writer
-- says who acts.
SELECT pg_logical_emit_message(true, 'cdc.context', '{"actorUserId": "33333333-3333-4333-8333-333333333333"}');
DELETE FROM schedule_entry_assignees
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND entry_id = '5c5c5c5c-0000-4000-8000-000000000001';
INSERT INTO schedule_entry_assignees (tenant, entry_id, user_id) VALUES
  ('11111111-1111-4111-8111-111111111111', '5c5c5c5c-0000-4000-8000-000000000001', '34343434-3434-4343-8343-343434343434');
UPDATE schedule_entries SET updated_at = now()
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND entry_id = '5c5c5c5c-0000-4000-8000-000000000001';

-- name: dispatch_en_route
UPDATE schedule_entries SET status = 'en_route', updated_at = now()
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND entry_id = '5c5c5c5c-0000-4000-8000-000000000001';

-- name: dispatch_arrived
UPDATE schedule_entries SET status = 'arrived', updated_at = now()
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND entry_id = '5c5c5c5c-0000-4000-8000-000000000001';

-- name: dispatch_checked_out
UPDATE schedule_entries SET status = 'checked_out', updated_at = now()
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND entry_id = '5c5c5c5c-0000-4000-8000-000000000001';

-- name: appointment_complete
UPDATE schedule_entries SET status = 'completed', updated_at = now()
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND entry_id = '5c5c5c5c-0000-4000-8000-000000000001';

-- name: block_create
-- Kim blocks an hour in the calendar: a private ad-hoc entry with its owner as only assignee.
INSERT INTO schedule_entries (tenant, entry_id, title, scheduled_start, scheduled_end, status, work_item_type,
                              is_private, created_at, updated_at)
VALUES ('11111111-1111-4111-8111-111111111111', '5c5c5c5c-0000-4000-8000-000000000002', 'Dentist',
        '2027-01-13 12:00Z', '2027-01-13 13:00Z', 'scheduled', 'ad_hoc', true, now(), now());
INSERT INTO schedule_entry_assignees (tenant, entry_id, user_id) VALUES
  ('11111111-1111-4111-8111-111111111111', '5c5c5c5c-0000-4000-8000-000000000002', '34343434-3434-4343-8343-343434343434');

-- name: block_delete
DELETE FROM schedule_entries
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND entry_id = '5c5c5c5c-0000-4000-8000-000000000002';

-- ---------------------------------------------------------------------------------------
-- The Field team's capacity on 2027-01-12: 8 h (dana 4 + lee 4).
-- ---------------------------------------------------------------------------------------

-- name: capacity_dana_6h
-- 6 h booked: under the limit, nothing.
INSERT INTO schedule_entries (tenant, entry_id, title, scheduled_start, scheduled_end, status, work_item_type)
VALUES ('11111111-1111-4111-8111-111111111111', '5c5c5c5c-0000-4000-8000-000000000011', 'Onsite',
        '2027-01-12 09:00Z', '2027-01-12 15:00Z', 'scheduled', 'ad_hoc');
INSERT INTO schedule_entry_assignees (tenant, entry_id, user_id) VALUES
  ('11111111-1111-4111-8111-111111111111', '5c5c5c5c-0000-4000-8000-000000000011', '33333333-3333-4333-8333-333333333333');

-- name: capacity_lee_2h
-- 8 h booked: the crossing.
INSERT INTO schedule_entries (tenant, entry_id, title, scheduled_start, scheduled_end, status, work_item_type)
VALUES ('11111111-1111-4111-8111-111111111111', '5c5c5c5c-0000-4000-8000-000000000012', 'Onsite',
        '2027-01-12 15:00Z', '2027-01-12 17:00Z', 'scheduled', 'ad_hoc');
INSERT INTO schedule_entry_assignees (tenant, entry_id, user_id) VALUES
  ('11111111-1111-4111-8111-111111111111', '5c5c5c5c-0000-4000-8000-000000000012', '44444444-4444-4444-8444-444444444444');

-- name: capacity_lee_1h_more
-- 9 h booked: already past the limit, nothing.
INSERT INTO schedule_entries (tenant, entry_id, title, scheduled_start, scheduled_end, status, work_item_type)
VALUES ('11111111-1111-4111-8111-111111111111', '5c5c5c5c-0000-4000-8000-000000000013', 'Onsite',
        '2027-01-12 17:00Z', '2027-01-12 18:00Z', 'scheduled', 'ad_hoc');
INSERT INTO schedule_entry_assignees (tenant, entry_id, user_id) VALUES
  ('11111111-1111-4111-8111-111111111111', '5c5c5c5c-0000-4000-8000-000000000013', '44444444-4444-4444-8444-444444444444');

-- ---------------------------------------------------------------------------------------
-- A project with a task board (createProject, addPhase, addTaskToPhase, updateTaskStatus …).
-- ---------------------------------------------------------------------------------------

-- name: project_create
-- The project, then its board's status columns: To Do, Doing (a custom name), Done (closed).
INSERT INTO projects (tenant, project_id, project_name, status, wbs_code, client_id, project_number, created_at,
                      updated_at)
VALUES ('11111111-1111-4111-8111-111111111111', '9a9a9a9a-0000-4000-8000-000000000001', 'Office move',
        '6a6a6a6a-0000-4000-8000-000000000001', '1', '22222222-2222-4222-8222-222222222222', 'PRJ-0001', now(), now());
INSERT INTO project_status_mappings (tenant, project_id, status_id, standard_status_id, project_status_mapping_id,
                                     custom_name, display_order, is_standard) VALUES
  ('11111111-1111-4111-8111-111111111111', '9a9a9a9a-0000-4000-8000-000000000001', '6a6a6a6a-0000-4000-8000-000000000004',
   NULL, '9b9b9b9b-0000-4000-8000-000000000001', NULL, 1, false),
  ('11111111-1111-4111-8111-111111111111', '9a9a9a9a-0000-4000-8000-000000000001', '6a6a6a6a-0000-4000-8000-000000000004',
   NULL, '9b9b9b9b-0000-4000-8000-000000000002', 'Doing', 2, false),
  ('11111111-1111-4111-8111-111111111111', '9a9a9a9a-0000-4000-8000-000000000001', NULL,
   '6a6a6a6a-0000-4000-8000-000000000005', '9b9b9b9b-0000-4000-8000-000000000003', NULL, 3, true);

-- name: phase_add
INSERT INTO project_phases (tenant, phase_id, project_id, phase_name, status, order_number, wbs_code)
VALUES ('11111111-1111-4111-8111-111111111111', '9a9a9a9a-0000-4000-8000-000000000002',
        '9a9a9a9a-0000-4000-8000-000000000001', 'Planning', 'active', 1, '1.1');

-- name: project_update
-- updateProject: a rename and a status change.
UPDATE projects SET project_name = 'HQ move', status = '6a6a6a6a-0000-4000-8000-000000000002', updated_at = now()
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND project_id = '9a9a9a9a-0000-4000-8000-000000000001';

-- name: task_create
-- addTaskToPhase with an assignee, kim saying she acts.
SELECT pg_logical_emit_message(true, 'cdc.context', '{"actorUserId": "34343434-3434-4343-8343-343434343434"}');
INSERT INTO project_tasks (tenant, task_id, phase_id, task_name, assigned_to, due_date, wbs_code, created_at,
                           updated_at, project_status_mapping_id, order_key)
VALUES ('11111111-1111-4111-8111-111111111111', '9c9c9c9c-0000-4000-8000-000000000001',
        '9a9a9a9a-0000-4000-8000-000000000002', 'Pack the servers', '33333333-3333-4333-8333-333333333333',
        '2027-01-20 17:00Z', '1.1.1', now(), now(), '9b9b9b9b-0000-4000-8000-000000000001', 'a0');

-- name: task_doing
-- updateTaskStatus: dragged into the next column.
UPDATE project_tasks SET project_status_mapping_id = '9b9b9b9b-0000-4000-8000-000000000002', order_key = 'a1',
                         updated_at = now()
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND task_id = '9c9c9c9c-0000-4000-8000-000000000001';

-- name: task_agent
-- addTaskResource: lee helps dana.
INSERT INTO task_resources (tenant, task_id, assigned_to, additional_user_id, assigned_at)
VALUES ('11111111-1111-4111-8111-111111111111', '9c9c9c9c-0000-4000-8000-000000000001',
        '33333333-3333-4333-8333-333333333333', '44444444-4444-4444-8444-444444444444', now());

-- name: task_done
-- dragged into the closed column.
UPDATE project_tasks SET project_status_mapping_id = '9b9b9b9b-0000-4000-8000-000000000003', order_key = 'a2',
                         updated_at = now()
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND task_id = '9c9c9c9c-0000-4000-8000-000000000001';

-- name: task_second
INSERT INTO project_tasks (tenant, task_id, phase_id, task_name, wbs_code, created_at, updated_at,
                           project_status_mapping_id)
VALUES ('11111111-1111-4111-8111-111111111111', '9c9c9c9c-0000-4000-8000-000000000002',
        '9a9a9a9a-0000-4000-8000-000000000002', 'Unplug the racks', '1.1.2', now(), now(),
        '9b9b9b9b-0000-4000-8000-000000000001');

-- name: dependency_add
-- addTaskDependency: "Unplug the racks" is blocked by "Pack the servers".
INSERT INTO project_task_dependencies (tenant, dependency_id, predecessor_task_id, successor_task_id, dependency_type,
                                       created_at)
VALUES ('11111111-1111-4111-8111-111111111111', '9d9d9d9d-0000-4000-8000-000000000001',
        '9c9c9c9c-0000-4000-8000-000000000001', '9c9c9c9c-0000-4000-8000-000000000002', 'blocks', now());

-- name: dependency_remove
DELETE FROM project_task_dependencies
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND dependency_id = '9d9d9d9d-0000-4000-8000-000000000001';

-- name: project_close
-- updateProject into the closed status, dana saying she acts.
SELECT pg_logical_emit_message(true, 'cdc.context', '{"actorUserId": "33333333-3333-4333-8333-333333333333"}');
UPDATE projects SET status = '6a6a6a6a-0000-4000-8000-000000000003', updated_at = now()
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND project_id = '9a9a9a9a-0000-4000-8000-000000000001';

-- ---------------------------------------------------------------------------------------
-- The approval of lee's time entry on T-1001 (workload.sql's time_entry).
-- ---------------------------------------------------------------------------------------

-- name: time_submit
UPDATE time_entries SET approval_status = 'SUBMITTED', updated_at = now()
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND entry_id = 'eeeeeeee-eeee-4eee-8eee-eeeeeeeeeee1';

-- name: time_approve
-- dana approves the time sheet, saying she acts.
SELECT pg_logical_emit_message(true, 'cdc.context', '{"actorUserId": "33333333-3333-4333-8333-333333333333"}');
UPDATE time_entries SET approval_status = 'APPROVED', updated_at = now()
 WHERE tenant = '11111111-1111-4111-8111-111111111111' AND entry_id = 'eeeeeeee-eeee-4eee-8eee-eeeeeeeeeee1';
