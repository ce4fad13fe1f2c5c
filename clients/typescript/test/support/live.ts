// What the client tests share: the channel of TOPIC, the docs a client
// shows, its persisted copy, and a topic brought live.
import assert from "node:assert/strict";

import { batchBytes, doc, joinReply, snapshotEnd, snapshotHeader, TOPIC } from "./messages.js";
import { settle, type World } from "./world.js";

export const CHANNEL = `sync:v1:${TOPIC}`;

// The persisted copy of `topic`, as stored.
export function stored(
  w: World,
  topic = TOPIC,
): { position: unknown; docs: { key: string; [field: string]: unknown }[] } {
  const keys = w.storage.keys().filter((k) => k.endsWith(`/topic/${encodeURIComponent(topic)}`));
  assert.equal(keys.length, 1, `one key holds topic ${topic}: ${keys.join(", ")}`);
  return JSON.parse(w.storage.getItem(keys[0] ?? "") ?? "null");
}

export const values = (w: World, topic = TOPIC) =>
  Object.fromEntries(w.client.getDocs(topic).map((d) => [d.key, d.value]));

// Subscribes TOPIC, opens the socket, answers the join at `head`, and (when
// the join carried no position) pushes a snapshot of `docs`.
export async function live(
  w: World,
  head: bigint,
  docs: Record<string, unknown> = {},
): Promise<void> {
  w.client.subscribe(TOPIC);
  await settle();
  w.socket().open();
  const channel = w.socket().channelOf(CHANNEL);
  channel.replyOk(joinReply(head));
  if (Object.keys(channel.lastJoin ?? {}).length === 0) {
    channel.push(
      "batch",
      batchBytes(
        [
          snapshotHeader(head),
          ...Object.entries(docs).map(([k, v]) => doc(k, 1n, v)),
          snapshotEnd(head),
        ],
        {
          watermark: head,
        },
      ),
    );
  }
}
