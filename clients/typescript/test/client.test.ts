// The client over a fake phoenix socket: joins and their params, statuses,
// resyncs as listeners see them, refusals, persistence across a reload,
// identity changes, subscriptions, withheld payloads, and writes that wait
// (connection.test.ts has tokens and reconnects). Each test makes its own
// world.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { memoryStorage } from "../src/storage.js";
import {
  batchBytes,
  doc,
  EPOCH,
  heartbeatBytes,
  joinReply,
  snapshotEnd,
  snapshotHeader,
  stale,
  TOPIC,
  upsert,
} from "./support/messages.js";
import { CHANNEL, live, stored, values } from "./support/live.js";
import { ALICE, ALICE_2, BOB, jwt, settle, world, type World } from "./support/world.js";

// The doc endpoint's answer for doc "k" at version 1 with `value`.
const answerOf = (value: unknown) => ({
  status: 200,
  body: JSON.stringify({
    topic: TOPIC,
    doc_key: "k",
    scope: "org:42",
    doc_version: 1,
    deleted: false,
    last_watermark: 11,
    epoch: EPOCH,
    value,
  }),
});

// A push of doc "k" at version 1, its payload withheld (fetch_required).
function withhold(w: World): void {
  w.socket()
    .channelOf(CHANNEL)
    .push(
      "batch",
      batchBytes([upsert("k", 1n, 11n, null, { fetchRequired: true })], { watermark: 11n }),
    );
}

describe("joining and syncing", () => {
  test("the first join carries no position; the snapshot, then updates, make the docs", async () => {
    const w = world();
    const seen: string[] = [];
    w.client.onChange((topic) => seen.push(`${topic}:${w.client.getStatus(topic)}`));
    w.client.subscribe(TOPIC);
    assert.equal(w.client.getStatus(TOPIC), "connecting");
    await settle();
    const socket = w.socket();
    assert.equal(socket.endPoint, "wss://sync.test/sync/v1/socket");
    assert.deepEqual(socket.tokens, [ALICE]);
    socket.open();
    const channel = socket.channelOf(CHANNEL);
    assert.deepEqual(channel.joins, [{}]);
    assert.equal(w.client.getStatus(TOPIC), "connecting", "no join reply yet");
    channel.replyOk(joinReply(10n));
    assert.equal(w.client.getStatus(TOPIC), "catching_up");
    channel.push(
      "batch",
      batchBytes([snapshotHeader(10n), doc("run:a", 1n, { n: 1 }), snapshotEnd(10n)], {
        watermark: 10n,
      }),
    );
    assert.equal(w.client.getStatus(TOPIC), "live");
    channel.push("batch", batchBytes([upsert("run:b", 1n, 11n, { n: 2 })], { watermark: 11n }));
    assert.deepEqual(values(w), { "run:a": { n: 1 }, "run:b": { n: 2 } });
    assert.equal(w.client.getDoc("run:b")?.version, 1n);
    assert.equal(w.client.getDoc("run:b", TOPIC)?.value !== undefined, true);
    assert.equal(w.client.getDoc("run:b", "other"), undefined);
    assert.deepEqual(w.errors, []);
    assert.equal(seen.at(-1), `${TOPIC}:live`);
  });

  test("a resync: listeners see the old docs until the snapshot ends, then one change with the new set", async () => {
    const w = world();
    await live(w, 10n, { "run:a": "a", "run:b": "b" });
    const channel = w.socket().channelOf(CHANNEL);
    const seen: { status: string | undefined; keys: string[] }[] = [];
    w.client.onChange((topic) =>
      seen.push({
        status: w.client.getStatus(topic),
        keys: w.client.getDocs(topic).map((d) => d.key),
      }),
    );
    // The live channel's next read is stale (its epoch was reset, say).
    channel.push(
      "batch",
      batchBytes([stale(10n, 20n, 40n), snapshotHeader(40n), doc("run:c", 1n, "c")]),
    );
    channel.push("batch", batchBytes([doc("run:d", 1n, "d")]));
    assert.deepEqual(values(w), { "run:a": "a", "run:b": "b" }, "the old docs through the resync");
    channel.push(
      "batch",
      batchBytes([doc("run:e", 1n, "e"), snapshotEnd(40n)], { watermark: 40n }),
    );
    assert.deepEqual(seen, [
      { status: "resyncing", keys: ["run:a", "run:b"] },
      { status: "live", keys: ["run:c", "run:d", "run:e"] },
    ]);
  });

  test("a heartbeat's delivered position is persisted and joined with after a reconnect", async () => {
    const w = world();
    await live(w, 10n, { "run:a": 1 });
    const socket = w.socket();
    const channel = socket.channelOf(CHANNEL);
    channel.push("heartbeat", heartbeatBytes([{ watermark: 25n }]));
    assert.deepEqual(stored(w).position, { epoch: EPOCH, watermark: "25" });
    socket.serverClose(1012, { reason: "draining", message: "the server is shutting down" });
    await settle();
    socket.open();
    assert.deepEqual(channel.lastJoin, { epoch: EPOCH, watermark: "25" });
  });
});

describe("refusals", () => {
  for (const reason of [
    "forbidden_topic",
    "unknown_topic",
    "bad_params",
    "unmatched_topic",
    "too_many_channels",
    "a_reason_of_tomorrow",
  ]) {
    test(`a join refused with ${reason} is left and never joined again`, async () => {
      const w = world();
      w.client.subscribe(TOPIC);
      w.client.subscribe("other.topic");
      await settle();
      const socket = w.socket();
      socket.open();
      const channel = socket.channelOf(CHANNEL);
      channel.replyError({ reason, message: "no" });
      assert.equal(channel.left, true);
      assert.equal(w.client.getStatus(TOPIC), "refused");
      assert.equal(w.client.getStatus("other.topic"), "connecting", "the other channel goes on");
      // Rejoin timers fire, the socket drops and opens again: no join.
      socket.tickRejoinTimers();
      socket.serverClose(1012, { reason: "draining", message: "" });
      await settle();
      socket.open();
      socket.tickRejoinTimers();
      assert.equal(channel.joins.length, 1);
      assert.equal(
        socket.made.filter((c) => c.topic === CHANNEL).length,
        1,
        "no new channel either",
      );
      assert.equal(w.client.getStatus(TOPIC), "refused");
      assert.deepEqual(
        w.errors.map((e) => [e.code, e.reason]),
        [["refused", reason]],
      );
    });
  }

  test("a transient refusal (unavailable) is left to phoenix's rejoin", async () => {
    const w = world();
    w.client.subscribe(TOPIC);
    await settle();
    w.socket().open();
    const channel = w.socket().channelOf(CHANNEL);
    channel.replyError({ reason: "unavailable", message: "the database is unavailable" });
    assert.equal(channel.left, false);
    assert.equal(w.client.getStatus(TOPIC), "connecting");
    w.socket().tickRejoinTimers();
    assert.equal(channel.joins.length, 2);
    channel.replyOk(joinReply(0n));
    assert.equal(w.client.getStatus(TOPIC), "catching_up");
  });

  test("a push that does not decode: the topic is left as a protocol error", async () => {
    const w = world();
    await live(w, 10n, { "run:a": 1 });
    const channel = w.socket().channelOf(CHANNEL);
    channel.push("batch", new Uint8Array([0xff, 0xff, 0xff]).buffer);
    assert.equal(channel.left, true);
    assert.equal(w.client.getStatus(TOPIC), "refused");
    assert.deepEqual(w.client.getDocs(TOPIC), []);
    assert.deepEqual(
      w.errors.map((e) => e.code),
      ["protocol"],
    );
  });

  test("a subscription made after the last one ended joins a refused topic again", async () => {
    const w = world();
    const release = w.client.subscribe(TOPIC);
    await settle();
    w.socket().open();
    w.socket().channelOf(CHANNEL).replyError({ reason: "forbidden_topic", message: "no" });
    release();
    await settle();
    assert.equal(w.client.getStatus(TOPIC), undefined);
    w.client.subscribe(TOPIC);
    await settle();
    assert.equal(w.socket().made.filter((c) => c.topic === CHANNEL).length, 2);
  });
});

describe("persistence", () => {
  test("a reload resumes from the persisted position, without a snapshot, showing the docs at once", async () => {
    const storage = memoryStorage();
    const first = world({ storage });
    await live(first, 10n, { "run:a": "a" });
    first
      .socket()
      .channelOf(CHANNEL)
      .push("batch", batchBytes([upsert("run:b", 1n, 12n, "b")], { watermark: 12n }));
    await first.client.close();

    const second = world({ storage });
    second.client.subscribe(TOPIC);
    assert.deepEqual(values(second), {}, "nothing shown before the token names the identity");
    await settle();
    assert.deepEqual(values(second), { "run:a": "a", "run:b": "b" }, "shown before any join reply");
    second.socket().open();
    const channel = second.socket().channelOf(CHANNEL);
    assert.deepEqual(channel.joins, [{ epoch: EPOCH, watermark: "12" }]);
    channel.replyOk(joinReply(12n));
    assert.equal(second.client.getStatus(TOPIC), "live", "at the head: nothing to catch up");
  });

  test("another identity's token: the storage is cleared, nothing of the first is shown or joined with", async () => {
    const storage = memoryStorage();
    const alice = world({ storage, tokens: [ALICE] });
    await live(alice, 10n, { "run:a": "alice's" });
    await alice.client.close();
    assert.ok(storage.keys().some((k) => k.includes("alice/42/topic/")));

    const bob = world({ storage, tokens: [BOB] });
    bob.client.subscribe(TOPIC);
    await settle();
    assert.deepEqual(values(bob), {});
    assert.deepEqual(
      storage.keys().filter((k) => k.includes("alice")),
      [],
      "alice's copy is gone from the storage",
    );
    bob.socket().open();
    assert.deepEqual(bob.socket().channelOf(CHANNEL).joins, [{}]);
  });

  test("a reconnect with another identity's token clears the cache before the rejoin", async () => {
    const w = world({ tokens: [ALICE, BOB] });
    await live(w, 10n, { "run:a": "alice's" });
    const socket = w.socket();
    socket.serverClose(1008, { reason: "unauthorized", message: "the token expired" });
    await settle();
    assert.deepEqual(values(w), {});
    assert.deepEqual(socket.tokens, [ALICE, BOB]);
    socket.open();
    assert.deepEqual(socket.channelOf(CHANNEL).lastJoin, {});
  });

  test("tokens without an identity (no sub): a reconnect clears the cache, whoever they are", async () => {
    const orgOne = jwt({ org_id: "1", exp: 4102444800 });
    const orgTwo = jwt({ org_id: "2", exp: 4102444800 });
    const w = world({ tokens: [orgOne, orgTwo] });
    await live(w, 10n, { "run:a": "org one's" });
    const socket = w.socket();
    socket.serverClose(1008, { reason: "unauthorized", message: "the token expired" });
    await settle();
    assert.deepEqual(values(w), {}, "nothing of org 1 shown under org 2's token");
    socket.open();
    assert.deepEqual(socket.channelOf(CHANNEL).lastJoin, {}, "a snapshot, not org 1's position");
  });

  test("a new token of the same identity keeps the cache", async () => {
    const w = world({ tokens: [ALICE, ALICE_2] });
    await live(w, 10n, { "run:a": "a" });
    w.socket().serverClose(1008, { reason: "unauthorized", message: "the token expired" });
    await settle();
    assert.deepEqual(values(w), { "run:a": "a" });
    w.socket().open();
    assert.deepEqual(w.socket().channelOf(CHANNEL).lastJoin, { epoch: EPOCH, watermark: "10" });
  });
});

describe("subscriptions", () => {
  test("subscriptions are counted; the topic is left after the last one ends", async () => {
    const w = world();
    await live(w, 10n, { "run:a": 1 });
    const again = w.client.subscribe(TOPIC);
    const channel = w.socket().channelOf(CHANNEL);
    w.client.unsubscribe("not.subscribed");
    again();
    again();
    await settle();
    assert.equal(channel.left, false, "the first subscription still holds it");
    w.client.unsubscribe(TOPIC);
    await settle();
    assert.equal(channel.left, true);
    assert.equal(w.client.getStatus(TOPIC), undefined);
    assert.deepEqual(w.client.getDocs(TOPIC), []);
  });

  test("ended and made again at once (React StrictMode): the channel stays", async () => {
    const w = world();
    const release = w.client.subscribe(TOPIC);
    await settle();
    w.socket().open();
    release();
    w.client.subscribe(TOPIC);
    await settle();
    assert.equal(w.socket().made.length, 1);
    assert.equal(w.socket().channelOf(CHANNEL).left, false);
  });
});

describe("withheld payloads", () => {
  test("fetch_required: the doc is fetched by key with the token, filled in and persisted", async () => {
    const body = {
      topic: TOPIC,
      doc_key: "run:big",
      scope: "org:42",
      doc_version: 2,
      deleted: false,
      last_watermark: 11,
      epoch: EPOCH,
      offset: "x",
      value: { big: true },
    };
    const w = world({ respond: () => ({ status: 200, body: JSON.stringify(body) }) });
    await live(w, 10n, { "run:big": { big: false } });
    const seen: (boolean | undefined)[] = [];
    w.client.onChange(() => seen.push(w.client.getDoc("run:big")?.pending));
    w.socket()
      .channelOf(CHANNEL)
      .push(
        "batch",
        batchBytes([upsert("run:big", 2n, 11n, null, { fetchRequired: true })], { watermark: 11n }),
      );
    assert.deepEqual(
      w.client.getDoc("run:big")?.value,
      { big: false },
      "the last value, while pending",
    );
    await settle();
    assert.deepEqual(
      w.fetches.map((f) => [f.method, f.url, f.authorization]),
      [["GET", `https://sync.test/sync/v1/doc/run%3Abig?topic=${TOPIC}`, `Bearer ${ALICE}`]],
    );
    assert.deepEqual(w.client.getDoc("run:big"), {
      topic: TOPIC,
      key: "run:big",
      version: 2n,
      scope: "org:42",
      value: { big: true },
      pending: false,
    });
    assert.deepEqual(seen, [true, false]);
    assert.deepEqual(
      stored(w).docs.find((d) => d.key === "run:big"),
      { key: "run:big", version: "2", scope: "org:42", pending: false, value: { big: true } },
    );
  });

  test("a failed fetch is reported once, the doc stays pending, and is fetched again at the next join", async () => {
    let answer = { status: 500, body: "oops" };
    const w = world({ respond: () => answer });
    await live(w, 10n);
    const socket = w.socket();
    withhold(w);
    await settle();
    assert.deepEqual(
      w.errors.map((e) => e.code),
      ["fetch"],
    );
    assert.equal(w.client.getDoc("k")?.pending, true);
    answer = answerOf(7);
    socket.serverClose(1012, { reason: "draining", message: "" });
    await settle();
    socket.open();
    socket.channelOf(CHANNEL).replyOk(joinReply(11n));
    await settle();
    assert.equal(w.client.getDoc("k")?.value, 7);
    assert.equal(w.fetches.filter((f) => f.method === "GET").length, 2);
  });
});

describe("a fetch, a resubscription and close", () => {
  test("a fetch under way when its topic is left and subscribed again fills the doc of the new subscription", async () => {
    let release: (() => void) | undefined;
    const w = world({
      respond: () =>
        new Promise((resolve) => {
          release = () => resolve(answerOf("big"));
        }),
    });
    await live(w, 10n);
    const socket = w.socket();
    withhold(w);
    await settle();
    assert.equal(w.fetches.length, 1, "the fetch is under way");
    w.client.unsubscribe(TOPIC);
    w.client.subscribe(TOPIC);
    await settle();
    const channel = socket.channelOf(CHANNEL);
    channel.replyOk(joinReply(11n));
    assert.equal(w.client.getDoc("k")?.pending, true, "the new subscription holds the doc pending");
    release?.();
    await settle();
    assert.deepEqual(w.client.getDoc("k")?.value, "big");
    assert.equal(w.client.getDoc("k")?.pending, false);
    assert.deepEqual(stored(w).docs, [
      { key: "k", version: "1", scope: "org:42", pending: false, value: "big" },
    ]);
    assert.deepEqual(w.errors, []);
  });

  test("changes are written once per delay; close() writes what waits", async () => {
    const w = world({ persistDelayMs: 60_000 });
    await live(w, 10n, { "run:a": 1 });
    w.socket()
      .channelOf(CHANNEL)
      .push("batch", batchBytes([upsert("run:b", 1n, 11n, 2)], { watermark: 11n }));
    assert.deepEqual(w.storage.keys(), ["oasync/v2/identity"], "nothing written yet");
    await w.client.close();
    assert.deepEqual(stored(w), {
      position: { epoch: EPOCH, watermark: "11" },
      docs: [
        { key: "run:a", version: "1", scope: "org:42", pending: false, value: 1 },
        { key: "run:b", version: "1", scope: "org:42", pending: false, value: 2 },
      ],
    });
  });

  test("after close(), nothing is told to the listeners and nothing connects", async () => {
    const w = world();
    await live(w, 10n, { "run:a": 1 });
    const seen: string[] = [];
    w.client.onChange((topic) => seen.push(topic));
    await w.client.close();
    const socket = w.socket();
    assert.equal(socket.state, "closed");
    assert.throws(() => w.client.subscribe(TOPIC), /the client is closed/);
    w.client.reconnect();
    await settle();
    assert.deepEqual(seen, [TOPIC], "the topic dropped at close, once");
    assert.equal(socket.tokens.length, 1);
  });
});

describe("writes that wait", () => {
  test("a write waiting when another identity's token comes is dropped: nothing of the first lands under the second", async () => {
    let user = ALICE;
    const w = world({ tokens: () => Promise.resolve(user), persistDelayMs: 30 });
    await live(w, 10n, { "run:a": "alice's" });
    await new Promise((r) => setTimeout(r, 60));
    w.socket()
      .channelOf(CHANNEL)
      .push("batch", batchBytes([upsert("run:b", 1n, 11n, "alice's too")], { watermark: 11n }));
    // The write of run:b waits; bob signs in on the same client.
    user = BOB;
    w.client.reconnect();
    await settle();
    await new Promise((r) => setTimeout(r, 60));
    assert.deepEqual(
      w.storage.keys().filter((k) => k !== "oasync/v2/identity"),
      [],
      "no copy of alice's docs, under any key",
    );
    assert.deepEqual(values(w), {});
  });

  test("pagehide writes what waits; close() removes the page listeners", async () => {
    const listeners = new Map<string, Set<() => void>>();
    const page = globalThis as unknown as {
      addEventListener?: (type: string, l: () => void) => void;
      removeEventListener?: (type: string, l: () => void) => void;
    };
    page.addEventListener = (type, l) => {
      const set = listeners.get(type) ?? new Set();
      set.add(l);
      listeners.set(type, set);
    };
    page.removeEventListener = (type, l) => listeners.get(type)?.delete(l);
    try {
      const w = world({ persistDelayMs: 60_000 });
      assert.equal(listeners.get("pagehide")?.size, 1);
      assert.equal(listeners.get("visibilitychange")?.size, 1);
      await live(w, 10n, { "run:a": 1 });
      assert.deepEqual(w.storage.keys(), ["oasync/v2/identity"], "nothing written yet");
      for (const l of listeners.get("pagehide") ?? []) l();
      assert.deepEqual(stored(w).position, { epoch: EPOCH, watermark: "10" });
      await w.client.close();
      assert.equal(listeners.get("pagehide")?.size, 0);
      assert.equal(listeners.get("visibilitychange")?.size, 0);
    } finally {
      delete page.addEventListener;
      delete page.removeEventListener;
    }
  });

  test("a fetch that failed after its topic was subscribed again is tried again for the new subscription", async () => {
    let release: ((ok: boolean) => void) | undefined;
    const answers: boolean[] = [];
    const w = world({
      respond: () =>
        new Promise((resolve) => {
          release = (ok) => {
            answers.push(ok);
            resolve(ok ? answerOf("big") : { status: 503, body: "busy" });
          };
        }),
    });
    await live(w, 10n);
    const socket = w.socket();
    withhold(w);
    await settle();
    w.client.unsubscribe(TOPIC);
    w.client.subscribe(TOPIC);
    await settle();
    socket.channelOf(CHANNEL).replyOk(joinReply(11n));
    release?.(false);
    await settle();
    assert.equal(w.fetches.length, 2, "fetched again for the new subscription");
    release?.(true);
    await settle();
    assert.deepEqual(w.client.getDoc("k")?.value, "big");
    assert.deepEqual(answers, [false, true]);
    assert.deepEqual(
      w.errors.map((e) => e.code),
      ["fetch"],
    );
  });
});
