-- 0011_scope_exits_by_scope: a scoped read walks its scope's exits only.
--
-- The exits branch of read_events and of snapshot_docs (0006) asked for
--   topic = T AND scope = S AND watermark > W [AND watermark <= H]
-- ordered by watermark. Two indexes fit that: the primary key
-- (topic, scope, watermark), and scope_exits_topic_watermark (topic,
-- watermark), which purge deletes by. The planner took the second, on a
-- database never analyzed and on a busy one alike: every exit of the topic
-- in the range, every scope's, walked, with the scope as a filter. A tenant's
-- catch-up then cost in proportion to the topic's moves, not its own.
--
-- Here the watermark bounds are row comparisons on (scope, watermark):
-- above (S, W) and, for read_events, at most (S, H). The rows are exactly the
-- same (a row between (S, W) and (S, H) has scope S), but only an index with
-- scope followed by watermark can use the condition. scope_exits_topic_watermark
-- can no longer bound the watermark, only the topic; the primary key bounds
-- all three columns, and is the plan whatever the statistics
-- (tests/integration/plans_test.cpp, "a scoped read walks its scope's exits
-- only"). The row does not begin with topic: from (topic, scope, watermark)
-- the planner derives topic >= T and topic <= T for the other index too,
-- which it then costs as if they were selective. The plain topic and scope
-- conditions stay: they make the primary key's order the watermark's, for
-- the merge, without a sort.
--
-- Everything else is 0006's, unchanged: the signatures, the rows, the
-- errors, the events and docs branches. Both stay SQL functions with
-- SQL-standard bodies (names bound at creation, every operator qualified),
-- STABLE, without SET or SECURITY DEFINER, so that the planner still inlines
-- them into the caller's query. CREATE OR REPLACE keeps their owner and the
-- reader role's EXECUTE.

-- read_events: the contract, and its three branches, as in 0006.
CREATE OR REPLACE FUNCTION oasync.read_events(p_topic text, p_epoch uuid, p_after bigint,
                                              p_through bigint, p_scope text DEFAULT NULL)
RETURNS TABLE (watermark bigint, doc_key text, doc_version bigint, scope text, op text,
               payload json, payload_hash bytea, payload_fetched boolean,
               committed_at timestamptz)
LANGUAGE sql STABLE
BEGIN ATOMIC
    WITH v AS MATERIALIZED (
        -- Once per call: the stale check, and the view to read (NULL: all).
        SELECT oasync.read_check(p_topic, p_epoch, p_after, p_through) AS ok,
               coalesce(p_scope, oasync.session_scope(CURRENT_USER) COLLATE pg_catalog."default") AS scope,
               coalesce(p_through, (SELECT t.head FROM oasync.topics AS t
                                    WHERE t.topic OPERATOR(pg_catalog.=) p_topic)) AS through
    )
    SELECT x.watermark, x.doc_key, x.doc_version, x.scope, x.op,
           CASE
               WHEN x.op OPERATOR(pg_catalog.=) 'delete' THEN NULL
               WHEN x.payload IS NOT NULL THEN x.payload
               ELSE (SELECT d.payload FROM oasync.docs AS d
                     WHERE d.topic OPERATOR(pg_catalog.=) p_topic
                       AND d.doc_key OPERATOR(pg_catalog.=) x.doc_key
                       AND (d.scope OPERATOR(pg_catalog.=) x.scope
                            OR (SELECT v.scope FROM v) IS NULL))
           END,
           x.payload_hash,
           x.op OPERATOR(pg_catalog.=) 'upsert' AND x.payload IS NULL,
           x.committed_at
    FROM (
        (SELECT e.watermark, e.doc_key, e.doc_version, e.scope, e.op, e.payload, e.payload_hash,
                e.committed_at
         FROM oasync.events AS e
         WHERE (SELECT v.ok FROM v) AND (SELECT v.scope FROM v) IS NULL
           AND e.topic OPERATOR(pg_catalog.=) p_topic
           AND e.watermark OPERATOR(pg_catalog.>) p_after
           AND e.watermark OPERATOR(pg_catalog.<=) (SELECT v.through FROM v)
         ORDER BY e.watermark)
        UNION ALL
        (SELECT e.watermark, e.doc_key, e.doc_version, e.scope, e.op, e.payload, e.payload_hash,
                e.committed_at
         FROM oasync.events AS e
         WHERE (SELECT v.ok FROM v) AND (SELECT v.scope FROM v) IS NOT NULL
           AND e.topic OPERATOR(pg_catalog.=) p_topic
           AND e.scope OPERATOR(pg_catalog.=) (SELECT v.scope FROM v)
           AND e.watermark OPERATOR(pg_catalog.>) p_after
           AND e.watermark OPERATOR(pg_catalog.<=) (SELECT v.through FROM v)
         ORDER BY e.watermark)
        UNION ALL
        (SELECT ex.watermark, ex.doc_key, ex.doc_version, ex.scope, 'delete', NULL, NULL,
                ex.committed_at
         FROM oasync.scope_exits AS ex
         WHERE (SELECT v.ok FROM v) AND (SELECT v.scope FROM v) IS NOT NULL
           AND ex.topic OPERATOR(pg_catalog.=) p_topic
           AND ex.scope OPERATOR(pg_catalog.=) (SELECT v.scope FROM v)
           -- The watermark range, as a range of the primary key (see above).
           AND (ex.scope, ex.watermark) OPERATOR(pg_catalog.>) ((SELECT v.scope FROM v), p_after)
           AND (ex.scope, ex.watermark) OPERATOR(pg_catalog.<=)
               ((SELECT v.scope FROM v), (SELECT v.through FROM v))
         ORDER BY ex.watermark)
    ) AS x
    ORDER BY x.watermark;
END;

-- snapshot_docs: the contract, and its three branches, as in 0006.
CREATE OR REPLACE FUNCTION oasync.snapshot_docs(p_topic text, p_scope text, p_since bigint,
                                                p_after_key text, p_limit integer)
RETURNS TABLE (doc_key text, scope text, doc_version bigint, deleted boolean, payload json,
               payload_hash bytea, last_watermark bigint)
LANGUAGE sql STABLE
BEGIN ATOMIC
    WITH v AS MATERIALIZED (
        SELECT s.scope,
               CASE WHEN p_since IS NOT NULL AND p_since OPERATOR(pg_catalog.<) f.floor
                    THEN oasync.raise('OA410', pg_catalog.format(
                             'delta resync of topic "%s" since %s is no longer possible: the '
                             'history up to %s was purged', p_topic, p_since, f.floor),
                             pg_catalog.format('reason=retention_floor_breach floor=%s', f.floor))
                    ELSE 0 END AS checked
        FROM (SELECT coalesce(p_scope, oasync.session_scope(CURRENT_USER) COLLATE pg_catalog."default") AS scope) AS s
        LEFT JOIN LATERAL (
            SELECT CASE WHEN s.scope IS NULL THEN t.delta_floor
                        WHEN t.purged_through OPERATOR(pg_catalog.>) t.delta_floor
                        THEN t.purged_through
                        ELSE t.delta_floor END AS floor
            FROM oasync.topics AS t WHERE t.topic OPERATOR(pg_catalog.=) p_topic) AS f ON true
    )
    SELECT x.doc_key, x.scope, x.doc_version, x.deleted, x.payload, x.payload_hash,
           x.last_watermark
    FROM (
        (SELECT d.doc_key, d.scope, d.doc_version, d.deleted, d.payload, d.payload_hash,
                d.last_watermark
         FROM oasync.docs AS d
         WHERE (SELECT v.checked FROM v) OPERATOR(pg_catalog.=) 0
           AND (SELECT v.scope FROM v) IS NULL
           AND d.topic OPERATOR(pg_catalog.=) p_topic
           AND d.doc_key OPERATOR(pg_catalog.>) p_after_key
           AND d.doc_version OPERATOR(pg_catalog.>) 0
           AND CASE WHEN p_since IS NULL THEN NOT d.deleted
                    ELSE d.last_watermark OPERATOR(pg_catalog.>) p_since END
         ORDER BY d.doc_key)
        UNION ALL
        (SELECT d.doc_key, d.scope, d.doc_version, d.deleted, d.payload, d.payload_hash,
                d.last_watermark
         FROM oasync.docs AS d
         WHERE (SELECT v.checked FROM v) OPERATOR(pg_catalog.=) 0
           AND (SELECT v.scope FROM v) IS NOT NULL
           AND d.topic OPERATOR(pg_catalog.=) p_topic
           AND d.scope OPERATOR(pg_catalog.=) (SELECT v.scope FROM v)
           AND d.doc_key OPERATOR(pg_catalog.>) p_after_key
           AND d.doc_version OPERATOR(pg_catalog.>) 0
           AND CASE WHEN p_since IS NULL THEN NOT d.deleted
                    ELSE d.last_watermark OPERATOR(pg_catalog.>) p_since END
         ORDER BY d.doc_key)
        UNION ALL
        -- A doc's last exit from the scope, unless it is back in it.
        (SELECT DISTINCT ON (ex.doc_key) ex.doc_key, ex.scope, ex.doc_version, true,
                NULL::pg_catalog.json, NULL::pg_catalog.bytea, ex.watermark
         FROM oasync.scope_exits AS ex
         WHERE (SELECT v.checked FROM v) OPERATOR(pg_catalog.=) 0
           AND (SELECT v.scope FROM v) IS NOT NULL AND p_since IS NOT NULL
           AND ex.topic OPERATOR(pg_catalog.=) p_topic
           AND ex.scope OPERATOR(pg_catalog.=) (SELECT v.scope FROM v)
           -- The exits since p_since, as a range of the primary key (see above).
           AND (ex.scope, ex.watermark) OPERATOR(pg_catalog.>) ((SELECT v.scope FROM v), p_since)
           AND ex.doc_key OPERATOR(pg_catalog.>) p_after_key
           AND NOT EXISTS (SELECT 1 FROM oasync.docs AS d
                           WHERE d.topic OPERATOR(pg_catalog.=) p_topic
                             AND d.doc_key OPERATOR(pg_catalog.=) ex.doc_key
                             AND d.scope OPERATOR(pg_catalog.=) ex.scope
                             AND d.doc_version OPERATOR(pg_catalog.>) 0)
         ORDER BY ex.doc_key, ex.watermark DESC)
    ) AS x
    ORDER BY x.doc_key
    LIMIT p_limit;
END;
