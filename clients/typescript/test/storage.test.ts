// The storages, and the client's copy in them (Persistence): key layout per
// identity, clearing on another identity, write failures, corrupt records.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import type { SyncDoc } from "../src/cache.js";
import type { SyncError } from "../src/errors.js";
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
  function persistence(storage: SyncStorage = memoryStorage()) {
    const errors: SyncError[] = [];
    return { p: new Persistence(storage, (e) => errors.push(e)), storage, errors };
  }

  test("docs and position round-trip, keyed by user, org and topic", () => {
    const { p, storage } = persistence();
    p.claim(ALICE);
    const docs = [
      doc("a/b", { x: 1 }, 18446744073709551615n),
      { ...doc("c", undefined), pending: true },
    ];
    p.save(
      "t",
      { dropPosition: false, docs: "all", position: { epoch: "e", watermark: 9007199254740993n } },
      docsOf(docs),
    );
    assert.deepEqual(storage.keys().sort(), [
      "oasync/v1/alice/42/doc/t/a%2Fb",
      "oasync/v1/alice/42/doc/t/c",
      "oasync/v1/alice/42/pos/t",
      "oasync/v1/identity",
    ]);
    const reloaded = persistence(storage).p;
    assert.equal(reloaded.claim(ALICE), false);
    const loaded = reloaded.load("t");
    assert.deepEqual(loaded.position, { epoch: "e", watermark: 9007199254740993n });
    assert.deepEqual(
      loaded.docs.sort((x, y) => (x.key < y.key ? -1 : 1)),
      docs,
    );
    assert.deepEqual(reloaded.load("other"), { position: undefined, docs: [] });
  });

  test("a patch writes and removes the keys named; the position is written last", () => {
    const writes: string[] = [];
    const inner = memoryStorage();
    const storage: SyncStorage = {
      ...inner,
      setItem: (k, v) => {
        writes.push(`set ${k}`);
        inner.setItem(k, v);
      },
      removeItem: (k) => {
        writes.push(`remove ${k}`);
        inner.removeItem(k);
      },
    };
    const { p } = persistence(storage);
    p.claim(ALICE);
    writes.length = 0;
    p.save(
      "t",
      {
        dropPosition: true,
        docs: new Set(["gone", "kept"]),
        position: { epoch: "e", watermark: 3n },
      },
      docsOf([doc("kept", 1)]),
    );
    assert.deepEqual(writes, [
      "remove oasync/v1/alice/42/pos/t",
      "remove oasync/v1/alice/42/doc/t/gone",
      "set oasync/v1/alice/42/doc/t/kept",
      "set oasync/v1/alice/42/pos/t",
    ]);
  });

  test("another identity clears every key of the first before anything is read", () => {
    const { p, storage } = persistence();
    p.claim(ALICE);
    p.save(
      "t",
      { dropPosition: false, docs: "all", position: { epoch: "e", watermark: 1n } },
      docsOf([doc("a", 1)]),
    );
    storage.setItem("unrelated", "kept");
    const second = persistence(storage).p;
    assert.equal(second.claim(BOB), true);
    assert.deepEqual(second.load("t"), { position: undefined, docs: [] });
    assert.deepEqual(storage.keys().sort(), ["oasync/v1/identity", "unrelated"]);
    assert.deepEqual(JSON.parse(storage.getItem("oasync/v1/identity") ?? ""), BOB);
  });

  test("a token without an identity clears the copy and persists nothing", () => {
    const { p, storage } = persistence();
    p.claim(ALICE);
    p.save(
      "t",
      { dropPosition: false, docs: "all", position: { epoch: "e", watermark: 1n } },
      docsOf([doc("a", 1)]),
    );
    p.claim(undefined);
    p.save(
      "t",
      { dropPosition: false, docs: "all", position: { epoch: "e", watermark: 2n } },
      docsOf([doc("a", 1)]),
    );
    assert.deepEqual(storage.keys(), []);
  });

  test("a failed write: reported once, the topic forgotten and no longer persisted", () => {
    const web = webStorage(4);
    const { p, errors } = persistence(localStorageStorage({ storage: web }));
    p.claim(ALICE);
    p.save(
      "small",
      { dropPosition: false, docs: "all", position: { epoch: "e", watermark: 1n } },
      docsOf([doc("a", 1)]),
    );
    p.save(
      "t",
      { dropPosition: false, docs: "all", position: { epoch: "e", watermark: 1n } },
      docsOf([doc("a", 1), doc("b", 2)]),
    );
    p.save(
      "t",
      { dropPosition: false, docs: new Set(["c"]), position: { epoch: "e", watermark: 2n } },
      docsOf([doc("c", 3)]),
    );
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

  test("a record that does not read: reported, and the topic's copy dropped", () => {
    const { p, storage, errors } = persistence();
    p.claim(ALICE);
    p.save(
      "t",
      { dropPosition: false, docs: "all", position: { epoch: "e", watermark: 1n } },
      docsOf([doc("a", 1)]),
    );
    storage.setItem("oasync/v1/alice/42/doc/t/a", "{not json");
    assert.deepEqual(p.load("t"), { position: undefined, docs: [] });
    assert.deepEqual(
      errors.map((e) => e.code),
      ["storage"],
    );
    assert.deepEqual(storage.keys(), ["oasync/v1/identity"]);
  });
});
