// oasync serve under the attacks of the adversarial review (issue 20): each
// test reproduces one defect and asserts the fixed behaviour.
import assert from "node:assert/strict";
import { connect, createServer } from "node:net";
import { after, before, describe, test } from "node:test";

import { RUNS, createDatabase, eventually, makeKeys, oasync, startServer, token, write } from "./support.mjs";

const keys = makeKeys();
after(() => keys.remove());

const get = (server, path, tok) =>
  fetch(`${server.base}${path}`, tok === undefined ? {} : { headers: { Authorization: `Bearer ${tok}` } });

// A TCP relay on loopback to `target` (host, port) that refuses every
// connection while `down` is set: the database as the server sees it, taken
// away and given back.
async function relay(target) {
  const sockets = new Set();
  const state = { down: true };
  const server = createServer((client) => {
    if (state.down) {
      client.destroy();
      return;
    }
    const upstream = connect(target.port, target.host);
    sockets.add(client).add(upstream);
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("error", end).on("close", end).pipe(upstream);
    upstream.on("error", end).on("close", end).pipe(client);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: server.address().port,
    up: () => {
      state.down = false;
    },
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
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
      const server = await startServer(db, keys);
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
    const u = new URL(db.url);
    const database = await relay({ host: u.hostname || "127.0.0.1", port: Number(u.port || 5432) });
    const through = new URL(db.url);
    through.hostname = "127.0.0.1";
    through.port = String(database.port);
    const server = await startServer({ url: through.toString() }, keys);
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
