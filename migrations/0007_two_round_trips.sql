-- 0007_two_round_trips: what the sink needs to write a batch in two round
-- trips with statements whose plans do not depend on statistics, and what
-- `oasync inspect` needs to cost O(topics).
--
--   - per topic, counters of live docs and tombstones, kept by the sink and
--     purge in the transactions that change them;
--   - drop_placeholders by ctid (the rows the sink locked and read);
--   - room on doc pages for rewriting docs in place.

ALTER TABLE oasync.topics
    ADD COLUMN live_docs bigint NOT NULL DEFAULT 0,
    ADD COLUMN tombstones bigint NOT NULL DEFAULT 0;
COMMENT ON COLUMN oasync.topics.live_docs IS
    'Docs of the topic that exist and are not deleted; kept by the sink in its write statement.';
COMMENT ON COLUMN oasync.topics.tombstones IS
    'Deleted docs of the topic still stored; kept by the sink and by purge.';
UPDATE oasync.topics AS t
SET live_docs = (SELECT count(*) FROM oasync.docs AS d
                 WHERE d.topic = t.topic AND d.doc_version > 0 AND NOT d.deleted),
    tombstones = (SELECT count(*) FROM oasync.docs AS d
                  WHERE d.topic = t.topic AND d.doc_version > 0 AND d.deleted);

-- Placeholders by ctid: the rows the sink inserted and locked in the same
-- transaction. Removes version-0 rows that hold no stream position (NOT
-- deleted) and nothing else. SECURITY DEFINER: the writer has no DELETE.
CREATE FUNCTION oasync.drop_placeholders(p_rows tid[]) RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, oasync
AS $$
    WITH gone AS (
        DELETE FROM oasync.docs AS d
        WHERE d.ctid = ANY (p_rows) AND d.doc_version = 0 AND NOT d.deleted
        RETURNING 1
    )
    SELECT count(*) FROM gone
$$;
DROP FUNCTION oasync.drop_placeholders(json);

-- Topics registered from now on start on the current timeline (0006 set it
-- for the ones that existed): their first write needs no extra step.
ALTER TABLE oasync.topics ALTER COLUMN timeline SET DEFAULT oasync.current_timeline();

-- Every change rewrites a doc's row. With room left on each page, PostgreSQL
-- writes the new version beside the old one (a HOT update: no new index
-- entries) as long as no indexed column changes; the sink creates a doc's row
-- in its final scope for that reason. New pages keep a quarter free.
ALTER TABLE oasync.docs SET (fillfactor = 75);
