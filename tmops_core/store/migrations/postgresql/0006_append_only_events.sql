-- the audit trail is append-only: an event, once recorded, is never changed or deleted (nothing
-- in tmops does either); these triggers make PostgreSQL refuse it for any connection of a role
-- that is not the table's owner working around them. tmops_jsonb: an event's data as jsonb,
-- NULL where it is not JSON (the metrics read numbers out of it; a cast would fail the query)
CREATE FUNCTION tmops_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'the tmops audit trail is append-only: events cannot be changed';
    END IF;
    RAISE EXCEPTION 'the tmops audit trail is append-only: events cannot be deleted';
END
$$;
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION tmops_events_append_only();
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION tmops_events_append_only();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION tmops_events_append_only();
CREATE FUNCTION tmops_jsonb(data TEXT) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN data::jsonb;
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$$;
