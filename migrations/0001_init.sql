-- 0001_init: the v1 tables of oasync.
--
-- Everything lives in the schema "oasync". oasync.schema_migrations is created
-- by `oasync migrate` itself before this file runs.

-- The topic registry: one row per explicit topic. Written by
-- `oasync topics apply`; the sink refuses writes to topics not listed here.
CREATE TABLE oasync.topics (
    -- Topic name, e.g. 'runtime.run_summaries'.
    topic                 text        PRIMARY KEY
                                      CHECK (octet_length(topic) BETWEEN 1 AND 128),
    -- Every doc_key of the topic starts with this prefix, e.g. 'run_summary:'.
    doc_key_prefix        text        NOT NULL,
    -- 'inline': events carry the payload (replay needs no join).
    -- 'pointer': events carry only the hash; readers fetch the doc.
    payload_mode          text        NOT NULL CHECK (payload_mode IN ('inline', 'pointer')),
    -- Largest canonical JSON payload accepted, in bytes.
    max_payload_bytes     integer     NOT NULL CHECK (max_payload_bytes > 0),
    -- Purge removes events older than this (NULL: keep forever)...
    retention_max_age     interval,
    -- ...but always keeps at least this many of the newest events.
    retention_min_events  bigint      NOT NULL DEFAULT 0 CHECK (retention_min_events >= 0),
    -- Tombstoned docs older than this are removed by purge (NULL: keep).
    tombstone_retention   interval,
    -- Changes whenever the topic's history is rewritten or reset; part of
    -- every client cursor.
    epoch                 uuid        NOT NULL DEFAULT gen_random_uuid(),
    -- The last watermark handed out; 0 before the first event. The sink
    -- advances it under this row's lock, which orders the topic's commits.
    head                  bigint      NOT NULL DEFAULT 0,
    -- The highest watermark purge removed; 0 at first. Cursors below it are
    -- stale. Never decreases except with an epoch reset.
    purged_through        bigint      NOT NULL DEFAULT 0,
    -- Bumped whenever prefix, payload mode or max payload size change, so
    -- that sinks holding a cached copy of the registry notice.
    config_revision       bigint      NOT NULL DEFAULT 1,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    CHECK (purged_through >= 0 AND purged_through <= head)
);

-- The current state of every read-model doc, tombstones included.
CREATE TABLE oasync.docs (
    -- Topic the doc belongs to.
    topic           text        NOT NULL,
    -- Stable key, starting with the topic's doc_key_prefix.
    doc_key         text        NOT NULL,
    -- Tenant key such as 'org:42'; '' when unscoped.
    scope           text        NOT NULL DEFAULT '',
    -- Number of applied changes: 1 on creation, +1 per change or delete.
    doc_version     bigint      NOT NULL,
    -- True for a tombstone: the doc was deleted; payload is NULL.
    deleted         boolean     NOT NULL DEFAULT false,
    -- Canonical JSON (see README, "Canonical JSON"); NULL for tombstones.
    payload         json,
    -- SHA-256 of payload's bytes (32 bytes); NULL for tombstones.
    payload_hash    bytea,
    -- Runtime stream and position this state reflects; used to drop
    -- duplicates when a projector re-sends after a crash.
    source_stream   text        NOT NULL DEFAULT '',
    source_seq      bigint,
    -- Watermark of the doc's latest event.
    last_watermark  bigint      NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, doc_key)
) WITH (fillfactor = 80);
-- No index but the primary key: every sink write updates its doc row, and
-- with no indexed column changing (and room left in the page) those updates
-- are HOT, writing no index entries. Delta resyncs scan a topic's docs.

-- The journal: one row per applied change, dense per topic.
CREATE TABLE oasync.events (
    -- Topic of the event.
    topic         text        NOT NULL,
    -- Position in the topic: 1, 2, 3, ... without gaps; commit order.
    watermark     bigint      NOT NULL,
    -- The doc that changed, and its version after the change.
    doc_key       text        NOT NULL,
    doc_version   bigint      NOT NULL,
    -- The doc's scope at the time of the change.
    scope         text        NOT NULL,
    -- 'upsert' or 'delete'.
    op            text        NOT NULL CHECK (op IN ('upsert', 'delete')),
    -- Canonical JSON for inline topics; NULL for pointer topics and deletes.
    payload       json,
    -- SHA-256 of the canonical payload; NULL for deletes.
    payload_hash  bytea,
    -- Start time of the writing transaction (purge's age rule uses it).
    committed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, watermark)
);

-- Where each projector stands, stored in the same transaction as its writes.
CREATE TABLE oasync.producer_checkpoints (
    -- Stable projector id.
    producer_id  text        PRIMARY KEY,
    -- Fencing epoch: batches with a lower epoch are refused.
    epoch        bigint      NOT NULL,
    -- Position in the runtime log after the last committed batch.
    position     bigint      NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
