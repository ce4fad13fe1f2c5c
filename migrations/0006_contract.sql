-- 0006_contract: the promises beside the sink.
--
--   - registry revisions unique across re-creation of a topic;
--   - scope moves: an event records the scope its doc left, and each scope
--     that a doc leaves gets an exit row, so that the scope's readers see the
--     doc go (and nothing of where it went);
--   - timelines: after a failover or a point-in-time restore, a topic forks
--     its epoch at its first write, and cursors of the lost history go stale;
--   - scope bindings: row-level security by the scopes bound to a role, never
--     by what a session claims;
--   - consumer positions only through ack_consumer;
--   - read functions that raise instead of letting a caller skip, and that
--     resolve no name through the caller's search_path: SQL functions have
--     SQL-standard bodies (names bound when they are created, and still
--     inlined), PL/pgSQL functions a fixed search_path.

-- 1. Revisions from one sequence: a topic removed and registered again never
-- reuses a revision, so a sink's cached registry never takes the new topic for
-- the old one.
CREATE SEQUENCE oasync.config_revisions;
SELECT pg_catalog.setval('oasync.config_revisions',
                         (SELECT pg_catalog.max(config_revision) + 1 FROM oasync.topics), false)
WHERE EXISTS (SELECT 1 FROM oasync.topics);
ALTER TABLE oasync.topics
    ALTER COLUMN config_revision SET DEFAULT pg_catalog.nextval('oasync.config_revisions');

-- 2. Scope moves.
ALTER TABLE oasync.events ADD COLUMN previous_scope text;
COMMENT ON COLUMN oasync.events.previous_scope IS
    'The scope the doc had before this event, when it differs from scope (a move); else NULL.';

-- One row per event that took a doc out of a scope: what that scope''s readers
-- receive as the doc''s removal. No payload and no hash: a reader of the scope
-- left learns that the doc went, never its new state. Derived from events
-- (previous_scope), written in the same transaction, purged with them.
CREATE TABLE oasync.scope_exits (
    topic        text   NOT NULL,
    -- The scope the doc left.
    scope        text   NOT NULL,
    -- The event that moved it, and the doc's version after it.
    watermark    bigint NOT NULL,
    doc_key      text   NOT NULL,
    doc_version  bigint NOT NULL,
    -- As the event's (the transaction's start).
    committed_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (topic, scope, watermark)
);
-- Purge deletes exits by watermark range, as it deletes events.
CREATE INDEX scope_exits_topic_watermark ON oasync.scope_exits (topic, watermark);

-- 3. Timelines. The timeline a topic was last written on, and the epochs it
-- had before a fork with the last watermark that is on both histories.
ALTER TABLE oasync.topics ADD COLUMN timeline bigint;
COMMENT ON COLUMN oasync.topics.timeline IS
    'PostgreSQL timeline of the topic''s last write; a write on another timeline forks the epoch.';

CREATE TABLE oasync.epoch_history (
    topic          text        NOT NULL,
    -- An epoch the topic had before a timeline fork.
    epoch          uuid        NOT NULL,
    -- Cursors (epoch, W) with W <= valid_through still resume: those events
    -- exist on the current history too.
    valid_through  bigint      NOT NULL,
    forked_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (topic, epoch)
);

-- The timeline of the current WAL insert position (pg_control_checkpoint()
-- lags until the next checkpoint). Only on a primary.
CREATE FUNCTION oasync.current_timeline() RETURNS bigint
LANGUAGE sql VOLATILE
BEGIN ATOMIC
    SELECT ('x' OPERATOR(pg_catalog.||)
            pg_catalog.substr(pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_insert_lsn()),
                              1, 8))::pg_catalog.bit(32)::pg_catalog.int8;
END;

UPDATE oasync.topics SET timeline = oasync.current_timeline()
WHERE NOT pg_catalog.pg_is_in_recovery();

-- Notes that the named topics (a JSON array of names) are written on the
-- current timeline. A topic last written on another one forks: its epoch is
-- recorded with its head, which is where the two histories part, and it gets
-- a new epoch. Earlier forks are capped at that head too (a restore can go
-- back further than the last fork). The caller holds the topics' row locks
-- (the sink does), so two sinks never fork a topic twice. Returns the topics
-- that forked. SECURITY DEFINER: the writer may not change epochs itself.
CREATE FUNCTION oasync.note_timeline(p_topics json) RETURNS SETOF text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, oasync
AS $$
DECLARE
    now_timeline bigint := oasync.current_timeline();
    t record;
BEGIN
    FOR t IN SELECT tp.topic, tp.epoch, tp.head, tp.timeline
             FROM oasync.topics AS tp
             WHERE tp.topic IN (SELECT json_array_elements_text(p_topics))
               AND tp.timeline IS DISTINCT FROM now_timeline
             ORDER BY tp.topic COLLATE "C"
             FOR NO KEY UPDATE
    LOOP
        IF t.timeline IS NOT NULL THEN
            UPDATE oasync.epoch_history SET valid_through = least(valid_through, t.head)
            WHERE topic = t.topic;
            INSERT INTO oasync.epoch_history (topic, epoch, valid_through)
            VALUES (t.topic, t.epoch, t.head);
            UPDATE oasync.topics SET epoch = gen_random_uuid(), timeline = now_timeline,
                                     updated_at = now()
            WHERE topic = t.topic;
            RETURN NEXT t.topic;
        ELSE
            UPDATE oasync.topics SET timeline = now_timeline WHERE topic = t.topic;
        END IF;
    END LOOP;
END
$$;

-- 4. Scope bindings: which scopes a role may read when scope security is on
-- (`oasync grants --reader ROLE --scope S`). Only the owner reads or writes it.
CREATE TABLE oasync.scope_bindings (
    role   name NOT NULL,
    -- A scope the role may read; '' is the unscoped docs.
    scope  text NOT NULL,
    PRIMARY KEY (role, scope)
);

-- Roles that scope security does not restrict: the sink's writers and the
-- trusted servers (`oasync grants --writer ROLE`, `--server ROLE`), each
-- added, never replaced, so several of each may exist. Owner only.
CREATE TABLE oasync.trusted_roles (
    role  name PRIMARY KEY,
    -- 'writer' or 'server'.
    kind  text NOT NULL CHECK (kind IN ('writer', 'server'))
);

-- Whether p_role (the session user or a role it is a member of) is trusted:
-- the policies let it see every row.
CREATE FUNCTION oasync.session_trusted(p_role name) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, oasync
AS $$
    SELECT EXISTS (
        SELECT 1 FROM oasync.trusted_roles AS t
        WHERE t.role = p_role
          AND (p_role = session_user
               OR EXISTS (SELECT 1 FROM pg_roles AS r
                          WHERE r.rolname = p_role AND pg_has_role(session_user, r.oid, 'MEMBER'))))
$$;

-- The one scope the session reads, for the row-level security policies: the
-- session's `oasync.scope` setting (or '' when `oasync.unscoped` is on) if
-- p_role is bound to it, else NULL (no rows). A session narrows itself to one
-- of its role's scopes and can never widen. p_role must be the session user
-- or a role it is a member of, so nobody learns another role's bindings.
CREATE FUNCTION oasync.session_scope(p_role name) RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, oasync
AS $$
DECLARE
    wanted text := current_setting('oasync.scope', true);
BEGIN
    IF coalesce(current_setting('oasync.unscoped', true), '') IN ('on', 'true', 'yes', '1') THEN
        wanted := '';
    ELSIF coalesce(wanted, '') = '' THEN
        RETURN NULL;
    END IF;
    IF p_role IS DISTINCT FROM session_user
       AND NOT EXISTS (SELECT 1 FROM pg_roles AS r
                       WHERE r.rolname = p_role AND pg_has_role(session_user, r.oid, 'MEMBER')) THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM oasync.scope_bindings AS b WHERE b.role = p_role AND b.scope = wanted)
    THEN
        RETURN wanted;
    END IF;
    RETURN NULL;
END
$$;

-- 5. Consumers. Only this function writes positions: a reader role has no
-- INSERT or UPDATE on the table. It accepts only the topic's current epoch and
-- a watermark no higher than the head, moves forward only, and stamps
-- last_seen with the database's clock.
CREATE OR REPLACE FUNCTION oasync.ack_consumer(p_name text, p_topic text, p_epoch uuid,
                                               p_watermark bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, oasync
AS $$
DECLARE
    t record;
BEGIN
    SELECT tp.epoch, tp.head INTO t FROM oasync.topics AS tp WHERE tp.topic = p_topic;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'topic "%" is not registered', p_topic USING ERRCODE = '22023';
    END IF;
    IF p_epoch IS DISTINCT FROM t.epoch THEN
        RAISE EXCEPTION 'consumer "%": epoch % is not the current epoch % of topic "%"',
            p_name, p_epoch, t.epoch, p_topic USING ERRCODE = '22023';
    END IF;
    IF p_watermark IS NULL OR p_watermark < 0 OR p_watermark > t.head THEN
        RAISE EXCEPTION 'consumer "%": watermark % is outside 0..% (the head of "%")',
            p_name, p_watermark, t.head, p_topic USING ERRCODE = '22023';
    END IF;
    INSERT INTO oasync.consumers AS c (name, topic, epoch, watermark, last_seen)
    VALUES (p_name, p_topic, p_epoch, p_watermark, now())
    ON CONFLICT (name, topic) DO UPDATE
    SET watermark = CASE WHEN c.epoch = excluded.epoch
                         THEN greatest(c.watermark, excluded.watermark)
                         ELSE excluded.watermark END,
        epoch = excluded.epoch,
        last_seen = now();
END
$$;

-- Raises an error with `sqlstate`, `message` and `hint`; typed to fit in
-- expressions, so that one statement can fail with a SQLSTATE of oasync's own
-- (a stale cursor, a changed registry).
CREATE FUNCTION oasync.raise(p_sqlstate text, p_message text, p_hint text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog
AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = p_sqlstate, MESSAGE = p_message, HINT = coalesce(p_hint, '');
END
$$;

-- 6. The read contract.

-- The resume rule (0002), now aware of timeline forks: a cursor of an earlier
-- epoch still resumes at or below the watermark where the histories part.
-- reason is NULL when the cursor resumes.
CREATE OR REPLACE FUNCTION oasync.resume_check(p_topic text, p_epoch uuid, p_watermark bigint,
                                               OUT resumable boolean, OUT reason text,
                                               OUT epoch uuid, OUT head bigint,
                                               OUT purged_through bigint)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT r.reason IS NULL, r.reason, t.epoch, t.head, t.purged_through
    FROM (SELECT 1) AS one
    LEFT JOIN oasync.topics AS t ON t.topic OPERATOR(pg_catalog.=) p_topic
    CROSS JOIN LATERAL (
        SELECT CASE
                   WHEN t.topic IS NULL THEN 'unknown_topic'
                   WHEN p_epoch IS NOT NULL AND p_epoch OPERATOR(pg_catalog.<>) t.epoch
                        AND NOT EXISTS (
                            SELECT 1 FROM oasync.epoch_history AS h
                            WHERE h.topic OPERATOR(pg_catalog.=) t.topic
                              AND h.epoch OPERATOR(pg_catalog.=) p_epoch
                              AND p_watermark OPERATOR(pg_catalog.<=) h.valid_through)
                        THEN 'epoch_changed'
                   WHEN p_watermark OPERATOR(pg_catalog.<) t.purged_through
                        THEN 'retention_floor_breach'
                   WHEN p_watermark OPERATOR(pg_catalog.>) t.head THEN 'cursor_ahead'
               END AS reason
    ) AS r;
END;

-- The same rule for an epoch given as text: text that is not a UUID is a
-- cursor of some other epoch (epoch_changed), not an error.
CREATE FUNCTION oasync.resume_check(p_topic text, p_epoch text, p_watermark bigint,
                                    OUT resumable boolean, OUT reason text, OUT epoch uuid,
                                    OUT head bigint, OUT purged_through bigint)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT r.resumable AND v.valid,
           CASE WHEN v.valid OR r.reason OPERATOR(pg_catalog.=) 'unknown_topic' THEN r.reason
                ELSE 'epoch_changed' END,
           r.epoch, r.head, r.purged_through
    FROM (SELECT p_epoch IS NULL
                 OR p_epoch OPERATOR(pg_catalog.~*)
                    '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' AS valid) AS v
    CROSS JOIN LATERAL oasync.resume_check(
        p_topic, CASE WHEN v.valid THEN p_epoch::pg_catalog.uuid END, p_watermark) AS r;
END;

-- The check read_events makes before any row, in the same snapshot: raises
-- SQLSTATE 'OA410' (HINT reason=... floor=... head=... epoch=...) unless the
-- cursor (p_topic, p_epoch, p_after) may resume, and SQLSTATE 'OA416' (HINT
-- head=...) when p_through is above the head: moving a cursor to p_through
-- would then skip the events that land there later. Returns true.
CREATE FUNCTION oasync.read_check(p_topic text, p_epoch uuid, p_after bigint, p_through bigint)
RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, oasync
AS $$
DECLARE
    c record;
BEGIN
    SELECT * INTO c FROM oasync.resume_check(p_topic, p_epoch, p_after);
    IF NOT c.resumable THEN
        RAISE EXCEPTION 'stale cursor for topic "%": %', p_topic, c.reason
            USING ERRCODE = 'OA410',
                  HINT = format('reason=%s floor=%s head=%s epoch=%s', c.reason,
                                c.purged_through, c.head, c.epoch);
    END IF;
    IF p_through > c.head THEN
        RAISE EXCEPTION 'read of topic "%" through % is above its head %: a cursor moved there would skip the events written later',
            p_topic, p_through, c.head
            USING ERRCODE = 'OA416', HINT = format('head=%s', c.head);
    END IF;
    RETURN true;
END
$$;

-- One page of a topic's journal (the contract of 0002, same columns):
--   - p_scope NULL: every event as written. An upsert's payload is the
--     event's own (inline topics); when the event has none (pointer topics,
--     and events written before a topic became inline), the doc's current
--     payload, with payload_fetched true.
--   - p_scope S: S's view. The events whose scope is S, and the events that
--     took a doc out of S (scope_exits), which read as a 'delete' of the key
--     in scope S, with no payload and no hash. A fetched payload is the doc's
--     only while the doc is still in S; otherwise NULL (a later event of S's
--     view, the move, says the rest).
--   - p_scope NULL from a session bound to a scope (scope security, see
--     session_scope): that scope's view, as if it had been given.
-- p_through NULL reads to the head, as of the same snapshot.
-- Checks the cursor and p_through first, in the same snapshot (read_check).
-- Three branches, of which the one-time filters keep one or two, each an
-- index scan in watermark order (the primary key, or (topic, scope,
-- watermark) and the exits' key), merged: a scope's read costs in proportion
-- to the scope's events, and rows stream as the scans yield them.
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
           AND ex.watermark OPERATOR(pg_catalog.>) p_after
           AND ex.watermark OPERATOR(pg_catalog.<=) (SELECT v.through FROM v)
         ORDER BY ex.watermark)
    ) AS x
    ORDER BY x.watermark;
END;

-- One page of a snapshot (the contract of 0002), with scope moves: for a
-- scope S and p_since W, a doc that left S after W comes back as deleted (in
-- scope S, without payload), so that a delta resync of S drops it. Because
-- those exits live in the journal, a scoped delta also needs W >= the
-- topic's purged_through (else OA410, retention_floor_breach). A session
-- bound to a scope reads its scope's snapshot, as read_events does. Like
-- read_events, its branches are index scans in key order, merged: a scope's
-- snapshot costs in proportion to the scope's docs.
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
           AND ex.watermark OPERATOR(pg_catalog.>) p_since
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

CREATE OR REPLACE FUNCTION oasync.topic_position(p_topic text, OUT epoch uuid, OUT head bigint,
                                                 OUT purged_through bigint)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT t.epoch, t.head, t.purged_through FROM oasync.topics AS t
    WHERE t.topic OPERATOR(pg_catalog.=) p_topic;
END;

CREATE OR REPLACE FUNCTION oasync.get_doc(p_doc_key text, p_topic text DEFAULT NULL)
RETURNS TABLE (topic text, doc_key text, scope text, doc_version bigint, deleted boolean,
               payload json, payload_hash bytea, last_watermark bigint, epoch uuid)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT d.topic, d.doc_key, d.scope, d.doc_version, d.deleted, d.payload, d.payload_hash,
           d.last_watermark, t.epoch
    FROM oasync.topics AS t
    JOIN oasync.docs AS d ON d.topic OPERATOR(pg_catalog.=) t.topic
                         AND d.doc_key OPERATOR(pg_catalog.=) p_doc_key
    WHERE (p_topic IS NULL OR t.topic OPERATOR(pg_catalog.=) p_topic)
      AND d.doc_version OPERATOR(pg_catalog.>) 0
    ORDER BY t.topic COLLATE "C";
END;

-- resumable_mode (0004) is replaced by read_check; nothing calls it now.
DROP FUNCTION oasync.resumable_mode(text, uuid, bigint);

-- 7. Placeholders: the sink's version-0 rows for docs it is about to create,
-- removed again when no write created the doc. SECURITY DEFINER, so that the
-- writer needs no DELETE on docs: it can remove these rows and no others.
-- p_keys is a JSON array of {"t": topic, "k": doc_key}. Returns the count.
CREATE FUNCTION oasync.drop_placeholders(p_keys json) RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, oasync
AS $$
    WITH gone AS (
        DELETE FROM oasync.docs AS d
        USING json_to_recordset(p_keys) AS g(t text, k text)
        WHERE d.topic = g.t AND d.doc_key = g.k AND d.doc_version = 0 AND NOT d.deleted
        RETURNING 1
    )
    SELECT count(*) FROM gone
$$;
