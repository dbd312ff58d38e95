-- a person in control: a pause asked for while a phase runs (taken before the next phase), and
-- the approvals the approval gates (features.approve_before) wait for
ALTER TABLE runs ADD COLUMN pause_requested INTEGER NOT NULL DEFAULT 0;
CREATE TABLE approvals (
    feature TEXT NOT NULL,
    run TEXT NOT NULL,
    phase TEXT NOT NULL,
    approved_at TEXT NOT NULL,
    PRIMARY KEY (feature, run, phase),
    FOREIGN KEY (feature, run) REFERENCES runs (feature, run) ON DELETE CASCADE
);
