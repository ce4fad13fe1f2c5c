import assert from "node:assert/strict";
import { test } from "node:test";

import { endpointsOf } from "../src/endpoints.js";

const cases = [
  {
    base: "https://sync.example",
    socket: "wss://sync.example/sync/v1/socket",
    doc: "https://sync.example/sync/v1/doc/run_summary%3Aabc?topic=runtime.run_summaries",
  },
  {
    base: "http://127.0.0.1:4437/",
    socket: "ws://127.0.0.1:4437/sync/v1/socket",
    doc: "http://127.0.0.1:4437/sync/v1/doc/run_summary%3Aabc?topic=runtime.run_summaries",
  },
  {
    base: "wss://example.com/oasync/",
    socket: "wss://example.com/oasync/sync/v1/socket",
    doc: "https://example.com/oasync/sync/v1/doc/run_summary%3Aabc?topic=runtime.run_summaries",
  },
];
for (const c of cases) {
  test(`endpoints of ${c.base}`, () => {
    const e = endpointsOf(c.base);
    assert.equal(e.socket, c.socket);
    assert.equal(e.doc("run_summary:abc", "runtime.run_summaries"), c.doc);
  });
}

test("a URL that is not http(s) or ws(s) is refused", () => {
  assert.throws(() => endpointsOf("ftp://x"), /is not http\(s\) or ws\(s\)/);
  assert.throws(() => endpointsOf("not a url"));
});
