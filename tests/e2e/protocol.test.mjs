// oasync serve against the words of the protocol documents: the State
// Protocol's published schema (every message any test receives is checked in
// support.mjs; here, what each operation looks like, and the opt-in version
// header), and the browser security headers of PROTOCOL.md on every answer.
import assert from "node:assert/strict";
import { connect } from "node:net";
import { after, before, describe, test } from "node:test";

import {
  RUNS,
  createDatabase,
  eventually,
  makeKeys,
  oasync,
  startServer,
  token,
  write,
} from "./support.mjs";

const keys = makeKeys();
after(() => keys.remove());

describe("oasync serve: State Protocol messages", () => {
  let db;
  let server;
  before(async () => {
    db = createDatabase();
    server = await startServer(db, keys);
  });
  after(async () => {
    await server.stop();
    db.drop();
  });
  const auth = () => ({ Authorization: `Bearer ${token(keys)}` });
  const read = async (query) => {
    const r = await fetch(`${server.base}/v1/topics/${RUNS}?${query}`, { headers: auth() });
    assert.equal(r.status, 200, query);
    return await r.json();
  };
  // The messages from `query`'s offset once there are `count` (the server
  // may not have read the writes yet).
  const readAll = async (query, count) => {
    let messages;
    await eventually(async () => (messages = await read(query)).length >= count, 10000, query);
    return messages;
  };

  test("headers carry only the operation, a delete carries value null, and versions=true adds the version", async () => {
    const head = await fetch(`${server.base}/v1/topics/${RUNS}`, { method: "HEAD", headers: auth() });
    const from = head.headers.get("stream-next-offset");
    write(db, [{ key: "m", scope: "org:1", payload: { v: 1 } }]);
    write(db, [{ key: "m", scope: "org:1", payload: { v: 2 } }]);
    write(db, [{ key: "m", delete: true }]);
    const type = RUNS;
    const key = "run_summary:m";
    assert.deepEqual(await readAll(`offset=${from}`, 3), [
      { type, key, value: { v: 1 }, headers: { operation: "insert" } },
      { type, key, value: { v: 2 }, headers: { operation: "update" } },
      { type, key, value: null, headers: { operation: "delete" } },
    ]);
    assert.deepEqual(await readAll(`offset=${from}&versions=true`, 3), [
      { type, key, value: { v: 1 }, headers: { operation: "insert", version: 1 } },
      { type, key, value: { v: 2 }, headers: { operation: "update", version: 2 } },
      { type, key, value: null, headers: { operation: "delete", version: 3 } },
    ]);
    assert.deepEqual(await read("offset=-1&versions=false"), [
      { headers: { control: "snapshot-start" } },
      { headers: { control: "snapshot-end" } },
    ]);
    // A snapshot's inserts, with and without the version.
    write(db, [{ key: "s", scope: "org:1", payload: { s: 1 } }, { key: "s", scope: "org:1", payload: { s: 2 } }]);
    const inserts = (messages) => messages.filter((m) => m.key === "run_summary:s");
    assert.deepEqual(inserts(await read("offset=-1")), [
      { type, key: "run_summary:s", value: { s: 2 }, headers: { operation: "insert" } },
    ]);
    assert.deepEqual(inserts(await read("offset=-1&versions=true")), [
      { type, key: "run_summary:s", value: { s: 2 }, headers: { operation: "insert", version: 2 } },
    ]);
    const bad = await fetch(`${server.base}/v1/topics/${RUNS}?offset=-1&versions=yes`, { headers: auth() });
    assert.equal(bad.status, 400);
    assert.match((await bad.json()).message, /versions must be true or false, not "yes"/);
  });

  test("over SSE too, the version only on request", async () => {
    const head = await fetch(`${server.base}/v1/topics/${RUNS}`, { method: "HEAD", headers: auth() });
    const from = head.headers.get("stream-next-offset");
    write(db, [{ key: "e", scope: "org:1", payload: { e: 1 } }]);
    for (const [query, headers] of [["", { operation: "insert" }], ["&versions=true", { operation: "insert", version: 1 }]]) {
      const controller = new AbortController();
      const r = await fetch(`${server.base}/v1/topics/${RUNS}?offset=${from}&live=sse${query}`, {
        headers: auth(),
        signal: controller.signal,
      });
      assert.equal(r.status, 200);
      // (The first event may be a control alone, if the server has not read the write yet.)
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let text = "";
      let data;
      const timer = setTimeout(() => controller.abort(), 10000);
      while (!(data = /event: data\ndata: (.*)\n/.exec(text))) text += decoder.decode((await reader.read()).value, { stream: true });
      clearTimeout(timer);
      controller.abort();
      assert.deepEqual(JSON.parse(data[1]), [{ type: RUNS, key: "run_summary:e", value: { e: 1 }, headers }]);
    }
  });
});

describe("oasync serve: browser security headers (PROTOCOL.md, Browser Security Headers)", () => {
  let db;
  let server;
  before(async () => {
    db = createDatabase();
    write(db, [{ key: "a", scope: "org:1", payload: { v: 1 } }]);
    server = await startServer(db, keys, { config: "serve:\n  limits: {max_request_bytes: 2048}\n" });
  });
  after(async () => {
    await server.stop();
    db.drop();
  });
  const auth = () => ({ Authorization: `Bearer ${token(keys)}` });
  const assertSecure = (headers, what) => {
    assert.equal(headers.get("x-content-type-options"), "nosniff", what);
    assert.equal(headers.get("cross-origin-resource-policy"), "cross-origin", what);
  };

  test("every answer: 200, 204, SSE, HEAD, 400, 401, 403, 404, 405, 410, 431, health and metrics", async () => {
    const answers = {
      200: await fetch(`${server.base}/v1/topics/${RUNS}?offset=-1`, { headers: auth() }),
      "HEAD 200": await fetch(`${server.base}/v1/topics/${RUNS}`, { method: "HEAD", headers: auth() }),
      "OPTIONS 204": await fetch(`${server.base}/v1/topics/${RUNS}`, { method: "OPTIONS" }),
      "doc 200": await fetch(`${server.base}/sync/v1/doc/run_summary:a`, { headers: auth() }),
      400: await fetch(`${server.base}/v1/topics/${RUNS}?offset=12345`, { headers: auth() }),
      401: await fetch(`${server.base}/v1/topics/${RUNS}?offset=-1`),
      403: await fetch(`${server.base}/v1/topics/${RUNS}?offset=-1`, {
        headers: { Authorization: `Bearer ${token(keys, { scopes: ["runtime.notifications"] })}` },
      }),
      404: await fetch(`${server.base}/nowhere`),
      "doc 404": await fetch(`${server.base}/sync/v1/doc/run_summary:nope`, { headers: auth() }),
      405: await fetch(`${server.base}/v1/topics/${RUNS}`, { method: "POST", body: "[]", headers: auth() }),
      431: await fetch(`${server.base}/v1/topics/${RUNS}?offset=now`, { headers: { ...auth(), "X-Pad": "x".repeat(4000) } }),
      "healthz 200": await fetch(`${server.base}/healthz`),
      "metrics 200": await fetch(`${server.base}/metrics`),
    };
    for (const [what, r] of Object.entries(answers)) {
      const status = Number(what.split(" ").at(-1));
      assert.equal(r.status, status, what);
      assertSecure(r.headers, what);
      await r.arrayBuffer();
    }
    // A long-poll that times out (204), and an SSE stream.
    const now = await fetch(`${server.base}/v1/topics/${RUNS}?offset=now`, { headers: auth() });
    const poll = await fetch(
      `${server.base}/v1/topics/${RUNS}?offset=${now.headers.get("stream-next-offset")}&live=long-poll`,
      { headers: auth(), signal: AbortSignal.timeout(30000) },
    );
    assert.equal(poll.status, 204);
    assertSecure(poll.headers, "long-poll 204");
    const controller = new AbortController();
    const sse = await fetch(`${server.base}/v1/topics/${RUNS}?offset=now&live=sse`, { headers: auth(), signal: controller.signal });
    assert.equal(sse.status, 200);
    assertSecure(sse.headers, "SSE");
    controller.abort();
  });

  test("a stale offset's 410", async () => {
    const head = await fetch(`${server.base}/v1/topics/${RUNS}`, { method: "HEAD", headers: auth() });
    const old = head.headers.get("stream-next-offset");
    write(db, [{ key: "b", scope: "org:1", payload: { v: 1 } }, { key: "b", scope: "org:1", payload: { v: 2 } }]);
    const purge = oasync(["purge", "--topic", RUNS, "--older-than", "0s", "--keep-last", "0"], { url: db.url });
    assert.equal(purge.status, 0, purge.stderr);
    let gone;
    await eventually(async () => {
      gone = await fetch(`${server.base}/v1/topics/${RUNS}?offset=${old}`, { headers: auth() });
      await gone.arrayBuffer();
      return gone.status === 410;
    }, 5000, "the 410");
    assertSecure(gone.headers, "410");
  });

  test("a malformed request head's 400, and the 503 beyond the connection limit", async () => {
    // Raw bytes: what fetch would never send.
    const { port } = new URL(server.base);
    const raw = await new Promise((resolve, reject) => {
      let text = "";
      const socket = connect(Number(port), "127.0.0.1", () => socket.write("NOT HTTP AT ALL\r\n\r\n"));
      socket.on("data", (chunk) => (text += chunk));
      socket.on("end", () => resolve(text));
      socket.on("error", reject);
    });
    assert.match(raw, /^HTTP\/1\.1 400 /);
    assert.match(raw, /\r\nX-Content-Type-Options: nosniff\r\n/i);
    assert.match(raw, /\r\nCross-Origin-Resource-Policy: cross-origin\r\n/i);
    // One connection allowed, held by a long-poll: the next is refused.
    const small = await startServer(db, keys, { config: "serve:\n  limits: {max_connections: 1}\n" });
    const controller = new AbortController();
    try {
      const held = fetch(`${small.base}/v1/topics/${RUNS}?offset=now&live=long-poll`, { headers: auth(), signal: controller.signal }).catch(() => null);
      await new Promise((r) => setTimeout(r, 500));
      const refused = await fetch(`${small.base}/v1/topics/${RUNS}?offset=now`, { headers: auth() });
      assert.equal(refused.status, 503);
      assertSecure(refused.headers, "503");
      controller.abort();
      await held;
    } finally {
      await small.stop();
    }
  });
});
