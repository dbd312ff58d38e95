-- engines: the processes that served the project, each named by pid, process start time and
-- boot id. At most one row is serving: it holds the lease, renewed by its heartbeat until
-- lease_until (seconds of the boot clock). runs.engine_id names the engine that owns a run.
CREATE TABLE engines (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    pid          INTEGER NOT NULL,
    start_time   INTEGER NOT NULL,
    boot_id      TEXT NOT NULL,
    state        TEXT NOT NULL,
    lease_until  REAL NOT NULL,
    started_at   TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL,
    stopped_at   TEXT
);
CREATE UNIQUE INDEX engines_one_serving ON engines(state) WHERE state = 'serving';
ALTER TABLE runs ADD COLUMN engine_id INTEGER REFERENCES engines(id);
