-- the workspace (server.workspace_id) in every row, for tooling that reads rows of several
-- workspaces side by side (the design: ../0010_workspace.sql). The store applying this migration
-- sets tmops.workspace_id for its transaction. Each column is added with that workspace as its
-- default, which PostgreSQL gives the rows already there without an UPDATE (the audit trail's
-- triggers never fire), then the default is dropped: every insert names its workspace, and one
-- that does not is refused (NOT NULL).
CREATE TABLE store_workspace (
    singleton    INTEGER PRIMARY KEY CHECK (singleton = 1),
    workspace_id TEXT NOT NULL CHECK (workspace_id <> '')
);
INSERT INTO store_workspace (singleton, workspace_id)
    VALUES (1, current_setting('tmops.workspace_id'));
ALTER TABLE features ADD COLUMN workspace_id TEXT NOT NULL
    DEFAULT current_setting('tmops.workspace_id');
ALTER TABLE features ALTER COLUMN workspace_id DROP DEFAULT;
ALTER TABLE runs ADD COLUMN workspace_id TEXT NOT NULL
    DEFAULT current_setting('tmops.workspace_id');
ALTER TABLE runs ALTER COLUMN workspace_id DROP DEFAULT;
ALTER TABLE attempts ADD COLUMN workspace_id TEXT NOT NULL
    DEFAULT current_setting('tmops.workspace_id');
ALTER TABLE attempts ALTER COLUMN workspace_id DROP DEFAULT;
ALTER TABLE approvals ADD COLUMN workspace_id TEXT NOT NULL
    DEFAULT current_setting('tmops.workspace_id');
ALTER TABLE approvals ALTER COLUMN workspace_id DROP DEFAULT;
ALTER TABLE engines ADD COLUMN workspace_id TEXT NOT NULL
    DEFAULT current_setting('tmops.workspace_id');
ALTER TABLE engines ALTER COLUMN workspace_id DROP DEFAULT;
ALTER TABLE events ADD COLUMN workspace_id TEXT NOT NULL
    DEFAULT current_setting('tmops.workspace_id');
ALTER TABLE events ALTER COLUMN workspace_id DROP DEFAULT;
