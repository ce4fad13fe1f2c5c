// Builders of what the server pushes: ServerMessages made with
// @bufbuild/protobuf's create() from the generated schemas, and encoded with
// toBinary() into the ArrayBuffer phoenix hands to channel.on.
import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";

import {
  BatchSchema,
  ErrorCode,
  HeartbeatSchema,
  Op,
  ServerMessageSchema,
  StaleReason,
  type Batch,
  type Heartbeat,
  type ServerMessage,
} from "../../src/gen/openagents/sync/v1/sync_pb.js";

export const TOPIC = "runtime.run_summaries";
export const EPOCH = "7d5e1b7e-0000-4000-8000-000000000001";
export const SCOPE = "org:42";

type Init = MessageInitShape<typeof ServerMessageSchema>;

const encoder = new TextEncoder();
const json = (value: unknown) => encoder.encode(JSON.stringify(value));

export function snapshotHeader(head: bigint, epoch = EPOCH, topic = TOPIC): Init {
  return {
    message: {
      case: "snapshotHeader",
      value: { position: { topic, epoch, head, purgedThrough: 0n } },
    },
  };
}

export function doc(
  key: string,
  version: bigint,
  value: unknown,
  options: { topic?: string; scope?: string } = {},
): Init {
  return {
    message: {
      case: "doc",
      value: {
        topic: options.topic ?? TOPIC,
        docKey: key,
        scope: options.scope ?? SCOPE,
        docVersion: version,
        payload: json(value),
        lastWatermark: 1n,
      },
    },
  };
}

export function snapshotEnd(head: bigint, epoch = EPOCH, topic = TOPIC): Init {
  return {
    message: {
      case: "snapshotEnd",
      value: { position: { topic, epoch, head, purgedThrough: 0n } },
    },
  };
}

/** An upsert of `key` to `value` (or, with `fetchRequired`, its payload withheld). */
export function upsert(
  key: string,
  version: bigint,
  watermark: bigint,
  value: unknown,
  options: { epoch?: string; fetchRequired?: boolean; topic?: string } = {},
): Init {
  return {
    message: {
      case: "update",
      value: {
        topic: options.topic ?? TOPIC,
        docKey: key,
        docVersion: version,
        watermark,
        epoch: options.epoch ?? EPOCH,
        scope: SCOPE,
        op: Op.UPSERT,
        payload: options.fetchRequired === true ? new Uint8Array() : json(value),
        fetchRequired: options.fetchRequired === true,
      },
    },
  };
}

/** A tombstone of `key`, or (the same on the wire) its leaving the tenant's scope. */
export function remove(key: string, version: bigint, watermark: bigint, epoch = EPOCH): Init {
  return {
    message: {
      case: "update",
      value: {
        topic: TOPIC,
        docKey: key,
        docVersion: version,
        watermark,
        epoch,
        scope: SCOPE,
        op: Op.DELETE,
      },
    },
  };
}

export function stale(cursorWatermark: bigint, floor: bigint, head: bigint, epoch = EPOCH): Init {
  return {
    message: {
      case: "error",
      value: {
        code: ErrorCode.STALE_CURSOR,
        message: "stale",
        stale: {
          topic: TOPIC,
          reason: StaleReason.RETENTION_FLOOR_BREACH,
          floor,
          head,
          epoch,
          cursorWatermark,
          cursorEpoch: epoch,
        },
      },
    },
  };
}

/** The Batch message itself (for TopicCache.applyBatch). */
export function batch(messages: Init[], position?: { watermark: bigint; epoch?: string }): Batch {
  return create(BatchSchema, {
    messages,
    ...(position === undefined
      ? {}
      : {
          position: { topic: TOPIC, epoch: position.epoch ?? EPOCH, watermark: position.watermark },
        }),
  });
}

export function heartbeat(
  delivered: { watermark: bigint; epoch?: string; topic?: string }[],
): Heartbeat {
  return create(HeartbeatSchema, {
    watermarks: [],
    delivered: delivered.map((d) => ({
      topic: d.topic ?? TOPIC,
      epoch: d.epoch ?? EPOCH,
      watermark: d.watermark,
    })),
  });
}

/** A `batch` push's payload: the bytes of ServerMessage{batch}. */
export function batchBytes(
  messages: Init[],
  position?: { watermark: bigint; epoch?: string },
): ArrayBuffer {
  return bytesOf(
    create(ServerMessageSchema, { message: { case: "batch", value: batch(messages, position) } }),
  );
}

/** A `heartbeat` push's payload: the bytes of ServerMessage{heartbeat}. */
export function heartbeatBytes(delivered: { watermark: bigint; epoch?: string }[]): ArrayBuffer {
  return bytesOf(
    create(ServerMessageSchema, { message: { case: "heartbeat", value: heartbeat(delivered) } }),
  );
}

/** The join reply `{topic, epoch, head, purged_through}`, numbers as decimal strings. */
export function joinReply(head: bigint, purgedThrough = 0n, epoch = EPOCH): Record<string, string> {
  return { topic: TOPIC, epoch, head: head.toString(), purged_through: purgedThrough.toString() };
}

function bytesOf(message: ServerMessage): ArrayBuffer {
  const bytes = toBinary(ServerMessageSchema, message);
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
}
