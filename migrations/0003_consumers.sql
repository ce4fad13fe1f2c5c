-- 0003_consumers: named consumer cursors, so that operators can see who reads
-- a topic, how far behind they are, and so that purge does not pull the floor
-- out from under a reader that is still active.

CREATE TABLE oasync.consumers (
    -- Name given to `oasync tail --consumer NAME` (or by a delivery service).
    name        text        NOT NULL CHECK (octet_length(name) BETWEEN 1 AND 128),
    -- The topic the position belongs to.
    topic       text        NOT NULL,
    -- The topic epoch the watermark belongs to.
    epoch       uuid        NOT NULL,
    -- The last watermark the consumer acknowledged (printed and flushed).
    watermark   bigint      NOT NULL CHECK (watermark >= 0),
    -- When the consumer last acknowledged anything; purge only protects
    -- consumers seen recently.
    last_seen   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, topic)
);

-- Records a consumer's acknowledged position (moving forward only within an
-- epoch; a new epoch replaces it).
CREATE FUNCTION oasync.ack_consumer(p_name text, p_topic text, p_epoch uuid, p_watermark bigint)
RETURNS void
LANGUAGE sql
AS $$
    INSERT INTO oasync.consumers AS c (name, topic, epoch, watermark, last_seen)
    VALUES (p_name, p_topic, p_epoch, p_watermark, now())
    ON CONFLICT (name, topic) DO UPDATE
    SET epoch = excluded.epoch,
        watermark = CASE WHEN c.epoch = excluded.epoch
                         THEN greatest(c.watermark, excluded.watermark)
                         ELSE excluded.watermark END,
        last_seen = now()
$$;
