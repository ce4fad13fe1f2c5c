// oasync serve's Phoenix Channels endpoint (sync:v1), read by the official
// phoenix client (npm phoenix, over ws) through channel-client.mjs
// (channel-raw.test.mjs has the raw ws client's tests). Each test has its own
// database and server, on loopback. What the client ends with is compared
// with what oasync itself says: `oasync snapshot --scope org:1` for the docs,
// `oasync tail --scope org:1` for the updates, in order.
import assert from "node:assert/strict";
import { isDeepStrictEqual } from "node:util";
import { after, describe, test } from "node:test";

import { SyncClient } from "./channel-client.mjs";
import { channelScenario } from "./channel-world.mjs";
import { StaleReason } from "./sync-proto.mjs";
import {
  NOTES,
  PREFIX,
  TENANT,
  TOPICS,
  WORKERS,
  burst,
  burstWrites,
  limits,
  mixedWrites,
  positionOf,
  sink,
  sinkInBackground,
} from "./writes.mjs";
import {
  RUNS,
  eventually,
  freePort,
  makeKeys,
  oasync,
  root,
  snapshotOf,
  token,
} from "./support.mjs";

const keys = makeKeys();
after(() => keys.remove());
const scenario = channelScenario(keys);


const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const allTopics = (extra = {}) => token(keys, { scopes: TOPICS, ...extra });

// The tenant's view of a topic's journal after `after`, as
// {docKey, version, op, watermark} (oasync tail --scope).
function journalOf(db, topic, { after = 0n, epoch, scope = TENANT } = {}) {
  const args = ["tail", topic, "--after", String(after), "--format", "ndjson", "--scope", scope];
  if (epoch !== undefined) args.push("--epoch", epoch);
  const r = oasync(args, { url: db.url });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.split("\n").filter(Boolean).map((line) => {
    const e = JSON.parse(line);
    return { docKey: e.doc_key, version: BigInt(e.doc_version), op: e.op, watermark: BigInt(e.watermark) };
  });
}

// The tenant's journal after the head of the client's latest snapshot of
// the topic `t`.
function journalSinceSnapshot(db, t) {
  const at = t.lastSnapshot();
  return journalOf(db, t.topic, { after: at.head, epoch: at.epoch });
}

// Waits until `actual()` deep-equals `expected()`; at the time-out, fails
// with the difference.
async function eventuallyEqual(actual, expected, ms, what) {
  try {
    await eventually(() => isDeepStrictEqual(actual(), expected()), ms, what);
  } catch (e) {
    assert.deepEqual(actual(), expected(), `${what}: ${e.message}`);
    throw e;
  }
}

const converged = (client, db, topic) =>
  eventuallyEqual(() => client.topic(topic).payloads(), () => snapshotOf(db, TENANT, topic), 20000,
    `${topic}: the client's docs to equal oasync snapshot`);

const sameAsJournal = (client, db, topic) =>
  eventuallyEqual(() => client.topic(topic).updatesSinceSnapshot(), () => journalSinceSnapshot(db, client.topic(topic)),
    20000, `${topic}: the updates since the snapshot to equal oasync tail --scope ${TENANT}`);

const snapshotTaken = (client, topics) =>
  eventually(() => topics.every((t) => client.topic(t).snapshotEnds.length >= 1), 20000, "the snapshots");

// Asserts what no test may see: a violation the client noticed, a stale
// notice, or a second snapshot.
function assertClean(client, topics, { snapshots = 1, stale = 0 } = {}) {
  assert.deepEqual(client.violations, []);
  for (const topic of topics) {
    const t = client.topic(topic);
    assert.equal(t.snapshots, snapshots, `${topic}: snapshots`);
    assert.equal(t.staleNotices.length, stale, `${topic}: stale notices`);
  }
}

// Starts a burst (5,000 updates of runs, 500 of notifications) in the
// background and waits for its first updates to reach `runs` (the client's
// runs topic): {writing, the promise of the burst; before, the updates
// applied then}.
async function burstUnderway(db, runs) {
  const writing = Promise.all([
    sinkInBackground(db, burstWrites(RUNS, 5000)),
    sinkInBackground(db, burstWrites(NOTES, 500)),
  ]);
  await eventually(() => runs.applied.length > 0, 20000, "the first updates");
  return { writing, before: runs.applied.length };
}

// After its socket went: each topic converged, its updates since the snapshot
// equal the journal (no gap, no repeat), and it rejoined with the position it
// had persisted when the socket went; no second snapshot, no stale notice.
async function resumedWithoutGap(client, db, topics) {
  for (const topic of topics) {
    await converged(client, db, topic);
    await sameAsJournal(client, db, topic);
    const t = client.topic(topic);
    const rejoins = t.joinReplies.slice(1);
    assert.ok(rejoins.length >= 1, `${topic}: no rejoin`);
    const lost = t.channelErrors[0];
    assert.ok(lost !== undefined, `${topic}: the channel never errored`);
    assert.deepEqual(rejoins[0].params, { epoch: lost.epoch, watermark: String(lost.watermark) });
  }
  assertClean(client, topics);
}

describe("sync:v1 channels with the official phoenix client", () => {
  test("three topics, one tenant: snapshot, then updates equal to oasync tail, and the docs to oasync snapshot", async () => {
    await scenario(async ({ db, server: start, client: connect }) => {
      for (const topic of TOPICS) sink(db, mixedWrites(topic, 40));
      const server = await start({ config: limits({ snapshot_page_docs: 4, page_events: 5 }) });
      const client = connect(server.port, allTopics(), TOPICS);
      await snapshotTaken(client, TOPICS);
      for (const topic of TOPICS) {
        const t = client.topic(topic);
        const at = positionOf(db, topic);
        // The join reply: the topic's position at join (nothing was written since).
        assert.equal(t.joinReplies.length, 1);
        assert.deepEqual(t.joinReplies[0].params, {});
        assert.deepEqual(t.joinReplies[0].response, {
          topic,
          epoch: at.epoch,
          head: String(at.head),
          purged_through: String(at.purged_through),
        });
        const end = t.lastSnapshot();
        assert.equal(end.epoch, at.epoch);
        assert.equal(end.head, BigInt(at.head));
        assert.deepEqual(t.position, { epoch: at.epoch, watermark: BigInt(at.head) });
        assert.deepEqual(t.payloads(), snapshotOf(db, TENANT, topic));
      }
      // Live: creates, updates, deletes, moves out of and into org:1.
      for (let round = 0; round < 3; round++) {
        for (const topic of TOPICS) sink(db, mixedWrites(topic, 30, 100 + 30 * round));
      }
      for (const topic of TOPICS) {
        sink(db, [
          { topic, key: "mover", scope: TENANT, payload: { step: 1 } },
          { topic, key: "mover", scope: TENANT, payload: { step: 2 } },
          { topic, key: "mover", scope: "org:2", payload: { step: 3 } },  // leaves: a delete
          { topic, key: "mover", scope: "org:2", payload: { step: 4 } },  // not seen
          { topic, key: "mover", scope: TENANT, payload: { step: 5 } },   // comes back
          { topic, key: "visitor", scope: "org:2", payload: { step: 1 } },
          { topic, key: "visitor", scope: TENANT, payload: { step: 2 } }, // moves in
          { topic, key: "gone", scope: TENANT, payload: { step: 1 } },
          { topic, key: "gone", delete: true },
        ]);
      }
      for (const topic of TOPICS) {
        await converged(client, db, topic);
        await sameAsJournal(client, db, topic);
        const t = client.topic(topic);
        // Every update belongs to the tenant, deletes of docs that left it too.
        assert.deepEqual([...new Set(t.applied.map((u) => u.scope))], [TENANT]);
        assert.ok(t.applied.some((u) => u.op === "delete"), `${topic}: no delete arrived`);
        const mover = t.updatesSinceSnapshot().filter((u) => u.docKey === `${PREFIX[topic]}mover`);
        assert.deepEqual(mover.map((u) => [u.version, u.op]), [[1n, "upsert"], [2n, "upsert"], [3n, "delete"], [5n, "upsert"]]);
      }
      assert.deepEqual([...client.seenScopes], [TENANT]);
      assertClean(client, TOPICS);
    });
  });

  test("a burst of 10,000 updates to one topic arrives in order, and converges", async () => {
    await scenario(async ({ db, server: start, client: connect }) => {
      const server = await start();
      const client = connect(server.port, token(keys), [RUNS]);
      await snapshotTaken(client, [RUNS]);
      burst(db, RUNS, 10000, { per: 2500 });
      const t = client.topic(RUNS);
      await eventually(() => t.applied.length >= 10000, 120000, "the burst");
      await sameAsJournal(client, db, RUNS);
      await converged(client, db, RUNS);
      assert.equal(t.updatesSinceSnapshot().length, 10000);
      assertClean(client, [RUNS]);
    });
  });

  for (const [how, signal, closed] of [
    ["killed (SIGKILL)", "SIGKILL", undefined],
    ["drained (SIGTERM)", "SIGTERM", { code: 1012, reason: "draining" }],
  ]) {
    test(`a server ${how} mid-stream and started again: the client resumes from its position, no gap, no repeat, no snapshot`, async (ctx) => {
      await scenario(async ({ db, server: start, client: connect }) => {
        const port = await freePort();
        const config = limits({ drain_seconds: 5 });
        sink(db, mixedWrites(RUNS, 40));
        let server = await start({ port, config });
        const client = connect(port, allTopics(), [RUNS, NOTES]);
        await snapshotTaken(client, [RUNS, NOTES]);
        const runs = client.topic(RUNS);
        // The server stops while the sink still commits the burst, and the
        // client still receives it.
        const { writing, before } = await burstUnderway(db, runs);
        await server.stop(signal);
        ctx.diagnostic(`${before} of the 5000 updates had arrived at ${signal}, ${runs.applied.length} at the exit`);
        await writing;
        if (closed !== undefined) {
          // Drained: the server said why before it closed.
          await eventually(() => client.disconnects.length > 0, 20000, "the disconnect notice");
          assert.equal(client.disconnects[0].reason, closed.reason);
          assert.equal(typeof client.disconnects[0].message, "string");
          await eventually(() => client.closes.length > 0, 20000, "the close");
          assert.deepEqual(client.closes[0], closed);
        }
        burst(db, RUNS, 300, { start: 5000 });
        sink(db, mixedWrites(RUNS, 30, 200));
        server = await start({ port, config });
        burst(db, RUNS, 300, { start: 6000 });
        burst(db, NOTES, 100, { start: 500 });
        await resumedWithoutGap(client, db, [RUNS, NOTES]);
      });
    });
  }

  for (const [how, refuseMs] of [
    ["lets it through again at once", 0],
    ["refuses connections for 1.5 s", 1500],
  ]) {
    test(`a TCP proxy cuts the socket mid-stream and ${how}: the client resumes from its position, no gap, no repeat, no snapshot`, async (ctx) => {
      await scenario(async ({ db, server: start, client: connect, proxy }) => {
        sink(db, mixedWrites(RUNS, 40));
        const server = await start();
        const link = await proxy(server.port);
        const client = connect(link.port, allTopics(), [RUNS, NOTES]);
        await snapshotTaken(client, [RUNS, NOTES]);
        const runs = client.topic(RUNS);
        // The relay cuts both sides of the socket while the sink still commits
        // the burst, and the client still receives it.
        const { writing, before } = await burstUnderway(db, runs);
        if (refuseMs === 0) {
          link.cut();
        } else {
          link.down();
          await sleep(refuseMs);
          link.up();
        }
        ctx.diagnostic(`${before} of the 5000 updates had arrived at the cut`);
        await writing;
        const burstHead = BigInt(positionOf(db, RUNS).head);
        burst(db, RUNS, 300, { start: 5000 });
        burst(db, NOTES, 100, { start: 500 });
        await resumedWithoutGap(client, db, [RUNS, NOTES]);
        // (Usually mid-burst; on a slow machine the burst may all have come first.)
        ctx.diagnostic(`cut at ${runs.channelErrors[0].watermark}, the burst's head ${burstHead}`);
        // The relay did cut the socket, and the client came back through it
        // (after failed attempts, when it refused them).
        const { accepted, refused, cut } = link.counts;
        ctx.diagnostic(`the relay accepted ${accepted} connections, refused ${refused}, cut ${cut}`);
        assert.ok(cut > 0, "the relay cut no connection");
        assert.ok(accepted >= 2, `the relay accepted ${accepted} connections`);
        if (refuseMs > 0) assert.ok(refused >= 2, `the relay refused ${refused} connections`);
        // The server let the cut socket go: only the client's new one is open.
        const metrics = async () => (await fetch(`${server.base}/metrics`)).text();
        await eventually(async () => /oasync_serve_sockets 1\b/.test(await metrics()), 20000,
          "the server to release the cut socket");
      });
    });
  }

  test("a purge below the joined position: one stale notice, one fresh snapshot, convergence, no loop", async () => {
    await scenario(async ({ db, server: start, client: connect }) => {
      sink(db, mixedWrites(RUNS, 40));
      const server = await start();
      const client = connect(server.port, token(keys), [RUNS]);
      const t = client.topic(RUNS);
      await snapshotTaken(client, [RUNS]);
      sink(db, mixedWrites(RUNS, 30, 100));
      await converged(client, db, RUNS);
      await client.disconnect();
      const held = t.position;
      sink(db, mixedWrites(RUNS, 30, 200));
      const purge = oasync(["purge", "--topic", RUNS, "--older-than", "0s", "--keep-last", "0"], { url: db.url });
      assert.equal(purge.status, 0, purge.stderr);
      const purged = positionOf(db, RUNS);
      assert.ok(BigInt(purged.purged_through) > held.watermark, `purged through ${purged.purged_through}, held ${held.watermark}`);
      sink(db, mixedWrites(RUNS, 20, 300));
      client.connect();
      await eventually(() => t.staleNotices.length >= 1 && t.snapshotEnds.length >= 2, 20000, "the stale notice and the snapshot");
      // The rejoin presented the held position, and was told why it is stale.
      assert.deepEqual(t.joinReplies[1].params, { epoch: held.epoch, watermark: String(held.watermark) });
      const stale = t.staleNotices[0];
      assert.equal(stale.topic, RUNS);
      assert.equal(stale.reason, StaleReason.RETENTION_FLOOR_BREACH);
      assert.equal(stale.floor, BigInt(purged.purged_through));
      assert.ok(stale.head >= stale.floor);
      assert.equal(stale.epoch, held.epoch);
      assert.equal(stale.cursorWatermark, held.watermark);
      assert.equal(stale.cursorEpoch, held.epoch);
      // The notice, then at once (same batch) the fresh snapshot.
      const withNotice = t.batches.find((kinds) => kinds.includes("error"));
      assert.equal(withNotice[withNotice.indexOf("error") + 1], "snapshotHeader");
      await converged(client, db, RUNS);
      // No loop: nothing more for a while, and then updates, not snapshots.
      await sleep(3000);
      sink(db, mixedWrites(RUNS, 20, 400));
      await converged(client, db, RUNS);
      await sameAsJournal(client, db, RUNS);
      assertClean(client, [RUNS], { snapshots: 2, stale: 1 });
    });
  });

  test("an epoch reset: a live channel and a rejoin with the old epoch's position each get one notice quoting it, then a fresh snapshot", async () => {
    await scenario(async ({ db, server: start, client: connect }) => {
      sink(db, mixedWrites(RUNS, 40));
      const server = await start();
      const live = connect(server.port, token(keys), [RUNS]);
      const t = live.topic(RUNS);
      await snapshotTaken(live, [RUNS]);
      sink(db, mixedWrites(RUNS, 30, 100));
      await converged(live, db, RUNS);
      const old = t.position;
      const reset = oasync(["topics", "reset-epoch", RUNS], { url: db.url });
      assert.equal(reset.status, 0, reset.stderr);
      const now = positionOf(db, RUNS);
      assert.notEqual(now.epoch, old.epoch);
      sink(db, mixedWrites(RUNS, 20, 200));
      // The live channel: its next read is stale (epoch_changed), then the snapshot.
      await eventually(() => t.staleNotices.length >= 1 && t.snapshotEnds.length >= 2, 20000, "the live channel's notice and snapshot");
      const notice = t.staleNotices[0];
      assert.equal(notice.reason, StaleReason.EPOCH_CHANGED);
      assert.equal(notice.epoch, now.epoch);
      assert.equal(notice.cursorEpoch, old.epoch);
      assert.equal(t.lastSnapshot().epoch, now.epoch);
      await converged(live, db, RUNS);
      // A client that was away rejoins with the old epoch's position: the join
      // succeeds, and the notice quotes the epoch it presented.
      const away = new SyncClient({ port: server.port, token: token(keys) });
      const a = away.join(RUNS, { params: { epoch: old.epoch, watermark: String(old.watermark) } });
      away.connect();
      try {
        await eventually(() => a.staleNotices.length >= 1 && a.snapshotEnds.length >= 1, 20000, "the rejoin's notice and snapshot");
        assert.equal(a.joinReplies.length, 1);
        assert.equal(a.joinErrors.length, 0);
        assert.equal(a.staleNotices[0].reason, StaleReason.EPOCH_CHANGED);
        assert.equal(a.staleNotices[0].cursorEpoch, old.epoch);
        assert.equal(a.staleNotices[0].cursorWatermark, old.watermark);
        assert.equal(a.staleNotices[0].epoch, now.epoch);
        await converged(away, db, RUNS);
      } finally {
        await away.disconnect();
      }
      // No loop: updates of the new epoch follow, and no other snapshot.
      sink(db, mixedWrites(RUNS, 20, 300));
      await converged(live, db, RUNS);
      await sameAsJournal(live, db, RUNS);
      assertClean(live, [RUNS], { snapshots: 2, stale: 1 });
    });
  });

  test("heartbeats on an idle channel carry the delivered position: a purge behind another tenant's writes is no stale", async () => {
    await scenario(async ({ db, server: start, client: connect }) => {
      sink(db, mixedWrites(RUNS, 40));
      const server = await start({ config: limits({ channel_heartbeat_seconds: 1 }) });
      const client = connect(server.port, token(keys), [RUNS]);
      const t = client.topic(RUNS);
      await snapshotTaken(client, [RUNS]);
      // Only the other tenant writes: nothing to deliver, yet the position moves.
      const others = [];
      for (let i = 0; i < 50; i++) others.push({ key: `o2-${i}`, scope: "org:2", payload: { i } });
      sink(db, others);
      const head = BigInt(positionOf(db, RUNS).head);
      await eventually(() => t.position?.watermark === head, 20000, "a heartbeat delivering the head");
      assert.equal(t.applied.length, 0);
      assert.ok(t.positions.some((p) => p.source === "heartbeat"));
      const last = t.heartbeats.at(-1);
      const here = last.watermarks.find((w) => w.topic === RUNS);
      assert.equal(here.head, head);
      assert.equal(here.epoch, t.position.epoch);
      // Purged through what it holds: it resumes without a snapshot.
      await client.disconnect();
      const purge = oasync(["purge", "--topic", RUNS, "--older-than", "0s", "--keep-last", "0"], { url: db.url });
      assert.equal(purge.status, 0, purge.stderr);
      assert.equal(BigInt(positionOf(db, RUNS).purged_through), head);
      sink(db, mixedWrites(RUNS, 20, 100));
      client.connect();
      await converged(client, db, RUNS);
      // (The journal from the snapshot's head is purged: from the held head on.)
      await eventuallyEqual(() => t.updatesSinceSnapshot(), () => journalOf(db, RUNS, { after: head, epoch: t.position.epoch }),
        20000, "the updates after the purge to equal oasync tail");
      assert.deepEqual(t.joinReplies[1].params, { epoch: t.lastSnapshot().epoch, watermark: String(head) });
      assert.ok(![...client.seenKeys].some((k) => k.includes("o2-")));
      assertClean(client, [RUNS]);
    });
  });

  test("a rejoin whose catch-up holds nothing of the tenant's is told at once that it is live: an empty batch at the head", async () => {
    await scenario(async ({ db, server: start, client: connect }) => {
      sink(db, mixedWrites(RUNS, 40));
      // (Heartbeats every 30 s, the default: none comes within this test's waits.)
      const server = await start();
      const client = connect(server.port, token(keys), [RUNS]);
      const t = client.topic(RUNS);
      await snapshotTaken(client, [RUNS]);
      await client.disconnect();
      const others = [];
      for (let i = 0; i < 50; i++) others.push({ key: `o2-${i}`, scope: "org:2", payload: { i } });
      sink(db, others);
      const head = BigInt(positionOf(db, RUNS).head);
      const batches = t.batches.length;
      client.connect();
      await eventually(() => t.position?.watermark === head, 10000, "the rejoin's position at the head");
      assert.deepEqual(t.batches.slice(batches), [[]]);
      assert.equal(t.positions.at(-1).source, "batch");
      assert.equal(t.heartbeats.length, 0);
      assert.equal(t.applied.length, 0);
      assertClean(client, [RUNS]);
    });
  });

  test("encoding=json: the same messages as JSON frames", async () => {
    await scenario(async ({ db, server: start, client: connect }) => {
      sink(db, mixedWrites(RUNS, 40));
      const server = await start();
      const client = connect(server.port, token(keys), [RUNS], { encoding: "json" });
      await snapshotTaken(client, [RUNS]);
      sink(db, mixedWrites(RUNS, 40, 100));
      await converged(client, db, RUNS);
      await sameAsJournal(client, db, RUNS);
      assertClean(client, [RUNS]);
    });
  });
});

describe("sync:v1 channels: tenants, topics and tokens", () => {
  test("a forbidden topic's join fails while the other channels go on; another tenant's docs never arrive", async () => {
    await scenario(async ({ db, server: start, client: connect }) => {
      const server = await start();
      const client = connect(server.port, token(keys, { scopes: [RUNS, NOTES] }), [RUNS, NOTES, WORKERS]);
      await snapshotTaken(client, [RUNS, NOTES]);
      const workers = client.topic(WORKERS);
      await eventually(() => workers.left, 20000, "the forbidden channel to be left");
      assert.equal(workers.joinErrors.length, 1);
      assert.equal(workers.joinErrors[0].response.reason, "forbidden_topic");
      assert.equal(typeof workers.joinErrors[0].response.message, "string");
      assert.equal(workers.joinReplies.length, 0);
      for (const topic of TOPICS) {
        const writes = [];
        for (let i = 0; i < 30; i++) {
          writes.push({ topic, key: `mine-${i % 10}`, scope: TENANT, payload: { i } });
          writes.push({ topic, key: `o2-${i % 10}`, scope: "org:2", payload: { i } });
        }
        writes.push({ topic, key: "o2-0", delete: true });
        sink(db, writes);
      }
      for (const topic of [RUNS, NOTES]) {
        await converged(client, db, topic);
        await sameAsJournal(client, db, topic);
      }
      await sleep(1000);
      assert.deepEqual([...client.seenScopes], [TENANT]);
      assert.deepEqual([...client.seenKeys].filter((k) => k.includes("o2-")), []);
      assert.equal(workers.joinErrors.length, 1);
      assert.equal(workers.batches.length, 0);
      assertClean(client, [RUNS, NOTES]);
    });
  });

  test("join errors name their reason: unknown_topic, unmatched_topic, bad_params, too_many_channels", async () => {
    await scenario(async ({ db, server: start, client: connect }) => {
      const server = await start();
      const tok = token(keys, { scopes: [...TOPICS, "runtime.nope"] });
      const client = connect(server.port, tok, []);
      const epoch = positionOf(db, RUNS).epoch;
      const cases = [
        [client.join("runtime.nope"), "unknown_topic"],
        [client.join("rooms:lobby", { channelTopic: "rooms:lobby" }), "unmatched_topic"],
        [client.join(RUNS, { params: { epoch, watermark: "abc" } }), "bad_params"],
        [client.join(WORKERS, { params: { epoch, watermark: "-1" } }), "bad_params"],
        [client.join(NOTES, { params: { watermark: "5" } }), "bad_params"],
      ];
      await eventually(() => cases.every(([t]) => t.left), 20000, "the failed channels to be left");
      for (const [t, reason] of cases) {
        assert.deepEqual(t.joinErrors.map((e) => e.response.reason), [reason], t.topic);
        assert.equal(typeof t.joinErrors[0].response.message, "string");
        assert.equal(t.joinReplies.length, 0);
      }
      // Two channels per socket: the third join is refused.
      const small = await start({ config: limits({ max_channels_per_socket: 2 }) });
      const other = connect(small.port, tok, [RUNS, NOTES]);
      await snapshotTaken(other, [RUNS, NOTES]);
      const third = other.join(WORKERS);
      await eventually(() => third.joinErrors.length >= 1, 20000, "the third join's error");
      assert.equal(third.joinErrors[0].response.reason, "too_many_channels");
      third.channel.leave();
      assert.equal(third.joinReplies.length, 0);
      assert.deepEqual(client.violations, []);
      assert.deepEqual(other.violations, []);
    });
  });

  test("one busy topic does not starve another on the same socket", async () => {
    await scenario(async ({ db, server: start, client: connect }) => {
      // A snapshot of about 10 MB in pages of 8 KiB on one topic...
      const pad = "q".repeat(1000);
      for (let from = 0; from < 10000; from += 2500) {
        const writes = [];
        for (let i = from; i < from + 2500; i++) writes.push({ topic: RUNS, key: `big${i}`, scope: TENANT, payload: { i, pad } });
        sink(db, writes);
      }
      const server = await start({ config: limits({ page_bytes: 8192, socket_queue_bytes: 32768 }) });
      const client = connect(server.port, allTopics(), [RUNS, NOTES]);
      // ...while the other's snapshot ends, and a write to it arrives.
      await snapshotTaken(client, [NOTES]);
      sink(db, [{ topic: NOTES, key: "n1", scope: TENANT, payload: { quick: true } }]);
      await eventually(() => client.topic(NOTES).docs.has("notification:n1"), 20000, "the other topic's write");
      assert.equal(client.topic(RUNS).snapshotEnds.length, 0, "the busy topic's snapshot was still going");
      await snapshotTaken(client, [RUNS]);
      assert.equal(client.topic(RUNS).docs.size, 10000);
      assert.deepEqual(client.violations, []);
    });
  });

  test("a topic removed while joined: the channel errors, its rejoin is refused unknown_topic, the others go on", async () => {
    await scenario(async ({ db, server: start, client: connect }) => {
      const { readFileSync, writeFileSync } = await import("node:fs");
      const { join } = await import("node:path");
      const catalog = readFileSync(join(root, "schema", "topics.yaml"), "utf8");
      const withScratch = join(keys.dir, "topics-with-scratch.yaml");
      writeFileSync(withScratch, catalog + `
  - name: runtime.scratch
    doc_key_prefix: "scratch:"
    payload_mode: inline
    max_payload_bytes: 1024
`);
      assert.equal(oasync(["topics", "apply", withScratch], { url: db.url }).status, 0);
      const server = await start();
      const client = connect(server.port, token(keys, { scopes: [...TOPICS, "runtime.scratch"] }), [RUNS, "runtime.scratch"]);
      await snapshotTaken(client, [RUNS, "runtime.scratch"]);
      const removed = oasync(["topics", "apply", join(root, "schema", "topics.yaml")], { url: db.url });
      assert.equal(removed.status, 0, removed.stderr);
      const scratch = client.topic("runtime.scratch");
      await eventually(() => scratch.left, 20000, "the removed topic's channel to be left");
      assert.deepEqual(scratch.joinErrors.map((e) => e.response.reason), ["unknown_topic"]);
      sink(db, [{ key: "after", scope: TENANT, payload: { still: "served" } }]);
      await eventually(() => client.topic(RUNS).docs.has("run_summary:after"), 20000, "the other channel's write");
      assert.deepEqual(client.violations, []);
    });
  });

  test("a revoked session: disconnect unauthorized, close 1008, and its token refused with 401", async () => {
    await scenario(async ({ db, server: start, client: connect }) => {
      const server = await start({ config: limits({ revocation_poll_ms: 200 }) });
      const tok = token(keys, { session_id: "to-revoke" });
      const client = connect(server.port, tok, [RUNS]);
      await snapshotTaken(client, [RUNS]);
      const revoke = oasync(["sessions", "revoke", "to-revoke", "--reason", "test"], { url: db.url });
      assert.equal(revoke.status, 0, revoke.stderr);
      await eventually(() => client.disconnects.length > 0 && client.closes.length > 0, 20000, "the disconnect");
      assert.equal(client.disconnects[0].reason, "unauthorized");
      assert.deepEqual(client.closes[0], { code: 1008, reason: "unauthorized" });
      // phoenix tries again: refused before the upgrade.
      await eventually(() => client.errors.some((e) => /401/.test(e)), 20000, "the 401 on reconnect");
      assert.equal(client.opens, 1);
      assert.equal(client.topic(RUNS).joinReplies.length, 1);
      // A new socket with the same token: never opens, never joins.
      const again = connect(server.port, tok, [RUNS]);
      await eventually(() => again.errors.some((e) => /401/.test(e)), 20000, "the 401");
      await sleep(1000);
      assert.equal(again.opens, 0);
      assert.equal(again.topic(RUNS).joinReplies.length, 0);
    });
  });

  test("a token's socket ends at its expiry: disconnect unauthorized, close 1008", async () => {
    await scenario(async ({ server: start, client: connect }) => {
      const server = await start();
      // Valid for 5 more seconds: exp is past, but within the 30-second leeway.
      const tok = token(keys, { exp: Math.floor(Date.now() / 1000) - 25, session_id: "short" });
      const client = connect(server.port, tok, [RUNS]);
      await snapshotTaken(client, [RUNS]);
      await eventually(() => client.disconnects.length > 0 && client.closes.length > 0, 20000, "the disconnect");
      assert.equal(client.disconnects[0].reason, "unauthorized");
      assert.deepEqual(client.closes[0], { code: 1008, reason: "unauthorized" });
      await eventually(() => client.errors.some((e) => /401/.test(e)), 20000, "the 401 on reconnect");
    });
  });
});

// A raw WebSocket handshake: resolves to {ws, protocol, headers} once open,
// {status} for an HTTP answer instead of the upgrade, or {error}.
