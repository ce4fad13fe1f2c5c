// Positions in a topic: what a channel joins with, and what its join reply
// says. Watermarks are uint64: bigint here, decimal strings on the wire, never
// a Number.
import { SyncError } from "./errors.js";

/** Where a topic's view has been delivered through: everything up to
 *  `watermark` of epoch `epoch` has been applied. A join with it resumes
 *  right after, without a snapshot. */
export interface Position {
  readonly epoch: string;
  readonly watermark: bigint;
}

/** The join params of sync:v1: `{}` asks for a snapshot, a position resumes. */
export type JoinParams = Record<string, never> | { epoch: string; watermark: string };

/** The `ok` reply to a join: where the topic stood when it was joined. */
export interface JoinReply {
  readonly topic: string;
  readonly epoch: string;
  readonly head: bigint;
  readonly purgedThrough: bigint;
}

const UINT64_MAX = (1n << 64n) - 1n;

export function joinParams(position: Position | undefined): JoinParams {
  if (position === undefined) return {};
  return { epoch: position.epoch, watermark: position.watermark.toString() };
}

/** A uint64 from its decimal text; throws a `protocol` SyncError naming
 *  `what` for anything else. */
export function parseUint64(text: unknown, what: string): bigint {
  if (typeof text !== "string" || !/^(0|[1-9][0-9]{0,19})$/.test(text)) {
    throw new SyncError("protocol", `${what} ${JSON.stringify(text)} is not a uint64 in decimal`);
  }
  const value = BigInt(text);
  if (value > UINT64_MAX) {
    throw new SyncError("protocol", `${what} ${text} is beyond uint64`);
  }
  return value;
}

/** The join reply `{topic, epoch, head, purged_through}` (numbers as decimal
 *  strings); throws a `protocol` SyncError when it has another shape. */
export function parseJoinReply(response: unknown): JoinReply {
  if (typeof response !== "object" || response === null) {
    throw new SyncError("protocol", `a join reply ${JSON.stringify(response)} is not an object`);
  }
  const r = response as Record<string, unknown>;
  if (typeof r["topic"] !== "string" || typeof r["epoch"] !== "string") {
    throw new SyncError(
      "protocol",
      `a join reply ${JSON.stringify(response)} lacks topic or epoch`,
    );
  }
  return {
    topic: r["topic"],
    epoch: r["epoch"],
    head: parseUint64(r["head"], "the join reply's head"),
    purgedThrough: parseUint64(r["purged_through"], "the join reply's purged_through"),
  };
}

/** True when `position` is exactly the head the join reply gave, in its
 *  epoch: nothing to catch up. A position beyond the head is not (the server
 *  will call it stale, or the reply's head lags the client's). */
export function atHead(position: Position | undefined, reply: JoinReply): boolean {
  return (
    position !== undefined &&
    position.epoch === reply.epoch &&
    position.watermark === reply.head &&
    reply.purgedThrough <= position.watermark
  );
}

/** True when `position` has reached `reply`'s head, in its epoch. */
export function reached(position: Position, reply: JoinReply): boolean {
  return position.epoch === reply.epoch && position.watermark >= reply.head;
}

/** True when `next` would move `current` back within one epoch. */
export function goesBack(current: Position | undefined, next: Position): boolean {
  return (
    current !== undefined && current.epoch === next.epoch && next.watermark < current.watermark
  );
}
