import assert from "node:assert/strict";
import { test } from "node:test";

import { fetchDoc, type FetchFunction } from "../src/doc-fetch.js";
import { SyncError } from "../src/errors.js";

const answering =
  (status: number, body: unknown): FetchFunction =>
  async () => ({
    status,
    text: async () => (typeof body === "string" ? body : JSON.stringify(body)),
  });

const good = {
  topic: "t",
  doc_key: "k",
  scope: "org:1",
  doc_version: 3,
  deleted: false,
  last_watermark: 9,
  epoch: "e",
  offset: "o",
  value: { a: 1 },
};

test("a doc", async () => {
  assert.deepEqual(await fetchDoc(answering(200, good), "u", "tok", "t", "k"), {
    kind: "doc",
    deleted: false,
    doc: { version: 3n, epoch: "e", scope: "org:1", value: { a: 1 } },
  });
});

test("a tombstone has a null value", async () => {
  const answer = await fetchDoc(
    answering(200, { ...good, deleted: true, value: null }),
    "u",
    "tok",
    "t",
    "k",
  );
  assert.equal(answer.kind === "doc" && answer.deleted, true);
});

test("404: not found", async () => {
  assert.deepEqual(await fetchDoc(answering(404, "{}"), "u", "tok", "t", "k"), {
    kind: "not_found",
  });
});

const failures: { name: string; fetch: FetchFunction; message: RegExp }[] = [
  { name: "a 401", fetch: answering(401, "refused"), message: /answered 401: refused/ },
  { name: "a body that is not JSON", fetch: answering(200, "<html>"), message: /not JSON/ },
  {
    name: "a version beyond 2^53",
    fetch: answering(200, { ...good, doc_version: 2 ** 53 }),
    message: /not a safe integer/,
  },
  {
    name: "another doc",
    fetch: answering(200, { ...good, doc_key: "other" }),
    message: /of doc "other"/,
  },
  {
    name: "a network failure",
    fetch: () => Promise.reject(new Error("offline")),
    message: /failed: Error: offline/,
  },
];
for (const f of failures) {
  test(`${f.name} is a fetch error`, async () => {
    await assert.rejects(fetchDoc(f.fetch, "u", "tok", "t", "k"), (e: unknown) => {
      assert.ok(e instanceof SyncError);
      assert.equal(e.code, "fetch");
      assert.match(e.message, f.message);
      return true;
    });
  });
}
