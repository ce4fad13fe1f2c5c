// oasync serve's Phoenix Channels endpoint (sync:v1) read by a raw ws
// client (and raw TCP), for what the official phoenix client would never
// send or do: odd handshakes, bad frames, clients that never read or never
// speak. channel.test.mjs has the official client's tests. Each test has its
// own database and server, on loopback.
import assert from "node:assert/strict";
import { connect } from "node:net";
import { after, describe, test } from "node:test";

import WebSocket from "ws";

import { channelScenario } from "./channel-world.mjs";
import { RUNS, eventually, makeKeys, oasync, token } from "./support.mjs";
import { TENANT, burst, limits, positionOf, sink } from "./writes.mjs";

const keys = makeKeys();
after(() => keys.remove());
const scenario = channelScenario(keys);

function handshake(port, { query = "vsn=2.0.0", tok, protocols } = {}) {
  const offered = protocols ?? (tok === undefined
    ? ["phoenix"]
    : ["phoenix", `base64url.bearer.phx.${Buffer.from(tok).toString("base64").replace(/=/g, "")}`]);
  return new Promise((resolve) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/sync/v1/socket/websocket?${query}`, offered);
    let headers;
    ws.on("upgrade", (res) => {
      headers = res.headers;
    });
    ws.on("open", () => resolve({ ws, protocol: ws.protocol, headers }));
    ws.on("unexpected-response", (req, res) => {
      res.resume();
      resolve({ status: res.statusCode });
      req.destroy();
    });
    ws.on("error", (error) => resolve({ error }));
  });
}

// The frames a raw socket receives, and its close {code, reason}.
function record(ws) {
  const frames = [];
  ws.on("message", (data, binary) => {
    if (binary) return frames.push(data);
    try {
      frames.push(JSON.parse(data.toString("utf8")));
    } catch {
      frames.push(`not JSON: ${data.toString("utf8")}`);
    }
  });
  const closed = new Promise((resolve) => ws.on("close", (code, reason) => resolve({ code, reason: reason.toString("utf8") })));
  return { frames, closed };
}

// A raw TCP connection upgraded by hand (with a valid token), for a client
// that stops reading: resolves once the 101 has arrived.
async function rawUpgrade(port) {
  const sock = connect(port, "127.0.0.1");
  await new Promise((resolve) => sock.once("connect", resolve));
  const protocol = `base64url.bearer.phx.${Buffer.from(token(keys)).toString("base64").replace(/=/g, "")}`;
  sock.write(
    "GET /sync/v1/socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n" +
      "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
      `Sec-WebSocket-Protocol: phoenix, ${protocol}\r\n\r\n`,
  );
  const head = await new Promise((resolve) => sock.once("data", (d) => resolve(d.toString("latin1"))));
  assert.match(head, /^HTTP\/1\.1 101/);
  return sock;
}

// `message` as a client's masked text frame (under 126 bytes).
function maskedText(message) {
  const text = Buffer.from(JSON.stringify(message));
  assert.ok(text.length < 126);
  const mask = Buffer.from([9, 8, 7, 6]);
  return Buffer.concat([Buffer.from([0x81, 0x80 | text.length]), mask, Buffer.from(text.map((b, i) => b ^ mask[i % 4]))]);
}

describe("sync:v1 socket: hostile and odd input (raw ws)", () => {
  test("handshake: subprotocol echo, vsn, token place and validity", async () => {
    await scenario(async ({ server: start }) => {
      const server = await start();
      const ok = await handshake(server.port, { tok: token(keys) });
      assert.equal(ok.protocol, "phoenix");
      assert.equal(ok.headers["sec-websocket-protocol"], "phoenix");
      ok.ws.close();
      assert.deepEqual(await handshake(server.port, { tok: token(keys), query: "" }), { status: 400 });
      const plain = await fetch(`${server.base}/sync/v1/socket/websocket?vsn=2.0.0`);
      assert.equal(plain.status, 426);
      assert.equal(plain.headers.get("upgrade"), "websocket");
      // A token in the query string (which proxies log) is refused, under
      // phoenix's usual name and under the HTTP side's (auth.query_parameter).
      for (const name of ["token", "access_token"]) {
        assert.deepEqual(await handshake(server.port, { query: `vsn=2.0.0&${name}=${token(keys)}` }), { status: 400 }, name);
      }
      assert.deepEqual(await handshake(server.port, {}), { status: 401 });
      const expired = token(keys, { exp: Math.floor(Date.now() / 1000) - 3600 });
      assert.deepEqual(await handshake(server.port, { tok: expired }), { status: 401 });
      const forged = token(keys, {}, { secretOverride: "a different secret of at least 32 bytes!" });
      assert.deepEqual(await handshake(server.port, { tok: forged }), { status: 401 });
    });
  });

  test("a heartbeat gets its reply; a frame that is not JSON closes with bad_frame (1002)", async () => {
    await scenario(async ({ server: start }) => {
      const server = await start();
      const { ws } = await handshake(server.port, { tok: token(keys) });
      const { frames, closed } = record(ws);
      ws.send(JSON.stringify([null, "1", "phoenix", "heartbeat", {}]));
      await eventually(() => frames.length >= 1, 20000, "the heartbeat's reply");
      assert.deepEqual(frames[0], [null, "1", "phoenix", "phx_reply", { status: "ok", response: {} }]);
      ws.send("this is not JSON");
      const { code, reason } = await closed;
      assert.equal(code, 1002);
      assert.ok(reason.startsWith("bad_frame"), reason);
      const notice = frames.find((f) => Array.isArray(f) && f[3] === "disconnect");
      assert.deepEqual(notice.slice(0, 4), [null, null, "phoenix", "disconnect"]);
      assert.equal(notice[4].reason, "bad_frame");
    });
  });

  test("a binary frame closes with bad_frame (1003); a frame above max_request_bytes with 1009", async () => {
    await scenario(async ({ server: start }) => {
      const server = await start({ config: limits({ max_request_bytes: 4096 }) });
      const first = await handshake(server.port, { tok: token(keys) });
      const one = record(first.ws);
      first.ws.send(Buffer.from([0, 1, 1, 1, 49, 116, 101]), { binary: true });
      const closed = await one.closed;
      assert.equal(closed.code, 1003);
      assert.equal(closed.reason, "bad_frame");
      const notice = one.frames.find((f) => Array.isArray(f) && f[3] === "disconnect");
      assert.match(notice[4].message, /^frame 1: binary frames are not read here/);
      const second = await handshake(server.port, { tok: token(keys) });
      const two = record(second.ws);
      second.ws.send(JSON.stringify([null, "1", "phoenix", "heartbeat", { pad: "x".repeat(5000) }]));
      assert.equal((await two.closed).code, 1009);
      // The server goes on: a third socket is served.
      const third = await handshake(server.port, { tok: token(keys) });
      const three = record(third.ws);
      third.ws.send(JSON.stringify([null, "7", "phoenix", "heartbeat", {}]));
      await eventually(() => three.frames.length >= 1, 20000, "the heartbeat's reply");
      assert.deepEqual(three.frames[0], [null, "7", "phoenix", "phx_reply", { status: "ok", response: {} }]);
      third.ws.close();
    });
  });

  test("a client that joins and then never reads is closed as a slow consumer, and counted", async () => {
    await scenario(async ({ db, server: start }) => {
      const server = await start({
        config: limits({ send_timeout_seconds: 2, socket_queue_bytes: 65536, page_bytes: 16384 }),
      });
      // A raw TCP client: the upgrade and one join by hand, then no reading
      // at all (its receive buffer, and then the server's send buffer, fill).
      const sock = await rawUpgrade(server.port);
      sock.write(maskedText(["1", "1", `sync:v1:${RUNS}`, "phx_join", {}]));
      sock.pause();
      let ended = false;
      sock.on("close", () => { ended = true; });
      // 24 MiB of updates for the tenant, far beyond what the socket buffers hold.
      const pad = "p".repeat(3000);
      for (let round = 0; round < 8; round++) {
        const lines = [];
        for (let i = 0; i < 1000; i++) {
          lines.push(JSON.stringify({ topic: RUNS, doc_key: `run_summary:s${i}`, scope: TENANT,
            payload: { round, pad } }));
        }
        const r = oasync(["sink", "--input", "-"], { url: db.url, input: lines.join("\n") + "\n" });
        assert.equal(r.status, 0, r.stderr);
      }
      await eventually(async () => {
        const metrics = await (await fetch(`${server.base}/metrics`)).text();
        return /oasync_serve_sockets_closed_total\{reason="slow_consumer"\} 1\b/.test(metrics) &&
          /oasync_serve_sockets 0\b/.test(metrics) && /oasync_serve_socket_queued_bytes 0\b/.test(metrics);
      }, 30000, "the slow consumer closed and counted, its queue released");
      // Reading again, the client gets what the kernel held, then the end.
      sock.on("error", () => {});
      sock.resume();
      await eventually(() => ended, 20000, "the connection to end");
      const metrics = await (await fetch(`${server.base}/metrics`)).text();
      assert.match(metrics, /oasync_serve_response_bytes 0\b/);
    });
  });

  test("joining a topic again replaces the earlier join: its phx_close, then pushes for the new join only", async () => {
    await scenario(async ({ db, server: start }) => {
      sink(db, [{ key: "r1", scope: TENANT }]);
      const server = await start();
      const { ws } = await handshake(server.port, { tok: token(keys) });
      const { frames } = record(ws);
      ws.send(JSON.stringify(["1", "1", `sync:v1:${RUNS}`, "phx_join", {}]));
      ws.send(JSON.stringify(["2", "2", `sync:v1:${RUNS}`, "phx_join", {}]));
      await eventually(() => frames.some((f) => Array.isArray(f) && f[1] === "2" && f[3] === "phx_reply"), 20000, "the second join's reply");
      sink(db, [{ key: "r2", scope: TENANT }]);
      // The second join's snapshot, then the new write: binary pushes.
      await eventually(() => frames.filter((f) => Buffer.isBuffer(f)).length >= 2, 20000, "the pushes");
      const text = frames.filter((f) => Array.isArray(f));
      const closeAt = text.findIndex((f) => f[3] === "phx_close");
      assert.deepEqual(text[closeAt], ["1", "1", `sync:v1:${RUNS}`, "phx_close", {}]);
      assert.ok(closeAt < text.findIndex((f) => f[1] === "2"), "the old join closes before the new one is answered");
      // A binary push's join_ref: its length is byte 1, the string follows the 4-byte head.
      const refs = frames.filter((f) => Buffer.isBuffer(f)).map((b) => b.subarray(4, 4 + b[1]).toString());
      const afterClose = refs.slice(refs.length - 2);
      assert.deepEqual(afterClose, ["2", "2"]);
      ws.close();
    });
  });

  test("a watermark beyond 2^63-1 is bad_params, and the socket goes on", async () => {
    await scenario(async ({ db, server: start }) => {
      const server = await start();
      const { ws } = await handshake(server.port, { tok: token(keys) });
      const { frames } = record(ws);
      const epoch = positionOf(db, RUNS).epoch;
      for (const watermark of ["9999999999999999999", "9223372036854775808", "+5", " 5", "5 "]) {
        frames.length = 0;
        ws.send(JSON.stringify(["1", "1", `sync:v1:${RUNS}`, "phx_join", { epoch, watermark }]));
        await eventually(() => frames.length >= 1, 20000, "the join's reply");
        assert.equal(frames[0][3], "phx_reply", watermark);
        assert.equal(frames[0][4].status, "error", watermark);
        assert.equal(frames[0][4].response.reason, "bad_params", watermark);
      }
      frames.length = 0;
      ws.send(JSON.stringify([null, "2", "phoenix", "heartbeat", {}]));
      await eventually(() => frames.length >= 1, 20000, "the heartbeat's reply");
      assert.deepEqual(frames[0], [null, "2", "phoenix", "phx_reply", { status: "ok", response: {} }]);
      ws.close();
    });
  });

  test("a client that sends frames and never reads their replies is read no further, then closed", async () => {
    await scenario(async ({ server: start }) => {
      const server = await start({ config: limits({ send_timeout_seconds: 2, socket_queue_bytes: 65536 }) });
      const sock = await rawUpgrade(server.port);
      sock.pause();
      // Each of these small frames asks for a larger reply (unmatched_topic).
      const burst = Buffer.concat(Array(20000).fill(maskedText([null, "1", "x", "y", {}])));
      let written = 0;
      sock.on("error", () => {});
      for (let i = 0; i < 20 && !sock.destroyed; i++) {
        if (sock.write(burst)) written += burst.length;
        await new Promise((r) => setTimeout(r, 100));
      }
      let peak = 0;
      await eventually(async () => {
        const metrics = await (await fetch(`${server.base}/metrics`)).text();
        const queued = Number(/oasync_serve_socket_queued_bytes (\d+)/.exec(metrics)[1]);
        peak = Math.max(peak, queued);
        return /oasync_serve_sockets_closed_total\{reason="slow_consumer"\} 1\b/.test(metrics) &&
          /oasync_serve_sockets 0\b/.test(metrics);
      }, 30000, "the socket closed as a slow consumer");
      // The queue held at most its bound and one reply more.
      assert.ok(peak <= 65536 + 200, `queued ${peak} bytes`);
      assert.ok(written > 0);
      sock.destroy();
    });
  });

  test("a socket that sends nothing for channel_idle_seconds is closed: idle (1001)", async () => {
    await scenario(async ({ server: start }) => {
      const server = await start({ config: limits({ channel_idle_seconds: 1 }) });
      const { ws } = await handshake(server.port, { tok: token(keys) });
      const { frames, closed } = record(ws);
      assert.deepEqual(await closed, { code: 1001, reason: "idle" });
      const notice = frames.find((f) => Array.isArray(f) && f[3] === "disconnect");
      assert.deepEqual(notice.slice(0, 4), [null, null, "phoenix", "disconnect"]);
      assert.equal(notice[4].reason, "idle");
    });
  });
});
