-- 0009_serve: what `oasync serve` needs beside the read contract.
--
--   - a per-topic epoch counter: offsets handed to clients start with it, so
--     that they sort across epoch changes (a UUID would sort at random). Every
--     new epoch takes the next number of one sequence, so counters only grow,
--     even for a topic removed and registered again;
--   - the counter of each epoch that a timeline fork replaced, so that an
--     offset of that epoch still resumes at or below the fork;
--   - revoked sessions: `oasync sessions revoke` records one, and every
--     server ends that session's streams.

CREATE SEQUENCE oasync.epoch_counters;

ALTER TABLE oasync.topics ADD COLUMN epoch_counter bigint;
UPDATE oasync.topics SET epoch_counter = nextval('oasync.epoch_counters');
ALTER TABLE oasync.topics
    ALTER COLUMN epoch_counter SET DEFAULT nextval('oasync.epoch_counters'),
    ALTER COLUMN epoch_counter SET NOT NULL;
COMMENT ON COLUMN oasync.topics.epoch_counter IS
    'Grows with every new epoch (oasync.epoch_counters): the first part of a served offset.';

-- A new epoch takes the next counter, whatever changed it (reset-epoch,
-- reproject --reset, a timeline fork).
CREATE FUNCTION oasync.count_epoch() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog
AS $$
BEGIN
    IF NEW.epoch IS DISTINCT FROM OLD.epoch THEN
        NEW.epoch_counter := nextval('oasync.epoch_counters');
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER topics_epoch_counter BEFORE UPDATE OF epoch ON oasync.topics
    FOR EACH ROW EXECUTE FUNCTION oasync.count_epoch();

-- The counter of a forked epoch, taken from the topic when its history row is
-- written (note_timeline writes it before it moves the topic to a new epoch).
ALTER TABLE oasync.epoch_history ADD COLUMN epoch_counter bigint;
CREATE FUNCTION oasync.note_epoch_counter() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog
AS $$
BEGIN
    IF NEW.epoch_counter IS NULL THEN
        SELECT t.epoch_counter INTO NEW.epoch_counter FROM oasync.topics AS t
        WHERE t.topic = NEW.topic AND t.epoch = NEW.epoch;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER epoch_history_counter BEFORE INSERT ON oasync.epoch_history
    FOR EACH ROW EXECUTE FUNCTION oasync.note_epoch_counter();

CREATE TABLE oasync.revoked_sessions (
    session_id  text        PRIMARY KEY CHECK (octet_length(session_id) BETWEEN 1 AND 256),
    revoked_at  timestamptz NOT NULL DEFAULT now(),
    reason      text        NOT NULL DEFAULT ''
);
COMMENT ON TABLE oasync.revoked_sessions IS
    'Sessions whose tokens oasync serve refuses, and whose open streams it ends.';
