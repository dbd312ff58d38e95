-- the workspace (server.workspace_id) in every row, for tooling that reads rows of several
-- workspaces side by side. The store applying this migration binds its own workspace to
-- :workspace_id. A store is one workspace's from then on: the rows already there are stamped
-- with it, and store_workspace (one row) records it, read by every open, which refuses a config
-- naming another workspace. One row to read, not every row to scan, and nothing to stamp later:
-- the store checks it, and writes its workspace into every row it inserts.
CREATE TABLE store_workspace (
    singleton    INTEGER PRIMARY KEY CHECK (singleton = 1),
    workspace_id TEXT NOT NULL CHECK (workspace_id <> '')
);
INSERT INTO store_workspace (singleton, workspace_id) VALUES (1, :workspace_id);
-- SQLite adds a NOT NULL column only with a constant default: '' is no workspace, and nothing
-- inserts it (tests/test_store_backends.py checks every row of every table)
ALTER TABLE features ADD COLUMN workspace_id TEXT NOT NULL DEFAULT '';
UPDATE features SET workspace_id = :workspace_id;
ALTER TABLE runs ADD COLUMN workspace_id TEXT NOT NULL DEFAULT '';
UPDATE runs SET workspace_id = :workspace_id;
ALTER TABLE attempts ADD COLUMN workspace_id TEXT NOT NULL DEFAULT '';
UPDATE attempts SET workspace_id = :workspace_id;
ALTER TABLE approvals ADD COLUMN workspace_id TEXT NOT NULL DEFAULT '';
UPDATE approvals SET workspace_id = :workspace_id;
ALTER TABLE engines ADD COLUMN workspace_id TEXT NOT NULL DEFAULT '';
UPDATE engines SET workspace_id = :workspace_id;
-- the audit trail refuses every UPDATE (0006): its trigger is lifted for the stamp alone, in this
-- migration's one transaction, and made again as it was
ALTER TABLE events ADD COLUMN workspace_id TEXT NOT NULL DEFAULT '';
DROP TRIGGER events_no_update;
UPDATE events SET workspace_id = :workspace_id;
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'the tmops audit trail is append-only: events cannot be changed');
END;
