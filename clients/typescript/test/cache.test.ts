// TopicCache: snapshots, updates, version checks, removals, resyncs and
// statuses, each test on a fresh cache.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { TopicCache } from "../src/cache.js";
import { SyncError } from "../src/errors.js";
import { parseJoinReply } from "../src/positions.js";
import {
  batch,
  doc,
  EPOCH,
  heartbeat,
  joinReply,
  remove,
  snapshotEnd,
  snapshotHeader,
  stale,
  TOPIC,
  upsert,
} from "./support/messages.js";

// A cache joined without a position at head `head`, with the snapshot of
// `docs` ({key: [version, value]}) applied.
function snapshotted(head: bigint, docs: Record<string, [bigint, unknown]>): TopicCache {
  const cache = new TopicCache(TOPIC);
  cache.connecting();
  cache.joined(parseJoinReply(joinReply(head)));
  cache.applyBatch(
    batch(
      [
        snapshotHeader(head),
        ...Object.entries(docs).map(([key, [version, value]]) => doc(key, version, value)),
        snapshotEnd(head),
      ],
      { watermark: head },
    ),
  );
  return cache;
}

const values = (cache: TopicCache) =>
  Object.fromEntries(cache.getDocs().map((d) => [d.key, d.value]));

describe("snapshots and updates", () => {
  test("a snapshot, then updates on top of it", () => {
    const cache = new TopicCache(TOPIC);
    assert.equal(cache.status(), "connecting");
    cache.joined(parseJoinReply(joinReply(10n)));
    assert.equal(cache.status(), "catching_up");
    const applied = cache.applyBatch(
      batch(
        [
          snapshotHeader(10n),
          doc("run:a", 1n, { n: 1 }),
          doc("run:b", 3n, { n: 2 }),
          snapshotEnd(10n),
        ],
        {
          watermark: 10n,
        },
      ),
    );
    assert.equal(applied.changed, true);
    assert.equal(applied.persist, true);
    assert.deepEqual(cache.position, { epoch: EPOCH, watermark: 10n });
    assert.equal(cache.status(), "live");
    assert.deepEqual(values(cache), { "run:a": { n: 1 }, "run:b": { n: 2 } });

    const next = cache.applyBatch(
      batch([upsert("run:a", 2n, 11n, { n: 10 }), upsert("run:c", 1n, 12n, { n: 3 })], {
        watermark: 12n,
      }),
    );
    assert.equal(next.changed, true);
    assert.equal(next.persist, true);
    assert.deepEqual(cache.position, { epoch: EPOCH, watermark: 12n });
    assert.deepEqual(values(cache), { "run:a": { n: 10 }, "run:b": { n: 2 }, "run:c": { n: 3 } });
    assert.equal(cache.getDoc("run:a")?.version, 2n);
    assert.deepEqual(cache.position, { epoch: EPOCH, watermark: 12n });
  });

  test("getDocs is sorted by key and the same array until the docs change", () => {
    const cache = snapshotted(5n, { b: [1n, 1], a: [1n, 2], c: [1n, 3] });
    const first = cache.getDocs();
    assert.deepEqual(
      first.map((d) => d.key),
      ["a", "b", "c"],
    );
    assert.equal(cache.getDocs(), first);
    cache.applyHeartbeat(heartbeat([{ watermark: 6n }]));
    assert.equal(cache.getDocs(), first, "a heartbeat changes no doc");
    cache.applyBatch(batch([upsert("a", 2n, 7n, 20)], { watermark: 7n }));
    assert.notEqual(cache.getDocs(), first);
    assert.equal(cache.getDoc("b"), first[1], "an unchanged doc keeps its object");
  });

  test("a batch that ends inside a snapshot keeps the old docs and drops the position", () => {
    const cache = snapshotted(5n, { a: [1n, "old"] });
    cache.connecting();
    cache.joined(parseJoinReply(joinReply(9n)));
    const applied = cache.applyBatch(batch([snapshotHeader(9n), doc("b", 1n, "new")]));
    assert.equal(applied.persist, true, "the position is dropped");
    assert.equal(cache.position, undefined);
    assert.equal(cache.position, undefined);
    assert.deepEqual(values(cache), { a: "old" });
    // Cut off there: the next join asks for a snapshot, the old docs stay.
    cache.connecting();
    assert.equal(cache.position, undefined);
    assert.deepEqual(values(cache), { a: "old" });
  });
});

describe("version checks", () => {
  // The cached doc is "run:a" at version 5, the position 20.
  const cases: { name: string; update: ReturnType<typeof upsert>; applies: boolean }[] = [
    { name: "an older version", update: upsert("run:a", 4n, 21n, "older"), applies: false },
    { name: "the same version", update: upsert("run:a", 5n, 21n, "same"), applies: false },
    { name: "the next version", update: upsert("run:a", 6n, 21n, "next"), applies: true },
    { name: "a version further on", update: upsert("run:a", 9n, 21n, "later"), applies: true },
    {
      name: "a watermark at the position (a repeat)",
      update: upsert("run:a", 6n, 20n, "repeat"),
      applies: false,
    },
    {
      name: "a watermark below the position",
      update: upsert("run:a", 6n, 19n, "repeat"),
      applies: false,
    },
    { name: "an older delete", update: remove("run:a", 5n, 21n), applies: false },
  ];
  for (const c of cases) {
    test(`${c.name}: ${c.applies ? "applied" : "ignored"}`, () => {
      const cache = snapshotted(20n, { "run:a": [5n, "v5"] });
      const before = cache.getDoc("run:a");
      const applied = cache.applyBatch(batch([c.update], { watermark: 21n }));
      assert.equal(applied.changed, c.applies);
      if (c.applies) assert.notEqual(cache.getDoc("run:a"), before);
      else assert.equal(cache.getDoc("run:a"), before);
      assert.deepEqual(
        cache.position,
        { epoch: EPOCH, watermark: 21n },
        "the position moves on either way",
      );
    });
  }

  test("an update of a key never seen is an insert", () => {
    const cache = snapshotted(20n, {});
    cache.applyBatch(batch([upsert("run:new", 3n, 21n, "x")], { watermark: 21n }));
    assert.equal(cache.getDoc("run:new")?.value, "x");
  });
});

describe("removals", () => {
  test("a tombstone removes the doc", () => {
    const cache = snapshotted(20n, { "run:a": [1n, "a"], "run:b": [1n, "b"] });
    const applied = cache.applyBatch(batch([remove("run:a", 2n, 21n)], { watermark: 21n }));
    assert.equal(applied.changed, true);
    assert.equal(applied.persist, true);
    assert.deepEqual(values(cache), { "run:b": "b" });
  });

  test("a doc leaving the tenant's scope (OP_DELETE with the tenant's scope) is removed", () => {
    const cache = snapshotted(20n, { "run:a": [4n, "a"] });
    cache.applyBatch(batch([remove("run:a", 5n, 30n)], { watermark: 30n }));
    assert.equal(cache.getDoc("run:a"), undefined);
    // And it comes back with a newer version when it re-enters.
    cache.applyBatch(batch([upsert("run:a", 6n, 31n, "back")], { watermark: 31n }));
    assert.equal(cache.getDoc("run:a")?.value, "back");
  });

  test("a delete of a doc not held changes nothing", () => {
    const cache = snapshotted(20n, {});
    const applied = cache.applyBatch(batch([remove("run:x", 2n, 21n)], { watermark: 21n }));
    assert.equal(applied.changed, false);
    assert.equal(applied.persist, true, "the position moved");
  });
});

describe("resync", () => {
  test("a stale notice: the old docs stay until the snapshot ends, then swap at once", () => {
    const cache = snapshotted(20n, { "run:a": [1n, "a"], "run:b": [1n, "b"] });
    const old = cache.getDocs();
    cache.connecting();
    cache.joined(parseJoinReply(joinReply(50n, 30n)));
    assert.equal(cache.status(), "catching_up");

    const first = cache.applyBatch(
      batch([stale(20n, 30n, 50n), snapshotHeader(50n), doc("run:c", 4n, "c")]),
    );
    assert.equal(first.changed, true, "the status changed");
    assert.equal(cache.status(), "resyncing");
    assert.equal(cache.getDocs(), old, "the old docs are still shown");
    assert.equal(first.persist, true, "the position is dropped");
    assert.equal(cache.position, undefined);

    const middle = cache.applyBatch(batch([doc("run:d", 2n, "d")]));
    assert.equal(middle.changed, false, "nothing shown changed");
    assert.equal(cache.getDocs(), old);

    const last = cache.applyBatch(
      batch([doc("run:e", 1n, "e"), snapshotEnd(50n)], { watermark: 50n }),
    );
    assert.equal(last.changed, true);
    assert.equal(last.persist, true);
    assert.deepEqual(values(cache), { "run:c": "c", "run:d": "d", "run:e": "e" });
    assert.equal(cache.status(), "live");
    assert.deepEqual(cache.position, { epoch: EPOCH, watermark: 50n });
  });

  test("a stale notice between a snapshot's pages drops the pages taken, then the fresh snapshot swaps in", () => {
    const cache = snapshotted(20n, { "run:a": [1n, "a"] });
    cache.connecting();
    cache.joined(parseJoinReply(joinReply(40n, 30n)));
    // A first page of a snapshot at 40, then the topic is purged past it.
    cache.applyBatch(batch([snapshotHeader(40n), doc("run:x", 3n, "x")]));
    const fresh = cache.applyBatch(
      batch([stale(40n, 45n, 60n), snapshotHeader(60n), doc("run:y", 2n, "y"), snapshotEnd(60n)], {
        watermark: 60n,
      }),
    );
    assert.equal(fresh.changed, true);
    assert.deepEqual(values(cache), { "run:y": "y" }, "not run:x of the page cut short");
    assert.equal(cache.status(), "live");
    assert.deepEqual(cache.position, { epoch: EPOCH, watermark: 60n });
  });

  test("stale notice → resyncing → (cut off, rejoined) still resyncing → live", () => {
    const cache = snapshotted(20n, { "run:a": [1n, "a"] });
    const statuses: string[] = [cache.status()];
    cache.applyBatch(batch([stale(20n, 30n, 50n), snapshotHeader(50n)]));
    statuses.push(cache.status());
    cache.connecting();
    statuses.push(cache.status());
    cache.joined(parseJoinReply(joinReply(55n, 30n)));
    statuses.push(cache.status());
    assert.deepEqual(values(cache), { "run:a": "a" }, "the old docs through the cut");
    cache.applyBatch(
      batch([snapshotHeader(55n), doc("run:b", 1n, "b"), snapshotEnd(55n)], { watermark: 55n }),
    );
    statuses.push(cache.status());
    assert.deepEqual(statuses, ["live", "resyncing", "connecting", "resyncing", "live"]);
    assert.deepEqual(values(cache), { "run:b": "b" });
  });

  test("a delta snapshot (since > 0) starts from the docs held", () => {
    const cache = snapshotted(20n, { "run:a": [1n, "a"], "run:b": [1n, "b"] });
    const header = snapshotHeader(40n);
    if (header.message?.case === "snapshotHeader" && header.message.value.position !== undefined) {
      header.message.value.since = 20n;
    }
    cache.applyBatch(batch([header, doc("run:b", 2n, "b2"), snapshotEnd(40n)], { watermark: 40n }));
    assert.deepEqual(values(cache), { "run:a": "a", "run:b": "b2" });
  });

  test("a delta snapshot after a stale notice starts from the docs shown, at their position", () => {
    const cache = snapshotted(20n, { "run:a": [1n, "a"], "run:b": [1n, "b"] });
    const header = snapshotHeader(40n);
    if (header.message?.case === "snapshotHeader") header.message.value.since = 20n;
    cache.applyBatch(
      batch([stale(20n, 10n, 40n), header, doc("run:b", 2n, "b2"), snapshotEnd(40n)], {
        watermark: 40n,
      }),
    );
    assert.deepEqual(values(cache), { "run:a": "a", "run:b": "b2" });
    assert.deepEqual(cache.position, { epoch: EPOCH, watermark: 40n });
  });

  test("a delta snapshot since a position other than the docs' is a protocol error", () => {
    for (const [since, epoch] of [
      [10n, EPOCH],
      [20n, "another-epoch"],
    ] as const) {
      const cache = snapshotted(20n, { "run:a": [1n, "a"] });
      const header = snapshotHeader(40n, epoch);
      if (header.message?.case === "snapshotHeader") header.message.value.since = since;
      assert.throws(
        () => cache.applyBatch(batch([header])),
        new RegExp(`a delta snapshot since ${epoch}/${since}, the docs are at ${EPOCH}/20`),
      );
    }
    const fresh = new TopicCache(TOPIC);
    const header = snapshotHeader(40n);
    if (header.message?.case === "snapshotHeader") header.message.value.since = 5n;
    assert.throws(() => fresh.applyBatch(batch([header])), /the docs are at no position/);
  });
});

describe("statuses", () => {
  test("resuming at the head is live at once", () => {
    const cache = new TopicCache(TOPIC);
    cache.load({ epoch: EPOCH, watermark: 30n }, []);
    cache.joined(parseJoinReply(joinReply(30n, 10n)));
    assert.equal(cache.status(), "live");
  });

  test("behind the head: catching up until a batch reaches it", () => {
    const cache = new TopicCache(TOPIC);
    cache.load({ epoch: EPOCH, watermark: 30n }, []);
    cache.joined(parseJoinReply(joinReply(40n)));
    assert.equal(cache.status(), "catching_up");
    cache.applyBatch(batch([upsert("a", 1n, 35n, 1)], { watermark: 35n }));
    assert.equal(cache.status(), "catching_up");
    cache.applyBatch(batch([upsert("a", 2n, 40n, 2)], { watermark: 40n }));
    assert.equal(cache.status(), "live");
  });

  test("behind the head with nothing for this tenant: a heartbeat's delivered position makes it live", () => {
    const cache = new TopicCache(TOPIC);
    cache.load({ epoch: EPOCH, watermark: 30n }, []);
    cache.joined(parseJoinReply(joinReply(40n)));
    const applied = cache.applyHeartbeat(
      heartbeat([{ watermark: 41n }, { watermark: 99n, topic: "other" }]),
    );
    assert.equal(applied.changed, true);
    assert.equal(applied.persist, true);
    assert.deepEqual(cache.position, { epoch: EPOCH, watermark: 41n });
    assert.equal(cache.status(), "live");
  });

  test("a position beyond the join reply's head is not live (the server may call it stale)", () => {
    const cache = new TopicCache(TOPIC);
    cache.load({ epoch: EPOCH, watermark: 50n }, []);
    cache.joined(parseJoinReply(joinReply(40n)));
    assert.equal(cache.status(), "catching_up");
  });

  test("a position of another epoch is not live", () => {
    const cache = new TopicCache(TOPIC);
    cache.load({ epoch: "old-epoch", watermark: 40n }, []);
    cache.joined(parseJoinReply(joinReply(40n)));
    assert.equal(cache.status(), "catching_up");
  });

  test("a heartbeat never moves the position back", () => {
    const cache = snapshotted(20n, {});
    const applied = cache.applyHeartbeat(heartbeat([{ watermark: 19n }]));
    assert.equal(applied.persist, false, "a heartbeat behind the position changes nothing");
    assert.deepEqual(cache.position, { epoch: EPOCH, watermark: 20n });
  });

  test("refused: the docs and the position go", () => {
    const cache = snapshotted(20n, { a: [1n, 1] });
    cache.refused();
    assert.equal(cache.status(), "refused");
    assert.deepEqual(cache.getDocs(), []);
    assert.equal(cache.position, undefined);
    cache.connecting();
    assert.equal(cache.status(), "refused", "stays refused");
  });
});

describe("protocol violations throw", () => {
  const cases: { name: string; run: (cache: TopicCache) => void }[] = [
    {
      name: "an update inside a snapshot",
      run: (c) => c.applyBatch(batch([snapshotHeader(30n), upsert("a", 1n, 31n, 1)])),
    },
    {
      name: "a doc outside a snapshot",
      run: (c) => c.applyBatch(batch([doc("a", 1n, 1)], { watermark: 20n })),
    },
    {
      name: "a snapshot end without its header",
      run: (c) => c.applyBatch(batch([snapshotEnd(20n)], { watermark: 20n })),
    },
    {
      name: "a snapshot end at another head",
      run: (c) => c.applyBatch(batch([snapshotHeader(30n), snapshotEnd(31n)])),
    },
    {
      name: "a payload that is no JSON",
      run: (c) =>
        c.applyBatch(
          batch([
            {
              message: {
                case: "update",
                value: {
                  topic: TOPIC,
                  docKey: "a",
                  docVersion: 9n,
                  watermark: 21n,
                  epoch: EPOCH,
                  op: 1,
                  payload: new Uint8Array([123]),
                },
              },
            },
          ]),
        ),
    },
    {
      name: "an update of another topic",
      run: (c) => c.applyBatch(batch([upsert("a", 9n, 21n, 1, { topic: "other" })])),
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const cache = snapshotted(20n, { a: [1n, 1] });
      assert.throws(
        () => c.run(cache),
        (e: unknown) => e instanceof SyncError && e.code === "protocol",
      );
    });
  }
});

describe("withheld payloads", () => {
  test("an update with fetch_required keeps the last value, pending, until fetched", () => {
    const cache = snapshotted(20n, { a: [1n, "v1"] });
    const applied = cache.applyBatch(
      batch([upsert("a", 2n, 21n, null, { fetchRequired: true })], { watermark: 21n }),
    );
    assert.deepEqual(applied.fetch, ["a"]);
    assert.deepEqual(cache.getDoc("a"), {
      topic: TOPIC,
      key: "a",
      version: 2n,
      scope: "org:42",
      value: "v1",
      pending: true,
    });
    assert.deepEqual(cache.pendingKeys(), ["a"]);
    const filled = cache.applyFetched("a", {
      version: 2n,
      epoch: EPOCH,
      scope: "org:42",
      value: "v2",
    });
    assert.equal(filled?.value, "v2");
    assert.equal(cache.getDoc("a")?.pending, false);
  });

  const cases: { name: string; fetched: { version: bigint; epoch: string }; applies: boolean }[] = [
    { name: "the version withheld", fetched: { version: 2n, epoch: EPOCH }, applies: true },
    {
      name: "a newer version (changed since)",
      fetched: { version: 3n, epoch: EPOCH },
      applies: true,
    },
    { name: "an older version", fetched: { version: 1n, epoch: EPOCH }, applies: false },
    { name: "another epoch", fetched: { version: 2n, epoch: "other" }, applies: false },
  ];
  for (const c of cases) {
    test(`a fetched doc of ${c.name}: ${c.applies ? "filled in" : "ignored"}`, () => {
      const cache = snapshotted(20n, { a: [1n, "v1"] });
      cache.applyBatch(
        batch([upsert("a", 2n, 21n, null, { fetchRequired: true })], { watermark: 21n }),
      );
      const filled = cache.applyFetched("a", { ...c.fetched, scope: "org:42", value: "fetched" });
      assert.equal(filled !== undefined, c.applies);
      assert.equal(cache.getDoc("a")?.pending, !c.applies);
    });
  }

  test("a fetch that lands after the doc was deleted is ignored", () => {
    const cache = snapshotted(20n, {});
    cache.applyBatch(
      batch([upsert("a", 2n, 21n, null, { fetchRequired: true }), remove("a", 3n, 22n)], {
        watermark: 22n,
      }),
    );
    assert.equal(
      cache.applyFetched("a", { version: 2n, epoch: EPOCH, scope: "org:42", value: 1 }),
      undefined,
    );
    assert.equal(cache.getDoc("a"), undefined);
  });
});
