-- the lease by the database's clock: when the serving engine's lease ends, in seconds since the
-- epoch as the database tells time (every machine that shares the store reads the same clock;
-- an engine of another machine is judged by it alone). NULL: an engine that gave none
ALTER TABLE engines ADD COLUMN lease_expires_at DOUBLE PRECISION;
