-- a provider per phase: the per-phase overrides `tmops start --phase-provider` gave the run (a
-- JSON object phase -> provider, NULL: none), and the provider whose usage limit paused the run
-- (the provider of the phase that hit it: only that provider's runs are held back)
ALTER TABLE runs ADD COLUMN phase_providers TEXT;
ALTER TABLE runs ADD COLUMN limited_provider TEXT
