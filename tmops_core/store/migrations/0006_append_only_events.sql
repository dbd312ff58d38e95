-- the audit trail is append-only: an event, once recorded, is never changed or deleted (nothing
-- in tmops does either); these triggers make SQLite refuse it for any connection to the store
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'the tmops audit trail is append-only: events cannot be changed');
END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'the tmops audit trail is append-only: events cannot be deleted');
END;
