// oasync serve under the attacks of the adversarial review (issue 20): each
// test reproduces one defect and asserts the fixed behaviour.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { connect } from "node:net";
import { after, before, describe, test } from "node:test";

import {
  RUNS,
  createDatabase,
  eventually,
  makeKeys,
  oasync,
  relay,
  startServer,
  token,
  write,
} from "./support.mjs";

const keys = makeKeys();
after(() => keys.remove());

const get = (server, path, tok) =>
  fetch(`${server.base}${path}`, tok === undefined ? {} : { headers: { Authorization: `Bearer ${tok}` } });

// The database of `url` (scripts/with-postgres: a Unix socket, named by the
// host and port parameters), as net.connect options.
function socketOf(url) {
  const u = new URL(url);
  const host = u.searchParams.get("host") ?? u.hostname;
  const port = u.searchParams.get("port") ?? (u.port || "5432");
  return host.startsWith("/") ? { path: `${host}/.s.PGSQL.${port}` } : { host, port: Number(port) };
}

// `url` reaching its database through the relay `proxy` instead.
function through(url, proxy) {
  const u = new URL(url);
  u.searchParams.set("host", "127.0.0.1");
  u.searchParams.set("port", String(proxy.port));
  return u.toString();
}

describe("oasync serve: revocation and expiry are checked before anything is served", () => {
  let db;
  before(() => {
    db = createDatabase();
    write(db, [{ key: "secret", scope: "org:1", payload: { secret: "x".repeat(1000) } }]);
  });
  after(() => db.drop());

  test("a revoked session is never served right after start: 401 or 503 with Retry-After, never 200", async () => {
    assert.equal(oasync(["sessions", "revoke", "revoked-at-start"], { url: db.url }).status, 0);
    const tok = token(keys, { session_id: "revoked-at-start" });
    for (let run = 0; run < 3; run++) {
      const server = await startServer(db, keys, { ready: false });
      try {
        const r = await get(server, `/v1/topics/${RUNS}?offset=-1`, tok);
        assert.ok([401, 503].includes(r.status), `run ${run}: status ${r.status}`);
        if (r.status === 503) assert.equal(r.headers.get("retry-after"), "1");
        await eventually(async () => (await get(server, `/v1/topics/${RUNS}?offset=-1`, tok)).status === 401,
          10000, "the revocation to be read");
      } finally {
        await server.stop();
      }
    }
  });

  test("with the database down at start, no revoked session is served when it comes back", async () => {
    assert.equal(oasync(["sessions", "revoke", "revoked-while-down"], { url: db.url }).status, 0);
    const database = await relay(socketOf(db.url));
    const server = await startServer({ url: through(db.url, database) }, keys, { ready: false });
    const tok = token(keys, { session_id: "revoked-while-down" });
    try {
      // Down long enough for the hub to back off.
      const statuses = [];
      const until = Date.now() + 2500;
      while (Date.now() < until) statuses.push((await get(server, `/v1/topics/${RUNS}?offset=-1`, tok)).status);
      database.up();
      const upUntil = Date.now() + 6000;
      while (Date.now() < upUntil) statuses.push((await get(server, `/v1/topics/${RUNS}?offset=-1`, tok)).status);
      assert.ok(!statuses.includes(200), `served ${statuses.filter((s) => s === 200).length} times`);
      assert.ok(statuses.includes(503));
      assert.equal(statuses.at(-1), 401);
    } finally {
      await server.stop();
      database.close();
    }
  });

  test("a failed read answers 503 with a generic message: the database's address and errors go to the log", async () => {
    const database = await relay(socketOf(db.url));
    database.up();
    const server = await startServer({ url: through(db.url, database) }, keys);
    const name = new URL(db.url).pathname.slice(1);
    try {
      database.down();
      for (const path of ["/sync/v1/doc/run_summary:secret", `/v1/topics/${RUNS}?offset=-1`]) {
        const r = await get(server, path, token(keys));
        assert.equal(r.status, 503, path);
        assert.equal(r.headers.get("retry-after"), "1");
        const text = await r.text();
        assert.deepEqual(JSON.parse(text), { error: "unavailable", message: "the database is unavailable; try again" });
        assert.doesNotMatch(text, new RegExp(`${database.port}|${name}|host|SQLSTATE|libpq`, "i"));
      }
      assert.match(server.log(), /request failed \(503\)/);
    } finally {
      await server.stop();
      database.close();
    }
  });

  test("wait_for ends at a revocation with 401, not with the data", async () => {
    const server = await startServer(db, keys, { config: "serve:\n  limits: {revocation_poll_ms: 200}\n" });
    try {
      const tok = token(keys, { session_id: "revoked-while-waiting" });
      await eventually(async () => (await get(server, `/v1/topics/${RUNS}?offset=now`, tok)).status === 200, 5000, "ready");
      for (const live of ["", "&live=long-poll", "&live=sse"]) {
        const tok2 = token(keys, { session_id: `revoked-while-waiting${live}` });
        const waiting = get(server, `/v1/topics/${RUNS}?offset=-1&wait_for=999999999${live}`, tok2);
        await new Promise((r) => setTimeout(r, 300));
        assert.equal(oasync(["sessions", "revoke", `revoked-while-waiting${live}`], { url: db.url }).status, 0);
        const r = await waiting;
        assert.equal(r.status, 401, `live=${live}`);
        assert.doesNotMatch(await r.text(), /secret/);
      }
    } finally {
      await server.stop();
    }
  });

  test("wait_for ends at the token's expiry with 401, not with the data", async () => {
    const server = await startServer(db, keys);
    try {
      await eventually(async () => (await get(server, `/v1/topics/${RUNS}?offset=now`, token(keys))).status === 200, 5000, "ready");
      // Valid for 2 more seconds: exp is past, but within the 30-second leeway.
      const tok = token(keys, { exp: Math.floor(Date.now() / 1000) - 28, session_id: "expiring" });
      const started = Date.now();
      const r = await get(server, `/v1/topics/${RUNS}?offset=-1&wait_for=999999999`, tok);
      assert.equal(r.status, 401);
      assert.doesNotMatch(await r.text(), /secret/);
      assert.ok(Date.now() - started < 6000, `answered after ${Date.now() - started} ms`);
    } finally {
      await server.stop();
    }
  });
});

// A raw connection to `server`: write what you like, read what comes back.
async function raw(server) {
  const { port } = new URL(server.base);
  const socket = connect(port, "127.0.0.1");
  await new Promise((resolve, reject) => socket.once("connect", resolve).once("error", reject));
  const state = { text: "", closed: false, closedAt: 0 };
  socket.setEncoding("latin1");
  socket.on("data", (d) => {
    state.text += d;
  });
  socket.on("close", () => {
    state.closed = true;
    state.closedAt = Date.now();
  });
  socket.on("error", () => {});
  return { socket, state, write: (s) => socket.write(s), destroy: () => socket.destroy() };
}

describe("oasync serve: connections that hold room without a request", () => {
  let db;
  before(() => {
    db = createDatabase();
    write(db, [{ key: "a", scope: "org:1", payload: { a: 1 } }]);
  });
  after(() => db.drop());

  test("a Transfer-Encoding other than chunked is 400 or 501, and the connection closes", async () => {
    const server = await startServer(db, keys);
    try {
      for (const [coding, status] of [["xchunked", 501], ["identity", 501], ["gzip, chunked", 501], ["chunked, gzip", 501], ["chunked, chunked", 400], ["", 400]]) {
        const c = await raw(server);
        c.write(`GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ${coding}\r\n\r\n`);
        await eventually(() => c.state.closed, 5000, `the close after ${coding}`);
        assert.match(c.state.text, new RegExp(`^HTTP/1\\.1 ${status} `), coding);
      }
    } finally {
      await server.stop();
    }
  });

  test("a client trickling its request head is cut off after request_head_seconds", async () => {
    const server = await startServer(db, keys, { config: "serve:\n  limits: {request_head_seconds: 2, idle_timeout_seconds: 60}\n" });
    try {
      const trickle = await raw(server);
      const silent = await raw(server);
      const started = Date.now();
      trickle.write("GET /healthz HTTP/1.1\r\n");
      const timer = setInterval(() => trickle.state.closed || trickle.write(`X-Slow-${Date.now()}: 1\r\n`), 300);
      try {
        await eventually(() => trickle.state.closed && silent.state.closed, 8000, "both to be closed");
      } finally {
        clearInterval(timer);
      }
      assert.ok(trickle.state.closedAt - started < 4000, `trickle closed after ${trickle.state.closedAt - started} ms`);
      assert.ok(silent.state.closedAt - started < 4000, `silent closed after ${silent.state.closedAt - started} ms`);
    } finally {
      await server.stop();
    }
  });

  test("idle and trickling connections cannot take the room of an authenticated request", async () => {
    const server = await startServer(db, keys, { config: "serve:\n  limits: {max_connections: 6}\n" });
    const held = [];
    const controller = new AbortController();
    try {
      await eventually(async () => (await get(server, `/v1/topics/${RUNS}?offset=now`, token(keys))).status === 200, 5000, "ready");
      // Two authenticated long-polls, then idle and trickling sockets up to the limit and beyond.
      const auth = { Authorization: `Bearer ${token(keys)}` };
      const polls = [0, 1].map(() =>
        fetch(`${server.base}/v1/topics/${RUNS}?offset=now&live=long-poll`, { headers: auth, signal: controller.signal }).catch(() => null));
      await new Promise((r) => setTimeout(r, 300));
      for (let i = 0; i < 8; i++) {
        const c = await raw(server);
        c.write("GET /healthz HTTP/1.1\r\n");
        held.push(c);
      }
      await new Promise((r) => setTimeout(r, 200));
      const r = await fetch(`${server.base}/v1/topics/${RUNS}?offset=-1`, { headers: auth, signal: AbortSignal.timeout(5000) });
      assert.equal(r.status, 200);
      // The long-polls were never taken: they still wait.
      const metrics = await (await fetch(`${server.base}/metrics`)).text();
      assert.match(metrics, /oasync_serve_responses\{mode="long_poll"\} 2/);
      controller.abort();
      await Promise.all(polls);
    } finally {
      for (const c of held) c.destroy();
      await server.stop();
    }
  });

  test("connections per client address: the peer's, or the one a trusted proxy names", async () => {
    const direct = await startServer(db, keys, { config: "serve:\n  limits: {max_connections_per_client: 3}\n" });
    const held = [];
    try {
      for (let i = 0; i < 3; i++) held.push(await raw(direct));
      const fourth = await raw(direct);
      await eventually(() => fourth.state.closed, 5000, "the refusal");
      assert.match(fourth.state.text, /^HTTP\/1\.1 503 [^]*too_many_connections_from_client/);
    } finally {
      for (const c of held) c.destroy();
      await direct.stop();
    }
    const proxied = await startServer(db, keys, {
      config: "serve:\n  trusted_proxies: [\"127.0.0.1\"]\n  limits: {max_connections_per_client: 2}\n",
    });
    const controller = new AbortController();
    try {
      await eventually(async () => (await get(proxied, `/v1/topics/${RUNS}?offset=now`, token(keys))).status === 200, 5000, "ready");
      const as = (client) => ({ Authorization: `Bearer ${token(keys)}`, "X-Forwarded-For": `203.0.113.9, ${client}` });
      const polls = [0, 1].map(() =>
        fetch(`${proxied.base}/v1/topics/${RUNS}?offset=now&live=long-poll`, { headers: as("198.51.100.1"), signal: controller.signal }).catch(() => null));
      await new Promise((r) => setTimeout(r, 300));
      const third = await fetch(`${proxied.base}/v1/topics/${RUNS}?offset=now`, { headers: as("198.51.100.1") });
      assert.equal(third.status, 503);
      assert.equal(third.headers.get("retry-after"), "1");
      // Another client behind the same proxy is served.
      assert.equal((await fetch(`${proxied.base}/v1/topics/${RUNS}?offset=now`, { headers: as("198.51.100.2") })).status, 200);
      controller.abort();
      await Promise.all(polls);
    } finally {
      await proxied.stop();
    }
  });

  test("under ulimit -n 64, max_connections is clamped at start: clients get an answer and reads still work", async () => {
    const { spawn } = await import("node:child_process");
    const { oasyncBinary } = await import("./support.mjs");
    const child = spawn("bash", ["-c", 'ulimit -n 64 && exec "$0" "$@"', oasyncBinary, "--database-url", db.url, "serve",
      "--listen", "127.0.0.1", "--port", "0", "--auth-algorithm", "HS256", "--auth-key-file", keys.files.HS256],
      { stdio: ["ignore", "ignore", "pipe"] });
    let log = "";
    const port = await new Promise((resolve, reject) => {
      child.stderr.on("data", (d) => {
        log += d;
        const m = /listening on 127\.0\.0\.1:(\d+)/.exec(log);
        if (m) resolve(Number(m[1]));
      });
      child.on("exit", (code) => reject(new Error(`exited ${code}: ${log}`)));
    });
    const server = { base: `http://127.0.0.1:${port}` };
    const held = [];
    try {
      assert.match(log, /max_connections: 10000 does not fit in the open-file limit \(ulimit -n 64/);
      await eventually(async () => (await get(server, `/v1/topics/${RUNS}?offset=now`, token(keys))).status === 200, 5000, "ready");
      for (let i = 0; i < 70; i++) held.push(await raw(server));
      await new Promise((r) => setTimeout(r, 300));
      for (let i = 0; i < 3; i++) {
        const r = await fetch(`${server.base}/v1/topics/${RUNS}?offset=-1`, {
          headers: { Authorization: `Bearer ${token(keys)}` },
          signal: AbortSignal.timeout(5000),
        });
        assert.equal(r.status, 200);
        assert.deepEqual((await r.json()).filter((m) => m.key).map((m) => m.key), ["run_summary:a"]);
      }
      assert.doesNotMatch(log, /Too many open files/);
    } finally {
      for (const c of held) c.destroy();
      child.kill("SIGKILL");
    }
  });
});

// The README's bound on oasync serve's peak memory ("Memory"): the resident
// set at start, the response budget twice (a page is briefly held as
// messages and as the body built from them), each followed topic's live
// buffer three times (the hub reads a wake's events before it trims, and the
// messages the buffered events keep for their readers have a budget of the
// same size), three pages per database session (the result, its events,
// their messages), and a margin for allocator slack.
function memoryBound(baseBytes, limits, followedTopics = 1) {
  const MiB = 1 << 20;
  return baseBytes + 2 * limits.response_bytes + 3 * limits.live_buffer_bytes * followedTopics +
    3 * limits.db_pool * limits.page_bytes + 2 * limits.max_request_bytes * limits.max_connections + 48 * MiB;
}

describe("oasync serve: memory stays bounded by configuration whatever the clients do", () => {
  let db;
  const limits = {
    page_bytes: 256 << 10, response_bytes: 4 << 20, live_buffer_bytes: 4 << 20, db_pool: 4, budget_wait_ms: 500,
    max_connections: 200, max_request_bytes: 16384,
  };
  before(() => {
    db = createDatabase();
    const big = "x".repeat(60000);
    for (let batch = 0; batch < 4; batch++) {
      write(db, Array.from({ length: 100 }, (_, i) => ({ key: `big-${batch}-${i}`, scope: "org:1", payload: { p: big } })));
    }
  });
  after(() => db.drop());

  test("60 clients that never read: peak RSS within the README's formula, and others are still served", async () => {
    const config = `serve:\n  limits: {${Object.entries(limits).map(([k, v]) => `${k}: ${v}`).join(", ")}, send_timeout_seconds: 30}\n`;
    const server = await startServer(db, keys, { config });
    const held = [];
    try {
      const tok = token(keys);
      // Warm: one whole read, so that the base includes what any reader costs.
      const warm = await get(server, `/v1/topics/${RUNS}?offset=-1`, tok);
      assert.equal(warm.status, 200);
      await warm.arrayBuffer();
      const status = () => readFileSync(`/proc/${server.child.pid}/status`, "utf8");
      const base = Number(/VmRSS:\s+(\d+)/.exec(status())[1]) * 1024;
      const head = await get(server, `/v1/topics/${RUNS}?offset=now`, tok);
      const start = head.headers.get("stream-next-offset").replace(/_\d{20}_j$/, "_00000000000000000000_j");
      for (let i = 0; i < 60; i++) {
        const c = await raw(server);
        c.socket.pause();  // never reads
        const offset = i % 2 === 0 ? "-1" : start;
        c.write(`GET /v1/topics/${RUNS}?offset=${offset} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tok}\r\n\r\n`);
        held.push(c);
      }
      await new Promise((r) => setTimeout(r, 3000));
      const peak = Number(/VmHWM:\s+(\d+)/.exec(status())[1]) * 1024;
      const bound = memoryBound(base, limits);
      console.log(`memory: base ${(base / 2 ** 20).toFixed(1)} MiB, peak ${(peak / 2 ** 20).toFixed(1)} MiB, bound ${(bound / 2 ** 20).toFixed(1)} MiB`);
      assert.ok(peak <= bound, `peak ${peak} above the bound ${bound}`);
      // A client that reads is answered: served, or told to come back.
      const r = await fetch(`${server.base}/v1/topics/${RUNS}?offset=now`, { headers: { Authorization: `Bearer ${tok}` }, signal: AbortSignal.timeout(5000) });
      assert.ok([200, 503].includes(r.status), `status ${r.status}`);
      if (r.status === 503) assert.equal(r.headers.get("retry-after"), "1");
      for (const c of held) c.destroy();
      held.length = 0;
      await eventually(async () => (await get(server, `/v1/topics/${RUNS}?offset=-1`, tok)).status === 200, 10000, "room again");
    } finally {
      for (const c of held) c.destroy();
      await server.stop();
    }
  });
});

describe("oasync serve: pages end at page_bytes, and catch-ups carry an ETag", () => {
  let db;
  let server;
  before(async () => {
    db = createDatabase();
    const payload = (n) => ({ p: "y".repeat(n) });
    write(db, [
      ...Array.from({ length: 10 }, (_, i) => ({ key: `small-${i}`, scope: "org:1", payload: payload(20000) })),
      { key: "huge", scope: "org:1", payload: payload(60000) },
      { key: "after", scope: "org:1", payload: payload(10) },
    ]);
    server = await startServer(db, keys, { config: "serve:\n  limits: {page_bytes: 50000}\n" });
  });
  after(async () => {
    await server.stop();
    db.drop();
  });

  test("a page ends at page_bytes; one event larger than it goes out alone; nothing is skipped", async () => {
    const tok = token(keys);
    const head = await get(server, `/v1/topics/${RUNS}?offset=now`, tok);
    let offset = head.headers.get("stream-next-offset").replace(/_\d{20}_j$/, "_00000000000000000000_j");
    const pages = [];
    for (;;) {
      const r = await get(server, `/v1/topics/${RUNS}?offset=${offset}`, tok);
      assert.equal(r.status, 200);
      const messages = await r.json();
      pages.push(messages.map((m) => m.key.replace("run_summary:", "")));
      offset = r.headers.get("stream-next-offset");
      if (r.headers.get("stream-up-to-date") === "true") break;
    }
    // 20 kB events: pages of three (the third crosses 50 kB); the 60 kB one alone.
    assert.deepEqual(pages, [
      ["small-0", "small-1", "small-2"], ["small-3", "small-4", "small-5"], ["small-6", "small-7", "small-8"],
      ["small-9", "huge"], ["after"],
    ]);
    // The snapshot pages the same way.
    const snapshot = await get(server, `/v1/topics/${RUNS}?offset=-1`, tok);
    const first = await snapshot.json();
    assert.ok(first.filter((m) => m.key).length <= 3, `${first.length} messages`);
  });

  test("ETag on a catch-up; If-None-Match gives 304; another view or range another tag", async () => {
    const tok = token(keys);
    const r1 = await get(server, `/v1/topics/${RUNS}?offset=-1`, tok);
    const tag = r1.headers.get("etag");
    assert.match(tag, /^"[0-9a-f]{32}"$/);
    assert.equal(r1.headers.get("cache-control"), "private, no-cache");
    const again = await fetch(`${server.base}/v1/topics/${RUNS}?offset=-1`, { headers: { Authorization: `Bearer ${tok}`, "If-None-Match": tag } });
    assert.equal(again.status, 304);
    assert.equal(again.headers.get("etag"), tag);
    assert.equal(again.headers.get("stream-next-offset"), r1.headers.get("stream-next-offset"));
    assert.equal(await again.text(), "");
    const other = await fetch(`${server.base}/v1/topics/${RUNS}?offset=-1`, { headers: { Authorization: `Bearer ${token(keys, { org_id: "2" })}`, "If-None-Match": tag } });
    assert.equal(other.status, 200);
    assert.notEqual(other.headers.get("etag"), tag);
    const next = await get(server, `/v1/topics/${RUNS}?offset=${r1.headers.get("stream-next-offset")}`, tok);
    assert.notEqual(next.headers.get("etag"), tag);
    // A change of the bytes in the same range: another tag.
    write(db, [{ key: "small-0", scope: "org:1", payload: { p: "changed" } }]);
    const changed = await fetch(`${server.base}/v1/topics/${RUNS}?offset=-1`, { headers: { Authorization: `Bearer ${tok}`, "If-None-Match": tag } });
    assert.equal(changed.status, 200);
    assert.notEqual(changed.headers.get("etag"), tag);
  });
});
