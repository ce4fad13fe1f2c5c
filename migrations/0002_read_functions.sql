-- 0002_read_functions: the read contract for delivery services.
--
-- Every reader (oasync's own CLI and any delivery service, in any language)
-- calls these functions, so all of them resume clients with the same rules.
-- See README, "The SQL contract for delivery services".

-- The delta-resync floor: the highest last_watermark among tombstones that
-- purge removed. `snapshot --since W` is exact only while W >= delta_floor.
ALTER TABLE oasync.topics
    ADD COLUMN delta_floor bigint NOT NULL DEFAULT 0;

-- The resume rule. A cursor (epoch, watermark) may resume iff the epoch
-- matches and purged_through <= watermark <= head. Otherwise reason says why:
--   'epoch_changed'           the topic's history was rewritten or reset;
--   'retention_floor_breach'  watermark < purged_through;
--   'cursor_ahead'            watermark > head (e.g. a restore from backup);
--   'unknown_topic'           no such topic.
-- p_epoch NULL skips the epoch comparison (a cursor taken without one).
-- An empty topic and a fully purged topic follow the same rule; nothing
-- depends on which rows happen to remain.
CREATE FUNCTION oasync.resume_check(p_topic text, p_epoch uuid, p_watermark bigint,
                                    OUT resumable boolean, OUT reason text, OUT epoch uuid,
                                    OUT head bigint, OUT purged_through bigint)
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(r.reason IS NULL, false),
           coalesce(r.reason, 'unknown_topic'),
           t.epoch, t.head, t.purged_through
    FROM (SELECT 1) AS one
    LEFT JOIN oasync.topics AS t ON t.topic = p_topic
    LEFT JOIN LATERAL (
        SELECT CASE
                   WHEN t.topic IS NULL THEN 'unknown_topic'
                   WHEN p_epoch IS NOT NULL AND p_epoch <> t.epoch THEN 'epoch_changed'
                   WHEN p_watermark < t.purged_through THEN 'retention_floor_breach'
                   WHEN p_watermark > t.head THEN 'cursor_ahead'
               END AS reason
    ) AS r ON true
$$;

-- One page of a topic's journal: the events with p_after < watermark <=
-- p_through, in watermark order, of scope p_scope when it is not NULL.
-- Watermarks are dense, so a reader pages by watermark range: it takes head
-- from resume_check, then reads (after, min(after + page, head)] and moves
-- its cursor to the page's upper end (even when the scope filter returned
-- fewer rows).
-- The resume rule is checked in the same snapshot as the rows are read, so a
-- concurrent purge can never make a page silently skip events: a stale cursor
-- raises SQLSTATE 'OA410' with the reason in the message and HINT.
-- For pointer topics the payload comes from the doc (its current state), and
-- payload_fetched is true.
CREATE FUNCTION oasync.read_events(p_topic text, p_epoch uuid, p_after bigint, p_through bigint,
                                   p_scope text DEFAULT NULL)
RETURNS TABLE (watermark bigint, doc_key text, doc_version bigint, scope text, op text,
               payload json, payload_hash bytea, payload_fetched boolean,
               committed_at timestamptz)
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    c record;
    mode text;
BEGIN
    SELECT * INTO c FROM oasync.resume_check(p_topic, p_epoch, p_after);
    IF NOT c.resumable THEN
        RAISE EXCEPTION 'stale cursor for topic "%": %', p_topic, c.reason
            USING ERRCODE = 'OA410',
                  HINT = format('reason=%s floor=%s head=%s epoch=%s', c.reason,
                                c.purged_through, c.head, c.epoch);
    END IF;
    SELECT t.payload_mode INTO mode FROM oasync.topics AS t WHERE t.topic = p_topic;
    IF mode = 'inline' THEN
        RETURN QUERY
            SELECT e.watermark, e.doc_key, e.doc_version, e.scope, e.op, e.payload,
                   e.payload_hash, false, e.committed_at
            FROM oasync.events AS e
            WHERE e.topic = p_topic AND e.watermark > p_after AND e.watermark <= p_through
              AND (p_scope IS NULL OR e.scope = p_scope)
            ORDER BY e.watermark;
    ELSE
        RETURN QUERY
            SELECT e.watermark, e.doc_key, e.doc_version, e.scope, e.op,
                   CASE WHEN e.op = 'upsert' THEN d.payload END, e.payload_hash,
                   e.op = 'upsert', e.committed_at
            FROM oasync.events AS e
            LEFT JOIN oasync.docs AS d ON d.topic = e.topic AND d.doc_key = e.doc_key
            WHERE e.topic = p_topic AND e.watermark > p_after AND e.watermark <= p_through
              AND (p_scope IS NULL OR e.scope = p_scope)
            ORDER BY e.watermark;
    END IF;
END
$$;

-- One page of a snapshot: docs of a topic ordered by doc_key, after
-- p_after_key ('' for the first page), at most p_limit of them.
--   p_since NULL: every live doc (no tombstones), for a full resync;
--   p_since W:    every doc, tombstones included, changed after watermark W
--                 (delta resync); raises SQLSTATE 'OA410' when W is below the
--                 topic's delta_floor (tombstones it would need were purged).
-- Call it, together with oasync.topic_position, inside one
-- REPEATABLE READ READ ONLY transaction: then snapshot + tail from the
-- position's head misses nothing and repeats nothing.
CREATE FUNCTION oasync.snapshot_docs(p_topic text, p_scope text, p_since bigint,
                                     p_after_key text, p_limit integer)
RETURNS TABLE (doc_key text, scope text, doc_version bigint, deleted boolean, payload json,
               payload_hash bytea, last_watermark bigint)
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    floor bigint;
BEGIN
    IF p_since IS NOT NULL THEN
        SELECT t.delta_floor INTO floor FROM oasync.topics AS t WHERE t.topic = p_topic;
        IF p_since < floor THEN
            RAISE EXCEPTION 'delta resync of topic "%" since % is no longer possible: tombstones up to % were purged',
                p_topic, p_since, floor
                USING ERRCODE = 'OA410', HINT = format('reason=retention_floor_breach floor=%s', floor);
        END IF;
    END IF;
    RETURN QUERY
        SELECT d.doc_key, d.scope, d.doc_version, d.deleted, d.payload, d.payload_hash,
               d.last_watermark
        FROM oasync.docs AS d
        WHERE d.topic = p_topic AND d.doc_key > p_after_key AND d.doc_version > 0
          AND (p_scope IS NULL OR d.scope = p_scope)
          AND (CASE WHEN p_since IS NULL THEN NOT d.deleted ELSE d.last_watermark > p_since END)
        ORDER BY d.doc_key
        LIMIT p_limit;
END
$$;

-- Where a topic stands: its epoch, head and purged_through (NULLs for an
-- unknown topic).
CREATE FUNCTION oasync.topic_position(p_topic text, OUT epoch uuid, OUT head bigint,
                                      OUT purged_through bigint)
LANGUAGE sql STABLE
AS $$
    SELECT t.epoch, t.head, t.purged_through FROM oasync.topics AS t WHERE t.topic = p_topic
$$;
