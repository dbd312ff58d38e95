-- cost and usage limits: the tokens an attempt reported (priced when the agent gives no cost),
-- and when a run paused by a usage limit may go on (an ISO time, UTC): the engine queues it
-- again then, and holds the other runs of its provider back until then
ALTER TABLE attempts ADD COLUMN input_tokens BIGINT;
ALTER TABLE attempts ADD COLUMN output_tokens BIGINT;
ALTER TABLE runs ADD COLUMN resume_at TEXT;
