-- orchestration: run state and ownership, phase attempts, the event log
ALTER TABLE runs ADD COLUMN run_id TEXT;
ALTER TABLE runs ADD COLUMN provider TEXT;
ALTER TABLE runs ADD COLUMN queued_at TEXT;
ALTER TABLE runs ADD COLUMN queue_seq INTEGER;
ALTER TABLE runs ADD COLUMN started_at TEXT;
ALTER TABLE runs ADD COLUMN finished_at TEXT;
ALTER TABLE runs ADD COLUMN current_phase TEXT;
ALTER TABLE runs ADD COLUMN cost_usd REAL NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN last_error TEXT;
ALTER TABLE runs ADD COLUMN engine_pid INTEGER;
ALTER TABLE runs ADD COLUMN fencing INTEGER NOT NULL DEFAULT 0;
CREATE TABLE attempts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    feature     TEXT NOT NULL,
    run         TEXT NOT NULL,
    phase       TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    state       TEXT NOT NULL,
    provider    TEXT NOT NULL,
    fencing     INTEGER NOT NULL,
    pid         INTEGER,
    start_time  INTEGER,
    mark        TEXT,
    session_id  TEXT,
    cost_usd    REAL,
    turns       INTEGER,
    start_commit TEXT,
    outcome     TEXT,
    message     TEXT,
    duration_s  REAL,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    FOREIGN KEY (feature, run) REFERENCES runs(feature, run)
);
CREATE INDEX attempts_by_run ON attempts(feature, run, phase, attempt);
CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    feature     TEXT,
    run         TEXT,
    event_type  TEXT NOT NULL,
    timestamp   TEXT NOT NULL,
    data        TEXT NOT NULL
);
CREATE INDEX events_by_feature ON events(feature, id);
