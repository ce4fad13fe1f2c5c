// The storages, and the client's copy in them (Persistence): key layout per
// identity, clearing on another identity, write failures, corrupt records.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import type { SyncDoc } from "../src/cache.js";
import type { SyncError } from "../src/errors.js";
import type { Position } from "../src/positions.js";
import { Persistence } from "../src/persistence.js";
import {
  localStorageStorage,
  memoryStorage,
  type SyncStorage,
  type WebStorage,
} from "../src/storage.js";

// A Web Storage in memory, as a browser's localStorage behaves; `quota`
// items at most (setItem throws beyond, as a full localStorage does).
function webStorage(quota = Infinity): WebStorage & { items: Map<string, string> } {
  const items = new Map<string, string>();
  return {
    items,
    get length() {
      return items.size;
    },
    key: (i) => [...items.keys()][i] ?? null,
    getItem: (k) => items.get(k) ?? null,
    setItem: (k, v) => {
      if (!items.has(k) && items.size >= quota) throw new Error("QuotaExceededError");
      items.set(k, v);
    },
    removeItem: (k) => {
      items.delete(k);
    },
  };
}

const doc = (key: string, value: unknown, version = 1n): SyncDoc => ({
  topic: "t",
  key,
  version,
  scope: "org:1",
  value: value as SyncDoc["value"],
  pending: false,
});

// The docs of a topic, as the cache would answer.
function docsOf(list: SyncDoc[]) {
  return { getDoc: (k: string) => list.find((d) => d.key === k), getDocs: () => list };
}

const ALICE = { user: "alice", org: "42" };
const BOB = { user: "bob", org: "7" };

describe("storages", () => {
  test("memoryStorage keeps what was set until removed", () => {
    const s = memoryStorage();
    s.setItem("a", "1");
    s.setItem("b", "2");
    s.removeItem("a");
    assert.equal(s.getItem("a"), null);
    assert.equal(s.getItem("b"), "2");
    assert.deepEqual(s.keys(), ["b"]);
  });

  test("localStorageStorage prefixes its keys and lists only its own", () => {
    const web = webStorage();
    web.setItem("page-setting", "x");
    const s = localStorageStorage({ storage: web });
    s.setItem("k", "v");
    assert.equal(web.getItem("oasync:k"), "v");
    assert.deepEqual(s.keys(), ["k"]);
    s.removeItem("k");
    assert.deepEqual([...web.items.keys()], ["page-setting"]);
  });

  test("localStorageStorage without a localStorage throws at once", () => {
    assert.throws(() => localStorageStorage(), /there is no localStorage here/);
  });
});

describe("the persisted copy", () => {
  function persistence(storage: SyncStorage = memoryStorage(), delayMs = 0) {
    const errors: SyncError[] = [];
    return { p: new Persistence(storage, (e) => errors.push(e), delayMs), storage, errors };
  }

  // A topic's state, as the cache answers it.
  const state = (position: Position | undefined, docs: SyncDoc[]) => () => ({
    position,
    getDocs: () => docs,
  });

  // Counts the writes of `inner`.
  function counted(inner: SyncStorage = memoryStorage()) {
    const writes: string[] = [];
    const storage: SyncStorage = {
      ...inner,
      setItem: (k, v) => {
        writes.push(k);
        inner.setItem(k, v);
      },
    };
    return { storage, writes };
  }

  test("docs and position round-trip in one key per topic, under user and org", () => {
    const { p, storage } = persistence();
    p.claim(ALICE);
    const docs = [
      doc("a/b", { x: 1 }, 18446744073709551615n),
      { ...doc("c", undefined), pending: true },
    ];
    p.touch("t/1", state({ epoch: "e", watermark: 9007199254740993n }, docs));
    assert.deepEqual(storage.keys().sort(), [
      "oasync/v2/alice/42/topic/t%2F1",
      "oasync/v2/identity",
    ]);
    const reloaded = persistence(storage).p;
    assert.equal(reloaded.claim(ALICE), false);
    const loaded = reloaded.load("t/1");
    assert.deepEqual(loaded.position, { epoch: "e", watermark: 9007199254740993n });
    assert.deepEqual(
      loaded.docs,
      docs.map((d) => ({ ...d, topic: "t/1" })),
    );
    assert.deepEqual(reloaded.load("other"), { position: undefined, docs: [] });
  });

  test("a position dropped (a resync under way) is persisted with the docs shown", () => {
    const { p, storage } = persistence();
    p.claim(ALICE);
    p.touch("t", state(undefined, [doc("old", 1)]));
    const reloaded = persistence(storage).p;
    reloaded.claim(ALICE);
    assert.deepEqual(reloaded.load("t"), { position: undefined, docs: [doc("old", 1)] });
  });

  test("changes within the delay are written once, with the state at the write", async () => {
    const { storage, writes } = counted();
    const { p } = persistence(storage, 20);
    p.claim(ALICE);
    writes.length = 0;
    let docs = [doc("a", 1)];
    const s = () => ({
      position: { epoch: "e", watermark: BigInt(docs.length) },
      getDocs: () => docs,
    });
    p.touch("t", s);
    docs = [doc("a", 1), doc("b", 2)];
    p.touch("t", s);
    assert.deepEqual(writes, [], "nothing before the delay");
    await new Promise((r) => setTimeout(r, 60));
    assert.deepEqual(writes, ["oasync/v2/alice/42/topic/t"]);
    const reloaded = persistence(storage).p;
    reloaded.claim(ALICE);
    assert.deepEqual(reloaded.load("t"), { position: { epoch: "e", watermark: 2n }, docs });
  });

  test("flush() writes at once what waits; forget() drops it", () => {
    const { storage, writes } = counted();
    const { p } = persistence(storage, 60_000);
    p.claim(ALICE);
    writes.length = 0;
    p.touch("t", state({ epoch: "e", watermark: 1n }, [doc("a", 1)]));
    p.touch("u", state({ epoch: "e", watermark: 1n }, [doc("a", 1)]));
    p.forget("u");
    p.flush();
    assert.deepEqual(writes, ["oasync/v2/alice/42/topic/t"]);
    p.flush();
    assert.equal(writes.length, 1, "nothing waits any more");
  });

  test("two tabs of one user: the copy is always one tab's whole state, the last written", () => {
    const storage = memoryStorage();
    const tabA = persistence(storage).p;
    const tabB = persistence(storage).p;
    tabA.claim(ALICE);
    tabB.claim(ALICE);
    // Tab A is ahead of tab B: each writes its own state, interleaved.
    const a = { position: { epoch: "e", watermark: 9n }, docs: [doc("x", 3), doc("y", 1)] };
    const b = { position: { epoch: "e", watermark: 5n }, docs: [doc("x", 2)] };
    const reload = () => {
      const r = persistence(storage).p;
      r.claim(ALICE);
      return r.load("t");
    };
    tabA.touch("t", state(a.position, a.docs));
    assert.deepEqual(reload(), a);
    tabB.touch("t", state(b.position, b.docs));
    assert.deepEqual(reload(), b, "tab B's docs with tab B's position, never a mix");
    tabA.touch("t", state(a.position, a.docs));
    assert.deepEqual(reload(), a);
  });

  test("another identity clears every key of the first (and of the old layout) before anything is read", () => {
    const { p, storage } = persistence();
    p.claim(ALICE);
    p.touch("t", state({ epoch: "e", watermark: 1n }, [doc("a", 1)]));
    storage.setItem("unrelated", "kept");
    storage.setItem("oasync/v1/alice/42/pos/t", '{"epoch":"e","watermark":"1"}');
    const second = persistence(storage).p;
    assert.equal(second.claim(BOB), true);
    assert.deepEqual(second.load("t"), { position: undefined, docs: [] });
    assert.deepEqual(storage.keys().sort(), ["oasync/v2/identity", "unrelated"]);
    assert.deepEqual(JSON.parse(storage.getItem("oasync/v2/identity") ?? ""), BOB);
  });

  test("the old layout's keys are removed by a claim of the same identity too", () => {
    const storage = memoryStorage();
    storage.setItem("oasync/v1/identity", JSON.stringify(ALICE));
    storage.setItem("oasync/v1/alice/42/doc/t/a", "{}");
    const { p } = persistence(storage);
    assert.equal(p.claim(ALICE), true);
    assert.deepEqual(storage.keys(), ["oasync/v2/identity"]);
  });

  test("a tab whose storage another tab claimed for another identity stops persisting", () => {
    const storage = memoryStorage();
    const alice = persistence(storage).p;
    alice.claim(ALICE);
    alice.touch("t", state({ epoch: "e", watermark: 1n }, [doc("a", 1)]));
    const bob = persistence(storage).p;
    bob.claim(BOB);
    bob.touch("t", state({ epoch: "e", watermark: 7n }, [doc("b", 1)]));
    alice.touch("t", state({ epoch: "e", watermark: 2n }, [doc("a", 2)]));
    alice.touch("u", state({ epoch: "e", watermark: 2n }, [doc("a", 2)]));
    assert.deepEqual(storage.keys().sort(), ["oasync/v2/bob/7/topic/t", "oasync/v2/identity"]);
    assert.deepEqual(JSON.parse(storage.getItem("oasync/v2/identity") ?? ""), BOB);
  });

  test("a claim removes what a tab of another identity wrote after the last claim", () => {
    const storage = memoryStorage();
    const alice = persistence(storage).p;
    alice.claim(ALICE);
    const bob = persistence(storage).p;
    bob.claim(BOB);
    // Alice's tab wrote between bob's removal and its identity check: as if
    // its write had raced bob's claim.
    storage.setItem("oasync/v2/alice/42/topic/t", '{"position":null,"docs":[]}');
    const again = persistence(storage).p;
    assert.equal(again.claim(BOB), true);
    assert.deepEqual(storage.keys(), ["oasync/v2/identity"]);
  });

  test("a token without an identity clears the copy and persists nothing", () => {
    const { p, storage } = persistence();
    p.claim(ALICE);
    p.touch("t", state({ epoch: "e", watermark: 1n }, [doc("a", 1)]));
    p.claim(undefined);
    p.touch("t", state({ epoch: "e", watermark: 2n }, [doc("a", 1)]));
    assert.deepEqual(storage.keys(), []);
  });

  test("a failed write: reported once, the topic forgotten and no longer persisted", () => {
    const web = webStorage(3);
    const { p, errors } = persistence(localStorageStorage({ storage: web }));
    p.claim(ALICE);
    p.touch("small", state({ epoch: "e", watermark: 1n }, [doc("a", 1)]));
    web.items.set("page-setting", "x"); // the page fills the storage
    p.touch("t", state({ epoch: "e", watermark: 1n }, [doc("a", 1), doc("b", 2)]));
    p.touch("t", state({ epoch: "e", watermark: 2n }, [doc("c", 3)]));
    assert.deepEqual(
      errors.map((e) => [e.code, e.topic]),
      [["storage", "t"]],
    );
    assert.match(
      errors[0]?.message ?? "",
      /topic "t": a write failed \(QuotaExceededError\); the topic is no longer persisted/,
    );
    assert.deepEqual(p.load("t"), { position: undefined, docs: [] });
    assert.equal(p.load("small").docs.length, 1, "the other topic is untouched");
  });

  for (const [what, text] of [
    ["not JSON", "{not json"],
    ["no docs", '{"position":null}'],
    [
      "a doc without a key",
      '{"position":null,"docs":[{"version":"1","scope":"","pending":false}]}',
    ],
    [
      "a watermark beyond 64 bits",
      '{"position":{"epoch":"e","watermark":"18446744073709551616"},"docs":[]}',
    ],
  ]) {
    test(`a copy that does not read (${what}): reported, and dropped`, () => {
      const { p, storage, errors } = persistence();
      p.claim(ALICE);
      p.touch("t", state({ epoch: "e", watermark: 1n }, [doc("a", 1)]));
      storage.setItem("oasync/v2/alice/42/topic/t", text ?? "");
      assert.deepEqual(p.load("t"), { position: undefined, docs: [] });
      assert.deepEqual(
        errors.map((e) => e.code),
        ["storage"],
      );
      assert.match(errors[0]?.message ?? "", /topic "t": the persisted copy does not read/);
      assert.deepEqual(storage.keys(), ["oasync/v2/identity"]);
    });
  }
});
