// The client over the real phoenix package and `ws`, against a mock socket
// server: the seam the fake socket stands in for everywhere else.
import assert from "node:assert/strict";
import { test } from "node:test";

import { WebSocket } from "ws";

import { createSyncClient } from "../src/client.js";
import type { SyncError } from "../src/errors.js";
import { memoryStorage } from "../src/storage.js";
import {
  batchBytes,
  doc,
  EPOCH,
  joinReply,
  snapshotEnd,
  snapshotHeader,
  TOPIC,
  upsert,
} from "./support/messages.js";
import { eventually, MockServer } from "./support/mock-server.js";
import { ALICE, ALICE_2, ALICE_3 } from "./support/world.js";

const CHANNEL = `sync:v1:${TOPIC}`;

function client(server: MockServer, tokens: string[], errors: SyncError[]) {
  let calls = 0;
  return createSyncClient({
    url: server.url,
    token: async () => tokens[Math.min(calls++, tokens.length - 1)] ?? "",
    storage: memoryStorage(),
    transport: WebSocket,
    reconnectDelayMs: () => 10,
    onError: (e) => errors.push(e),
  });
}

test("phoenix: a snapshot and an update; the unauthorized notice brings a fresh token and a rejoin from the position", async () => {
  const server = await MockServer.start();
  const errors: SyncError[] = [];
  const c = client(server, [ALICE, ALICE_2], errors);
  try {
    c.subscribe(TOPIC);
    await eventually(() => server.joins().length === 1, "the join");
    const first = server.connections[0]!;
    const join = server.joins()[0]!.frame;
    assert.equal(first.token, ALICE, "the token came in the subprotocol");
    assert.deepEqual(join.slice(2), [CHANNEL, "phx_join", {}]);
    server.reply(first, join, "ok", joinReply(10n));
    server.push(
      first,
      join,
      "batch",
      batchBytes([snapshotHeader(10n), doc("run:a", 1n, { n: 1 }), snapshotEnd(10n)], {
        watermark: 10n,
      }),
    );
    server.push(
      first,
      join,
      "batch",
      batchBytes([upsert("run:a", 2n, 11n, { n: 2 })], { watermark: 11n }),
    );
    await eventually(() => c.getDoc("run:a")?.version === 2n, "the update");
    assert.equal(c.getStatus(TOPIC), "live");
    assert.deepEqual(c.getDoc("run:a")?.value, { n: 2 });

    server.disconnect(first, 1008, "unauthorized");
    await eventually(() => server.joins().length === 2, "the rejoin");
    const rejoin = server.joins()[1]!;
    assert.equal(rejoin.token, ALICE_2);
    assert.deepEqual(rejoin.frame.slice(2), [
      CHANNEL,
      "phx_join",
      { epoch: EPOCH, watermark: "11" },
    ]);
    assert.equal(server.connections.length, 2);
    assert.deepEqual(c.getDoc("run:a")?.value, { n: 2 }, "the docs stay through the reconnect");
    assert.deepEqual(errors, []);
  } finally {
    await c.close();
    await server.close();
  }
});

test("phoenix: refused handshakes (401) end in unauthorized after one fresh token, with no loop", async () => {
  const server = await MockServer.start();
  server.refused.add(ALICE);
  server.refused.add(ALICE_2);
  const errors: SyncError[] = [];
  const c = client(server, [ALICE, ALICE_2, ALICE_3], errors);
  try {
    c.subscribe(TOPIC);
    await eventually(() => c.getStatus(TOPIC) === "unauthorized", "unauthorized");
    assert.deepEqual(server.heads, [`Bearer ${ALICE}`, `Bearer ${ALICE_2}`]);
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(server.connections.length, 0);
    assert.equal(server.heads.length, 2, "nothing more was tried");
    assert.deepEqual(
      errors.map((e) => e.code),
      ["unauthorized"],
    );
  } finally {
    await c.close();
    await server.close();
  }
});
