-- features and their runs (PostgreSQL: the same tables as ../0001_features_and_runs.sql)
CREATE TABLE features (
    name        TEXT PRIMARY KEY,
    branch      TEXT NOT NULL,
    worktree    TEXT NOT NULL,
    isolation   TEXT NOT NULL,
    current_run TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE TABLE runs (
    feature     TEXT NOT NULL REFERENCES features(name),
    run         TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (feature, run)
);
