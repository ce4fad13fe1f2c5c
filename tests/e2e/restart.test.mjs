// oasync serve just started (a deploy, a restart): a burst of clients that
// rejoin at the head before the hub has looked at their topic. Each test has
// its own database and server.
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";

import { SyncClient } from "./channel-client.mjs";
import { RUNS, createDatabase, eventually, makeKeys, oasync, startServer, token } from "./support.mjs";
import { TENANT, burstWrites, limits, mixedWrites, positionOf, sink, sinkInBackground } from "./writes.mjs";

const keys = makeKeys();
after(() => keys.remove());

const requestQueries = async (server) => {
  const text = await (await fetch(`${server.base}/metrics`)).text();
  return Number(/^oasync_serve_request_queries_total (\d+)$/m.exec(text)[1]);
};

describe("oasync serve right after a start", () => {
  test("50 sockets rejoining a topic at its head cost one database read between them, and each is live at once", async () => {
    const db = createDatabase();
    const clients = [];
    let server;
    try {
      sink(db, mixedWrites(RUNS, 60));
      // No commit comes and the hub's polls are 10 minutes apart: it has not
      // looked at the topic when the joins come.
      server = await startServer(db, keys, { config: limits({ poll_ms: 600000, revocation_poll_ms: 600000 }) });
      const at = positionOf(db, RUNS);
      const before = await requestQueries(server);
      for (let i = 0; i < 50; i++) {
        const client = new SyncClient({ port: server.port, token: () => token(keys) });
        client.join(RUNS, { params: { epoch: at.epoch, watermark: String(at.head) } });
        clients.push(client.connect());
      }
      const states = clients.map((c) => c.topic(RUNS));
      await eventually(() => states.every((t) => t.batches.length >= 1), 30000, "a first batch on every channel");
      // One position read, which the hub took as its first look: the reads
      // at the head were answered from it.
      assert.equal(await requestQueries(server) - before, 1);
      for (const t of states) {
        assert.equal(t.joinReplies.length, 1);
        assert.deepEqual(t.joinErrors, []);
        assert.equal(t.snapshots, 0);
        assert.deepEqual(t.applied, []);
        assert.deepEqual(t.sentParams, [{ epoch: at.epoch, watermark: String(at.head) }]);
        assert.deepEqual(t.position, { epoch: at.epoch, watermark: BigInt(at.head) });
      }
      // And they are live: the next commit reaches every one of them.
      sink(db, [{ key: "after-start", scope: TENANT, payload: { n: 1 } }]);
      await eventually(() => states.every((t) => t.applied.length === 1), 30000, "the commit on every channel");
      for (const t of states) {
        assert.equal(t.applied[0].docKey, "run_summary:after-start");
        assert.equal(t.applied[0].watermark, BigInt(at.head) + 1n);
        assert.deepEqual(t.client.violations, []);
      }
    } finally {
      for (const c of clients) await c.disconnect();
      await server?.stop("SIGKILL");
      db.drop();
    }
  });

  test("50 sockets rejoining while commits stream: each gets exactly the tenant's journal after its position", async () => {
    const db = createDatabase();
    const clients = [];
    let server;
    try {
      sink(db, mixedWrites(RUNS, 60));
      server = await startServer(db, keys);
      const at = positionOf(db, RUNS);
      // Commits stream while the joins come, racing the hub's first looks.
      const writing = (async () => {
        for (let i = 0; i < 10; i++) await sinkInBackground(db, burstWrites(RUNS, 50, i * 50));
      })();
      for (let i = 0; i < 50; i++) {
        const client = new SyncClient({ port: server.port, token: () => token(keys) });
        client.join(RUNS, { params: { epoch: at.epoch, watermark: String(at.head) } });
        clients.push(client.connect());
      }
      await writing;
      const end = positionOf(db, RUNS);
      const states = clients.map((c) => c.topic(RUNS));
      await eventually(() => states.every((t) => t.position?.watermark === BigInt(end.head)), 60000,
        "every channel at the head");
      const tail = oasync(["tail", RUNS, "--after", String(at.head), "--epoch", at.epoch, "--scope", TENANT,
        "--format", "ndjson"], { url: db.url });
      assert.equal(tail.status, 0, tail.stderr);
      const journal = tail.stdout.split("\n").filter(Boolean).map((line) => {
        const e = JSON.parse(line);
        return { docKey: e.doc_key, version: BigInt(e.doc_version), watermark: BigInt(e.watermark) };
      });
      assert.equal(journal.length, 500);
      for (const t of states) {
        assert.deepEqual(t.joinErrors, []);
        assert.equal(t.snapshots, 0);
        assert.deepEqual(t.applied.map(({ docKey, version, watermark }) => ({ docKey, version, watermark })), journal);
        assert.deepEqual(t.client.violations, []);
      }
    } finally {
      for (const c of clients) await c.disconnect();
      await server?.stop("SIGKILL");
      db.drop();
    }
  });
});
