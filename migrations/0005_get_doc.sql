-- 0005_get_doc: the current doc with a key, for `oasync doc get` and for a
-- delivery service's initial fetch (the design note's GET /sync/v1/doc/:key),
-- so that both read a doc the same way.

-- The doc with key p_doc_key in each registered topic that has one (or only
-- in p_topic when it is not NULL), tombstones included, in topic order: at
-- most one row per topic. Each row carries its topic's epoch, so a client can
-- follow the doc from last_watermark with read_events. A key is unique within
-- a topic; the same key in two topics gives two rows, and the caller decides.
-- One primary-key lookup per registered topic.
CREATE FUNCTION oasync.get_doc(p_doc_key text, p_topic text DEFAULT NULL)
RETURNS TABLE (topic text, doc_key text, scope text, doc_version bigint, deleted boolean,
               payload json, payload_hash bytea, last_watermark bigint, epoch uuid)
LANGUAGE sql STABLE
AS $$
    SELECT d.topic, d.doc_key, d.scope, d.doc_version, d.deleted, d.payload, d.payload_hash,
           d.last_watermark, t.epoch
    FROM oasync.topics AS t
    JOIN oasync.docs AS d ON d.topic = t.topic AND d.doc_key = p_doc_key
    WHERE (p_topic IS NULL OR t.topic = p_topic) AND d.doc_version > 0
    ORDER BY t.topic COLLATE "C"
$$;
