-- oasync:no-transaction
-- 0008_scoped_read_indexes: indexes that make a tenant's catch-up cost in
-- proportion to that tenant's events and docs, not the topic's. Built
-- CONCURRENTLY, so a live sink keeps writing meanwhile: this file runs outside
-- a transaction (the marker above). Each statement is idempotent; after a
-- failed build, migrate drops the invalid index and runs the file again.

-- A scope's view of the journal: read_events with a scope reads its events
-- in watermark order (its exits have their own primary key).
CREATE INDEX CONCURRENTLY IF NOT EXISTS events_topic_scope_watermark
    ON oasync.events (topic, scope, watermark);

-- A scope's snapshot: snapshot_docs with a scope pages its docs by key.
CREATE INDEX CONCURRENTLY IF NOT EXISTS docs_topic_scope_key
    ON oasync.docs (topic, scope, doc_key);
