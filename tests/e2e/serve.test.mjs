// oasync serve, read by the official Durable Streams clients
// (@durable-streams/client and @durable-streams/state), which nobody here
// wrote: materialize, follow, survive a killed server, a purge, bad tokens,
// a dropped connection and a burst. Each test has its own database and
// server, on loopback.
import assert from "node:assert/strict";
import http from "node:http";
import { after, before, describe, test } from "node:test";

import { stream } from "@durable-streams/client";
import { MaterializedState, isControlEvent } from "@durable-streams/state";

import {
  RUNS,
  createDatabase,
  eventually,
  freePort,
  makeKeys,
  oasync,
  snapshotOf,
  startServer,
  token,
  write,
} from "./support.mjs";

const keys = makeKeys();
after(() => keys.remove());

// A client that materializes a topic with MaterializedState, as an app does:
// control messages are not state (a reset clears it), and it remembers every
// version it saw of each key (it asks for them: versions=true), and its last
// offset.
function follow(server, tok, { live = "long-poll", offset = "-1", params } = {}) {
  const state = new MaterializedState();
  const seen = new Map(); // key -> versions in order
  const client = {
    state,
    seen,
    offset,
    upToDate: false,
    resets: 0,
    error: undefined,
    docs: () => new Map(state.getType(RUNS)),
  };
  client.session = stream({
    url: `${server.base}/v1/topics/${RUNS}`,
    headers: { Authorization: `Bearer ${tok}` },
    params: { versions: "true", ...params },
    offset,
    live,
    json: true,
    warnOnHttp: false,
    backoffOptions: { initialDelay: 50, maxDelay: 500, multiplier: 1.5 },
  }).then((res) => {
    res.subscribeJson((batch) => {
      for (const item of batch.items) {
        if (isControlEvent(item)) {
          if (item.headers.control === "reset") {
            client.resets += 1;
            state.clear();
            seen.clear();
          }
          continue;
        }
        state.apply(item);
        const versions = seen.get(item.key) ?? [];
        versions.push(item.headers.version);
        seen.set(item.key, versions);
      }
      client.offset = batch.offset;
      client.upToDate = batch.upToDate;
    });
    res.closed.catch((e) => {
      client.error = e;
    });
    return res;
  });
  client.session.catch((e) => {
    client.error = e;
  });
  client.stop = async () => (await client.session).cancel();
  return client;
}

const sameDocs = (client, expected) => {
  const got = client.docs();
  if (got.size !== expected.size) return false;
  for (const [k, v] of expected) {
    if (JSON.stringify(got.get(k)) !== JSON.stringify(v)) return false;
  }
  return true;
};

// No version of a key arrives twice, or out of order.
function assertNoRepeats(client) {
  for (const [key, versions] of client.seen) {
    for (let i = 1; i < versions.length; i++) {
      assert.ok(versions[i] > versions[i - 1], `${key}: versions ${versions.join(",")}`);
    }
  }
}

// The journal as tenant org:1 sees it, replayed with oasync tail.
function journalOf(db, scope) {
  const r = oasync(["tail", RUNS, "--after", "0", "--format", "ndjson", "--scope", scope], { url: db.url });
  assert.equal(r.status, 0, r.stderr);
  const docs = new Map();
  for (const line of r.stdout.split("\n").filter(Boolean)) {
    const e = JSON.parse(line);
    if (e.op === "delete") docs.delete(e.doc_key);
    else docs.set(e.doc_key, e.payload);
  }
  return docs;
}

function someWrites(n, start = 0) {
  const out = [];
  for (let i = start; i < start + n; i++) {
    out.push({ key: `k${i % 40}`, scope: `org:${(i % 3) + 1}`, payload: { i, note: "é ✓ \"q\"" } });
    if (i % 7 === 0) out.push({ key: `k${(i + 3) % 40}`, delete: true });
  }
  return out;
}

describe("oasync serve with the official clients", () => {
  let db;
  before(() => {
    db = createDatabase();
  });
  after(() => db.drop());

  for (const live of ["long-poll", "sse"]) {
    test(`materializes from -1 as oasync snapshot, then follows live writes (${live})`, async () => {
      write(db, someWrites(60));
      const server = await startServer(db, keys, {
        config: "serve:\n  limits: {snapshot_page_docs: 4, page_events: 5}\n",
      });
      try {
        const client = follow(server, token(keys), { live });
        await eventually(() => client.upToDate && sameDocs(client, snapshotOf(db, "org:1")), 15000,
          "the snapshot");
        // Live: updates, deletes, moves into and out of org:1.
        write(db, someWrites(90, 60));
        write(db, [
          { key: "k1", scope: "org:2", payload: { moved: "out" } },
          { key: "k2", scope: "org:1", payload: { moved: "in" } },
        ]);
        const expected = snapshotOf(db, "org:1");
        assert.deepEqual(journalOf(db, "org:1"), expected);
        await eventually(() => sameDocs(client, expected), 15000, "the live writes");
        assertNoRepeats(client);
        assert.equal(client.error, undefined);
        await client.stop();
      } finally {
        await server.stop();
      }
    });
  }

  test("a server killed mid-stream and started again: the client resumes, no gap, no repeat", async () => {
    const port = await freePort();
    let server = await startServer(db, keys, { port });
    const client = follow(server, token(keys), { live: "long-poll" });
    try {
      await eventually(() => client.upToDate, 15000, "up to date");
      write(db, someWrites(30, 500));
      await eventually(() => sameDocs(client, snapshotOf(db, "org:1")), 15000, "first writes");
      await server.stop("SIGKILL");
      write(db, someWrites(30, 600));
      server = await startServer(db, keys, { port });
      write(db, someWrites(30, 700));
      await eventually(() => sameDocs(client, snapshotOf(db, "org:1")), 20000, "after the restart");
      assertNoRepeats(client);
    } finally {
      await client.stop();
      await server.stop();
    }
  });

  test("a connection dropped mid-catch-up resumes from its offset", async () => {
    write(db, someWrites(200, 1000));
    const server = await startServer(db, keys, {
      config: "serve:\n  limits: {snapshot_page_docs: 3, page_events: 3}\n",
    });
    try {
      const first = follow(server, token(keys), { live: "long-poll" });
      await eventually(() => first.seen.size > 3, 10000, "a few batches");
      await first.stop();
      const resumed = follow(server, token(keys), { live: "long-poll", offset: first.offset });
      // The second client starts with what the first materialized.
      for (const [k, v] of first.docs()) resumed.state.apply({ type: RUNS, key: k, value: v, headers: { operation: "insert" } });
      await eventually(() => resumed.upToDate && sameDocs(resumed, snapshotOf(db, "org:1")), 15000,
        "the rest");
      await resumed.stop();
    } finally {
      await server.stop();
    }
  });

  test("a purge below the client: 410 naming why, or with on_stale=reset a reset that converges", async () => {
    const server = await startServer(db, keys);
    try {
      const tok = token(keys);
      const head = await fetch(`${server.base}/v1/topics/${RUNS}`, { method: "HEAD", headers: { Authorization: `Bearer ${tok}` } });
      const old = head.headers.get("stream-next-offset");
      write(db, someWrites(20, 2000));
      const purge = oasync(["purge", "--topic", RUNS, "--older-than", "0s", "--keep-last", "0"], { url: db.url });
      assert.equal(purge.status, 0, purge.stderr);
      // Purge notifies: the server learns of the new floor at once.
      await eventually(async () => {
        const h = await fetch(`${server.base}/v1/topics/${RUNS}`, { method: "HEAD", headers: { Authorization: `Bearer ${tok}` } });
        return Number(h.headers.get("oasync-floor")) > 0;
      }, 5000, "the server to see the purge");
      const gone = await fetch(`${server.base}/v1/topics/${RUNS}?offset=${old}`, { headers: { Authorization: `Bearer ${tok}` } });
      assert.equal(gone.status, 410);
      assert.equal(gone.headers.get("oasync-stale-reason"), "retention_floor_breach");
      const body = await gone.json();
      assert.equal(body.reason, "retention_floor_breach");
      assert.ok(body.floor > 0 && body.head >= body.floor);
      // The official client surfaces it; the app restarts at -1.
      const stale = follow(server, tok, { offset: old });
      await eventually(() => stale.error !== undefined, 10000, "the 410");
      assert.equal(stale.error.status, 410);
      // Opt-in: a reset control, then a fresh snapshot; no loop.
      const reset = follow(server, tok, { offset: old, params: { on_stale: "reset" } });
      await eventually(() => reset.upToDate && sameDocs(reset, snapshotOf(db, "org:1")), 15000,
        "convergence through reset");
      assert.equal(reset.resets, 1);
      await reset.stop();
    } finally {
      await server.stop();
    }
  });

  test("a burst of 10,000 updates: the client keeps up, the server's memory stays bounded", async () => {
    const server = await startServer(db, keys);
    try {
      const client = follow(server, token(keys), { live: "sse" });
      await eventually(() => client.upToDate, 15000, "up to date");
      const burst = [];
      for (let i = 0; i < 10000; i++) burst.push({ key: `b${i % 500}`, scope: "org:1", payload: { i } });
      write(db, burst);
      await eventually(() => sameDocs(client, snapshotOf(db, "org:1")), 60000, "the burst");
      assertNoRepeats(client);
      const rss = server.rss();
      assert.ok(rss < 256 * 1024 * 1024, `peak RSS ${rss}`);
      await client.stop();
    } finally {
      await server.stop();
    }
  });
});

describe("oasync serve: auth and tenants", () => {
  let db;
  let hs;
  let rs;
  let es;
  before(async () => {
    db = createDatabase();
    write(db, [
      { key: "mine", scope: "org:1", payload: { org: 1 } },
      { key: "theirs", scope: "org:2", payload: { org: 2 } },
    ]);
    hs = await startServer(db, keys, { config: "serve:\n  limits: {revocation_poll_ms: 200}\n" });
    rs = await startServer(db, keys, { algorithm: "RS256" });
    es = await startServer(db, keys, { algorithm: "ES256" });
  });
  after(async () => {
    await Promise.all([hs.stop(), rs.stop(), es.stop()]);
    db.drop();
  });

  const get = (server, path, tok) =>
    fetch(`${server.base}${path}`, tok === undefined ? {} : { headers: { Authorization: `Bearer ${tok}` } });

  test("each algorithm accepts its own tokens", async () => {
    assert.equal((await get(hs, `/v1/topics/${RUNS}?offset=now`, token(keys))).status, 200);
    assert.equal((await get(rs, `/v1/topics/${RUNS}?offset=now`, token(keys, {}, { alg: "RS256" }))).status, 200);
    assert.equal((await get(es, `/v1/topics/${RUNS}?offset=now`, token(keys, {}, { alg: "ES256" }))).status, 200);
    // EventSource cannot set headers: the query parameter.
    assert.equal((await get(hs, `/v1/topics/${RUNS}?offset=now&access_token=${token(keys)}`)).status, 200);
  });

  test("missing, expired and badly signed tokens get 401", async () => {
    const missing = await get(hs, `/v1/topics/${RUNS}?offset=now`);
    assert.equal(missing.status, 401);
    assert.match(missing.headers.get("www-authenticate"), /invalid_token/);
    const expired = token(keys, { exp: Math.floor(Date.now() / 1000) - 3600 });
    assert.equal((await get(hs, `/v1/topics/${RUNS}?offset=now`, expired)).status, 401);
    const forged = token(keys, {}, { secretOverride: "a different secret of at least 32 bytes!" });
    assert.equal((await get(hs, `/v1/topics/${RUNS}?offset=now`, forged)).status, 401);
    const none = token(keys, {}, { alg: "none", sign: "none" });
    assert.equal((await get(hs, `/v1/topics/${RUNS}?offset=now`, none)).status, 401);
  });

  test("the algorithm attack: an HS256 token keyed with the server's RSA public key is refused", async () => {
    const pem = keys.rsa.publicKey.export({ type: "spki", format: "pem" });
    const attack = token(keys, {}, { alg: "HS256", sign: "HS256", secretOverride: pem });
    const r = await get(rs, `/v1/topics/${RUNS}?offset=now`, attack);
    assert.equal(r.status, 401);
    assert.match((await r.json()).message, /not RS256/);
    const metrics = await (await fetch(`${rs.base}/metrics`)).text();
    assert.match(metrics, /oasync_serve_auth_refused_total\{reason="algorithm"\} 1/);
  });

  test("a topic outside the token's scopes gets 403; another org's doc 404", async () => {
    const narrow = token(keys, { scopes: ["runtime.notifications"] });
    assert.equal((await get(hs, `/v1/topics/${RUNS}?offset=-1`, narrow)).status, 403);
    const mine = await get(hs, "/sync/v1/doc/run_summary:mine", token(keys));
    assert.equal(mine.status, 200);
    const doc = await mine.json();
    assert.deepEqual(doc.value, { org: 1 });
    assert.match(doc.offset, /^\d{16}_\d{20}_j$/);
    assert.equal((await get(hs, "/sync/v1/doc/run_summary:theirs", token(keys))).status, 404);
    assert.equal((await get(hs, "/sync/v1/doc/run_summary:nope", token(keys))).status, 404);
    // And its stream never shows the other org's doc.
    const all = await (await get(hs, `/v1/topics/${RUNS}?offset=-1`, token(keys))).json();
    assert.deepEqual(all.filter((m) => m.key).map((m) => m.key), ["run_summary:mine"]);
  });

  test("writes get 405 with Allow", async () => {
    const r = await fetch(`${hs.base}/v1/topics/${RUNS}`, { method: "POST", body: "[]", headers: { Authorization: `Bearer ${token(keys)}` } });
    assert.equal(r.status, 405);
    assert.equal(r.headers.get("allow"), "GET, HEAD, OPTIONS");
  });

  test("a revoked session's stream ends within seconds, and its tokens are refused", async () => {
    const tok = token(keys, { session_id: "to-revoke" });
    const client = follow(hs, tok, { live: "sse" });
    await eventually(() => client.upToDate, 10000, "up to date");
    const started = Date.now();
    assert.equal(oasync(["sessions", "revoke", "to-revoke", "--reason", "test"], { url: db.url }).status, 0);
    await eventually(async () => (await get(hs, `/v1/topics/${RUNS}?offset=now`, tok)).status === 401, 5000,
      "the revocation");
    await eventually(() => client.error !== undefined, 10000, "the stream to end");
    assert.ok(Date.now() - started < 10000);
    assert.equal(client.error.status, 401);
  });

  test("a token's stream ends at its expiry", async () => {
    // Valid for 2 more seconds: exp is past, but within the 30-second leeway.
    const tok = token(keys, { exp: Math.floor(Date.now() / 1000) - 28, session_id: "short" });
    const started = Date.now();
    const r = await get(hs, `/v1/topics/${RUNS}?offset=now&live=long-poll`, tok);
    // The long-poll answers by the expiry, not after the full 20 s.
    assert.ok([204, 401].includes(r.status), `status ${r.status}`);
    assert.ok(Date.now() - started < 5000);
  });
});

describe("oasync serve: the surface around the streams", () => {
  let db;
  let server;
  before(async () => {
    db = createDatabase();
    write(db, [{ key: "a", scope: "org:1", payload: { v: 1 } }]);
    server = await startServer(db, keys, {
      config:
        'serve:\n  cors_origins: ["https://app.example"]\n' +
        "  limits: {max_request_bytes: 2048, drain_seconds: 5}\n",
    });
  });
  after(async () => {
    await server.stop();
    db.drop();
  });
  const auth = () => ({ Authorization: `Bearer ${token(keys)}` });

  test("HEAD gives the head's offset and the topic's position", async () => {
    const r = await fetch(`${server.base}/v1/topics/${RUNS}`, { method: "HEAD", headers: auth() });
    assert.equal(r.status, 200);
    assert.match(r.headers.get("stream-next-offset"), /^\d{16}_0{19}1_j$/);
    assert.equal(r.headers.get("oasync-head"), "1");
    assert.equal(r.headers.get("oasync-floor"), "0");
  });

  test("an offset the server never issued is 400; an unknown topic 404", async () => {
    const bad = await fetch(`${server.base}/v1/topics/${RUNS}?offset=12345`, { headers: auth() });
    assert.equal(bad.status, 400);
    assert.match((await bad.json()).message, /was not issued by this server/);
    const t = token(keys, { scopes: ["runtime.nope"] });
    const unknown = await fetch(`${server.base}/v1/topics/runtime.nope?offset=-1`, { headers: { Authorization: `Bearer ${t}` } });
    assert.equal(unknown.status, 404);
    // A snapshot offset with a key no doc can have (not UTF-8; a NUL) is the
    // client's mistake, not the database's: 400, never 503.
    for (const key of ["6bff", "6b00"]) {
      const crafted = await fetch(`${server.base}/v1/topics/${RUNS}?offset=0000000000000001_00000000000000000001_i000000010_${key}`, { headers: auth() });
      assert.equal(crafted.status, 400, key);
    }
    // A topic or doc key that is not UTF-8, or holds a NUL, never reaches the
    // database: 400 with a JSON answer (before, a 503 with the SQL error text,
    // or a key cut short at the NUL).
    const odd = await fetch(`${server.base}/v1/topics/run%FF?offset=-1`, { headers: auth() });
    assert.equal(odd.status, 400);
    assert.match((await odd.json()).message, /topic in the path is not UTF-8 text without NUL/);
    for (const key of ["%ff%fe", "run_summary:a0%00zz"]) {
      const doc = await fetch(`${server.base}/sync/v1/doc/${key}`, { headers: auth() });
      assert.equal(doc.status, 400, key);
      const body = await doc.json();
      assert.match(body.message, /doc key in the path is not UTF-8 text without NUL/, key);
      assert.doesNotMatch(JSON.stringify(body), /SQLSTATE|postgres|host=/i, key);
    }
  });

  test("wait_for holds the answer until the server has read the caller's write", async () => {
    const head = await fetch(`${server.base}/v1/topics/${RUNS}?offset=now`, { headers: auth() });
    const from = head.headers.get("stream-next-offset");
    const answered = oasync(["sink", "--input", "-", "--results"], {
      url: db.url,
      input: JSON.stringify({ topic: RUNS, doc_key: "run_summary:w", scope: "org:1", payload: { w: 1 } }) + "\n",
    });
    const watermark = JSON.parse(answered.stdout.trim()).watermark;
    const r = await fetch(`${server.base}/v1/topics/${RUNS}?offset=${from}&wait_for=${watermark}`, { headers: auth() });
    assert.equal(r.status, 200);
    const messages = await r.json();
    assert.deepEqual(messages.map((m) => m.key), ["run_summary:w"]);
  });

  test("a long-poll that began before the server first looked at the topic still wakes", async () => {
    // No periodic look: the write's notification is the hub's first look at
    // the topic, after the long-poll read the database and began to wait.
    const quiet = await startServer(db, keys, { config: "serve:\n  limits: {poll_ms: 60000, revocation_poll_ms: 60000}\n" });
    try {
      const head = await fetch(`${quiet.base}/v1/topics/${RUNS}?offset=now`, { headers: auth() });
      const from = head.headers.get("stream-next-offset");
      const started = Date.now();
      const poll = fetch(`${quiet.base}/v1/topics/${RUNS}?offset=${from}&live=long-poll`, { headers: auth() });
      await new Promise((r) => setTimeout(r, 200));
      write(db, [{ key: "first-look", scope: "org:1", payload: { v: 1 } }]);
      const r = await poll;
      assert.equal(r.status, 200);
      assert.deepEqual((await r.json()).map((m) => m.key), ["run_summary:first-look"]);
      assert.ok(Date.now() - started < 10000, `answered after ${Date.now() - started} ms`);
    } finally {
      await quiet.stop();
    }
  });

  test("CORS: a preflight from an allowed origin, and none for others", async () => {
    const ok = await fetch(`${server.base}/v1/topics/${RUNS}`, { method: "OPTIONS", headers: { Origin: "https://app.example" } });
    assert.equal(ok.status, 204);
    assert.equal(ok.headers.get("access-control-allow-origin"), "https://app.example");
    assert.match(ok.headers.get("access-control-allow-headers"), /Authorization/);
    const get = await fetch(`${server.base}/v1/topics/${RUNS}?offset=now`, { headers: { ...auth(), Origin: "https://app.example" } });
    assert.match(get.headers.get("access-control-expose-headers"), /Stream-Next-Offset/);
    const other = await fetch(`${server.base}/v1/topics/${RUNS}`, { method: "OPTIONS", headers: { Origin: "https://evil.example" } });
    assert.equal(other.headers.get("access-control-allow-origin"), null);
  });

  test("limits: a request head too large is 431; connections beyond the limit get 503", async () => {
    const big = await fetch(`${server.base}/v1/topics/${RUNS}?offset=now`, { headers: { ...auth(), "X-Pad": "x".repeat(4000) } });
    assert.equal(big.status, 431);
    // A server of its own (a new origin: no pooled connections): three
    // long-polls hold its three connections; the fourth is refused.
    const small = await startServer(db, keys, { config: "serve:\n  limits: {max_connections: 3}\n" });
    const controller = new AbortController();
    try {
      const held = [];
      for (let i = 0; i < 3; i++) {
        held.push(fetch(`${small.base}/v1/topics/${RUNS}?offset=now&live=long-poll`, { headers: auth(), signal: controller.signal }).catch(() => null));
      }
      await new Promise((r) => setTimeout(r, 500));
      const refused = await fetch(`${small.base}/v1/topics/${RUNS}?offset=now`, { headers: auth() });
      assert.equal(refused.status, 503);
      assert.equal(refused.headers.get("retry-after"), "1");
      controller.abort();
      await Promise.all(held);
    } finally {
      await small.stop();
    }
  });

  test("healthz and metrics", async () => {
    await eventually(async () => (await fetch(`${server.base}/healthz`)).status === 200, 5000, "health");
    const metrics = await (await fetch(`${server.base}/metrics`)).text();
    for (const name of ["oasync_serve_connections", "oasync_serve_wakes_total", "oasync_serve_wake_queries_total",
      "oasync_serve_messages_total", "oasync_serve_delivery_lag_seconds", "oasync_serve_slow_subscribers_total"]) {
      assert.match(metrics, new RegExp(`^${name} `, "m"), name);
    }
  });

  test("shutdown does not wait for idle keep-alive connections", async () => {
    const other = await startServer(db, keys, { config: "serve:\n  limits: {drain_seconds: 30}\n" });
    const agent = new http.Agent({ keepAlive: true });
    try {
      const { port } = new URL(other.base);
      const status = await new Promise((resolve, reject) => {
        http.get({ host: "127.0.0.1", port, path: "/metrics", agent }, (res) => {
          res.resume();
          res.on("end", () => resolve(res.statusCode));
        }).on("error", reject);
      });
      assert.equal(status, 200);
      assert.equal(Object.values(agent.freeSockets).flat().length, 1);  // open, idle
      const started = Date.now();
      await other.stop("SIGTERM");
      assert.ok(Date.now() - started < 5000, `exit took ${Date.now() - started} ms`);
    } finally {
      agent.destroy();
      await other.stop("SIGKILL");
    }
  });

  test("shutdown answers a waiting long-poll, then exits", async () => {
    const other = await startServer(db, keys);
    const poll = fetch(`${other.base}/v1/topics/${RUNS}?offset=now&live=long-poll`, { headers: auth() });
    await new Promise((r) => setTimeout(r, 300));
    const started = Date.now();
    await other.stop("SIGTERM");
    const r = await poll;
    assert.equal(r.status, 204);
    assert.ok(Date.now() - started < 5000);
    assert.match(other.log(), /stopped/);
  });
});
