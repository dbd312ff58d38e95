-- the lifecycle: why a run is paused, and the branch head tmops last left (the branch guard)
ALTER TABLE runs ADD COLUMN pause_reason TEXT;
ALTER TABLE runs ADD COLUMN branch_head TEXT;
