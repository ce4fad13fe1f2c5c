// The torture run's delivery clients (tests/torture/delivery.cpp starts this
// file): several followers in one process, each reading one topic of
// `oasync serve` as one tenant, and writing what it received, response by
// response, as NDJSON into its own file. The driver checks those files; this
// file decides nothing. A follower reads either a Durable Stream with the
// official @durable-streams/client (long-poll or SSE, with or without
// on_stale=reset), or one channel of a sync:v1 socket with the official
// phoenix client (live "channel"): the followers that name the same socket
// share one WebSocket, one channel per topic, as an app would.
//
//   node torture-follower.mjs CONFIG.json
//
// CONFIG: {secretFile, followers: [{name, url, topic, org, live, onStale,
// out, sessionFile, tokenSeconds: [min, max]}], sabotage?: {target, armAfterMs,
// logFile}}; with sabotage, the channel follower named target leaves one
// update out of the first batch line it writes armAfterMs after the start
// (and says so in logFile), so that the run shows its checks notice; a
// channel follower has
// live "channel", url the socket's (ws://HOST:PORT/sync/v1/socket), socket
// (its name) and encoding ("protobuf" or "json"), and the followers of one
// socket share its sessionFile, tokenSeconds and org.
//
// Tokens are HS256 JWTs minted here with the server's secret, short-lived
// (tokenSeconds), each with a new session_id written to sessionFile (the
// driver revokes it with `oasync sessions revoke`). A refused token (401)
// gets a fresh one; the stream resumes from the last offset. A socket mints
// one at every connect (phoenix calls authToken each time), for all its
// topics; a socket ended as unauthorized reconnects with it.
//
// stdin: one line "finish TOPIC EPOCH_COUNTER HEAD EPOCH" per topic: a
// follower of TOPIC writes its final state and stops once it holds an offset
// of that epoch at or past HEAD. When every follower is done, the process
// exits.
//
// Lines written (one JSON object each):
//   {"k":"s","o":OFFSET,"sid":SESSION}                   a stream session starts
//   {"k":"b","f":FROM,"o":TO,"u":UP_TO_DATE,"m":[...]}   one response (or SSE
//       data+control): m holds [key, operation, version, payload.sc] per change
//       and ["!CONTROL"] per control message
//   {"k":"e","status":S,"reason":R,"floor":F,"head":H,"epoch":E,"o":OFFSET,"msg":M}
//       the session ended with an error (410, 401, ...); status 0: ended without one
//   {"k":"final","o":OFFSET,"state":{KEY:[version, value]}}
// A channel follower writes the same lines, with these differences:
//   - an offset is {"e": EPOCH, "w": "WATERMARK"} (a position of the
//     channel: the driver maps the epoch to its counter), or "-1";
//   - "s": a join (phoenix rejoins on its own), from the position it sends;
//   - "b": one batch push's updates (operation "upsert" or "delete"), from
//     the position before it to the batch's; a whole snapshot (header to
//     end, over as many batches as it took) is one line from "-1" with the
//     controls snapshot-start and snapshot-end, its docs as "insert" (or
//     "delete" for a deleted one); a heartbeat that moves the position is a
//     line without messages;
//   - "e" 410: a stale notice (its reason in the driver's words, floor, head,
//     epoch, and the stale position); "e" 401: the socket was ended as
//     unauthorized (revoked or expired), status 0 for any other close.
import { createHmac } from "node:crypto";
import { appendFileSync, closeSync, openSync, readFileSync, writeFileSync, writeSync } from "node:fs";
import { createInterface } from "node:readline";
import { stream } from "@durable-streams/client";
import { Socket } from "phoenix";
import WebSocket from "ws";

import { ErrorCode, Op, StaleReason, decodeServerMessage, serverMessageFromJson } from "./sync-proto.mjs";

// The query parameter that asks the server for headers.version on each
// change message (sent always; a server that sends versions anyway ignores it).
const VERSIONS_PARAM = "versions";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const secret = readFileSync(config.secretFile, "utf8").replace(/\n$/, "");
const b64url = (data) => Buffer.from(data).toString("base64url");

// A fresh token for `f` (a follower, or a socket with `topics`).
function mint(f) {
  f.sessions += 1;
  const sid = `${f.name}-s${f.sessions}`;
  const [lo, hi] = f.tokenSeconds;
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    sub: f.name,
    org_id: String(f.org),
    session_id: sid,
    scopes: f.topics ?? [f.topic],
    exp: now + lo + Math.floor(Math.random() * (hi - lo + 1)),
  };
  const signed = `${b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }))}.${b64url(JSON.stringify(claims))}`;
  const signature = createHmac("sha256", secret).update(signed).digest();
  writeFileSync(f.sessionFile, sid);
  return { sid, token: `${signed}.${b64url(signature)}` };
}

// A journal offset's epoch counter and watermark (server/src/offset.hpp);
// null for a snapshot offset.
function journal(offset) {
  const m = /^(\d{16})_(\d{20})_j$/.exec(offset ?? "");
  return m ? { epoch: BigInt(m[1]), watermark: BigInt(m[2]) } : null;
}

function record(f, line) {
  writeSync(f.fd, JSON.stringify(line) + "\n");
}

function done(f) {
  if (!f.target || f.finished) return false;
  if (f.live === "channel") {
    const p = f.position;
    return p !== undefined && p.epoch === f.target.epochId && p.watermark >= f.target.head;
  }
  const j = journal(f.offset);
  return j !== null && j.epoch === f.target.epoch && j.watermark >= f.target.head;
}

function finish(f) {
  f.finished = true;
  const state = {};
  for (const [key, v] of f.state) state[key] = v;
  record(f, { k: "final", o: f.live === "channel" ? offsetOf(f.position) : f.offset, state });
  closeSync(f.fd);
  f.session?.cancel();
  if (f.group !== undefined) {
    f.channel.leave();
    f.group.open -= 1;
    if (f.group.open === 0) f.group.socket.disconnect();
  }
  f.wake?.();
}

async function follow(f) {
  let auth = null;
  while (!f.finished) {
    if (!auth) auth = mint(f);
    const from = f.offset;
    record(f, { k: "s", o: from, sid: auth.sid });
    let previous = from;
    try {
      const params = { [VERSIONS_PARAM]: "true" };
      if (f.onStale === "reset") params.on_stale = "reset";
      const res = await stream({
        url: f.url,
        headers: { Authorization: `Bearer ${auth.token}` },
        params,
        offset: from,
        live: f.live,
        json: true,
        warnOnHttp: false,
        backoffOptions: { initialDelay: 50, maxDelay: 1000, multiplier: 2 },
      });
      f.session = res;
      res.subscribeJson((batch) => {
        if (f.finished) return;
        const m = [];
        for (const item of batch.items) {
          const control = item?.headers?.control;
          if (control !== undefined) {
            m.push([`!${control}`]);
            if (control === "snapshot-start" || control === "reset") f.state.clear();
            continue;
          }
          const op = item?.headers?.operation;
          const version = item?.headers?.version ?? null;
          m.push([item.key, op, version, item.value?.sc ?? null]);
          if (op === "delete") f.state.delete(item.key);
          else f.state.set(item.key, [version, item.value]);
        }
        record(f, { k: "b", f: previous, o: batch.offset, u: batch.upToDate, m });
        previous = batch.offset;
        f.offset = batch.offset;
        if (done(f)) finish(f);
      });
      await res.closed;
      if (!f.finished) record(f, { k: "e", status: 0, o: f.offset, msg: "ended" });
    } catch (err) {
      if (f.finished) break;
      const h = err?.headers ?? {};
      const status = err?.status ?? 0;
      record(f, {
        k: "e",
        status,
        reason: h["oasync-stale-reason"],
        floor: h["oasync-floor"],
        head: h["oasync-head"],
        epoch: h["oasync-epoch"],
        o: f.offset,
        msg: String(err?.message ?? err).slice(0, 200),
      });
      if (status === 410) {
        f.offset = "-1";  // resync: the snapshot clears the state
      } else if (status === 401) {
        auth = null;  // expired or revoked: a fresh token, from the same offset
      } else {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    f.session = null;
  }
}


// ---------------------------------------------------------------- channels

const STALE_REASONS = {
  [StaleReason.RETENTION_FLOOR_BREACH]: "retention_floor_breach",
  [StaleReason.CURSOR_AHEAD]: "cursor_ahead",
  [StaleReason.EPOCH_CHANGED]: "epoch_changed",
};
const utf8 = new TextDecoder("utf-8", { fatal: true });

// A channel position ({epoch, watermark: bigint}, or undefined) as the lines
// write an offset.
function offsetOf(p) {
  return p === undefined ? "-1" : { e: p.epoch, w: String(p.watermark) };
}
const samePosition = (a, b) => a !== undefined && b !== undefined && a.epoch === b.epoch && a.watermark === b.watermark;

// Something no server may send: written for the driver to report.
function bad(f, msg) {
  record(f, { k: "bad", msg: msg.slice(0, 300) });
}

// A doc's payload sc (its scope as the payload names it), null without one.
function payloadOf(bytes) {
  return bytes.length === 0 ? null : JSON.parse(utf8.decode(bytes));
}

// One batch push of f's channel: its updates (a line from the position
// before it to the batch's), and a whole snapshot once its end arrives.
function channelBatch(f, message) {
  if (message.message.case !== "batch") return bad(f, `a batch event holding ${message.message.case}`);
  const b = message.message.value;
  let updates = [];
  for (const m of b.messages) {
    const v = m.message.value;
    switch (m.message.case) {
      case "error":
        if (v.code !== ErrorCode.STALE_CURSOR) return bad(f, `error ${v.code} in a batch: ${v.message}`);
        if (updates.length > 0) return bad(f, "a stale notice after updates in one batch");
        record(f, {
          k: "e",
          status: 410,
          reason: STALE_REASONS[v.stale.reason] ?? `reason ${v.stale.reason}`,
          floor: String(v.stale.floor),
          head: String(v.stale.head),
          epoch: v.stale.epoch,
          o: offsetOf(f.position),  // the position its join presented
        });
        f.position = undefined;
        // A snapshot cut short by it (an epoch reset or a purge between its
        // pages) is dropped: a fresh one follows.
        f.staging = undefined;
        break;
      case "snapshotHeader":
        if (updates.length > 0 || f.staging !== undefined) return bad(f, "a snapshot header after updates, or inside a snapshot");
        f.staging = { m: [["!snapshot-start"]], state: v.since > 0n ? new Map(f.state) : new Map() };
        f.position = undefined;
        break;
      case "doc": {
        if (f.staging === undefined) return bad(f, `doc ${v.docKey} outside a snapshot`);
        const payload = v.deleted ? null : payloadOf(v.payload);
        f.staging.m.push([v.docKey, v.deleted ? "delete" : "insert", Number(v.docVersion), payload?.sc ?? null]);
        if (v.deleted) f.staging.state.delete(v.docKey);
        else f.staging.state.set(v.docKey, [Number(v.docVersion), payload]);
        break;
      }
      case "snapshotEnd": {
        if (f.staging === undefined) return bad(f, "a snapshot end outside a snapshot");
        f.staging.m.push(["!snapshot-end"]);
        const p = { epoch: v.position.epoch, watermark: v.position.head };
        record(f, { k: "b", f: "-1", o: offsetOf(p), m: f.staging.m });
        f.state = f.staging.state;
        f.staging = undefined;
        f.position = p;
        break;
      }
      case "update": {
        if (f.staging !== undefined) return bad(f, `update ${v.docKey} inside a snapshot`);
        const deleted = v.op === Op.DELETE;
        const payload = deleted || v.fetchRequired ? null : payloadOf(v.payload);
        updates.push([v.docKey, deleted ? "delete" : "upsert", Number(v.docVersion), payload?.sc ?? null]);
        if (deleted) f.state.delete(v.docKey);
        else f.state.set(v.docKey, [Number(v.docVersion), payload]);
        break;
      }
      default:
        return bad(f, `a ${m.message.case} message in a batch`);
    }
  }
  if (b.position !== undefined) {
    const p = { epoch: b.position.epoch, watermark: b.position.watermark };
    if (f.position === undefined && updates.length > 0) return bad(f, "updates before any snapshot or position");
    if (updates.length > 0 || !samePosition(p, f.position)) {
      record(f, { k: "b", f: offsetOf(f.position), o: offsetOf(p), m: sabotaged(f, updates) });
    }
    f.position = p;
  } else if (updates.length > 0 || f.staging === undefined) {
    bad(f, "a batch outside a snapshot without a position");
  }
  if (done(f)) finish(f);
}

// `updates` as recorded: one left out, once, for the sabotage's target.
const started = Date.now();
function sabotaged(f, updates) {
  const s = config.sabotage;
  if (s === undefined || s.done || f.name !== s.target || updates.length === 0) return updates;
  if (Date.now() - started < s.armAfterMs) return updates;
  s.done = true;
  const [key, op, version] = updates[0];
  appendFileSync(s.logFile, `left ${op} ${key} v${version} out of a batch ${f.name} recorded\n`);
  return updates.slice(1);
}

// A heartbeat push: the position through which f's view was delivered.
function channelHeartbeat(f, message) {
  if (message.message.case !== "heartbeat") return bad(f, `a heartbeat event holding ${message.message.case}`);
  for (const c of message.message.value.delivered) {
    if (c.topic !== f.topic || f.staging !== undefined || f.position === undefined) continue;
    const p = { epoch: c.epoch, watermark: c.watermark };
    if (samePosition(p, f.position)) continue;
    record(f, { k: "b", f: offsetOf(f.position), o: offsetOf(p), m: [] });
    f.position = p;
  }
  if (done(f)) finish(f);
}

// Join errors that say the server is wrong about this follower (the others,
// such as unavailable, are phoenix's to retry).
const WRONG_JOIN_ERRORS = new Set(["bad_params", "unknown_topic", "unmatched_topic"]);

// One sync:v1 socket and its followers' channels.
function openSocket(group) {
  group.open = group.followers.length;
  const socket = new Socket(group.url, {
    transport: WebSocket,
    authToken: () => {
      const auth = mint(group);
      group.sid = auth.sid;
      return auth.token;
    },
    params: { encoding: group.encoding },
    heartbeatIntervalMs: 3000,
    reconnectAfterMs: (tries) => [50, 100, 200, 500][tries - 1] ?? 1000,
    rejoinAfterMs: (tries) => [100, 200, 500][tries - 1] ?? 1000,
  });
  group.socket = socket;
  socket.onMessage((msg) => {
    if (msg.topic !== "phoenix" || msg.event !== "disconnect") return;
    for (const f of group.followers) {
      if (f.finished) continue;
      const status = msg.payload?.reason === "unauthorized" ? 401 : 0;
      record(f, { k: "e", status, reason: msg.payload?.reason, o: offsetOf(f.position), msg: String(msg.payload?.message).slice(0, 200) });
    }
  });
  const decode = (payload) =>
    payload instanceof ArrayBuffer ? decodeServerMessage(payload) : serverMessageFromJson(payload);
  for (const f of group.followers) {
    f.channel = socket.channel(`sync:v1:${f.topic}`, () => {
      // Cut off inside a snapshot, what arrived of it is dropped.
      f.staging = undefined;
      record(f, { k: "s", o: offsetOf(f.position), sid: group.sid });
      return f.position === undefined ? {} : { epoch: f.position.epoch, watermark: String(f.position.watermark) };
    });
    const guarded = (what, fn) => (payload) => {
      if (f.finished) return;
      try {
        fn(f, decode(payload));
      } catch (e) {
        bad(f, `a ${what} event that does not decode or apply: ${e.stack ?? e}`);
      }
    };
    f.channel.on("batch", guarded("batch", channelBatch));
    f.channel.on("heartbeat", guarded("heartbeat", channelHeartbeat));
    f.channel
      .join()
      .receive("error", (response) => {
        if (f.finished) return;
        const reason = response?.reason;
        if (WRONG_JOIN_ERRORS.has(reason)) bad(f, `join refused: ${JSON.stringify(response)}`);
        record(f, { k: "e", status: reason === "forbidden_topic" ? 403 : 503, reason, o: offsetOf(f.position) });
      });
  }
  socket.connect();
}

function followChannels(channelFollowers) {
  const groups = new Map();
  for (const f of channelFollowers) {
    let g = groups.get(f.socket);
    if (g === undefined) {
      g = {
        name: f.socket,
        url: f.url,
        org: f.org,
        encoding: f.encoding,
        sessionFile: f.sessionFile,
        tokenSeconds: f.tokenSeconds,
        topics: [],
        followers: [],
        sessions: 0,
      };
      groups.set(f.socket, g);
    }
    g.topics.push(f.topic);
    g.followers.push(f);
    f.group = g;
  }
  for (const g of groups.values()) openSocket(g);
  return channelFollowers.map((f) => new Promise((resolve) => (f.wake = resolve)));
}

// ---------------------------------------------------------------- main

const followers = config.followers.map((spec) => ({
  ...spec,
  fd: openSync(spec.out, "w"),
  offset: "-1",
  state: new Map(),
  sessions: 0,
  target: null,
  finished: false,
  session: null,
}));

createInterface({ input: process.stdin }).on("line", (line) => {
  const [word, topic, epoch, head, epochId] = line.trim().split(/\s+/);
  if (word !== "finish") return;
  for (const f of followers) {
    if (f.topic !== topic || f.finished) continue;
    f.target = { epoch: BigInt(epoch), head: BigInt(head), epochId };
    if (done(f)) finish(f);
  }
});

const channel = (f) => f.live === "channel";
await Promise.all([
  ...followers.filter((f) => !channel(f)).map(follow),
  ...followChannels(followers.filter(channel)),
]);
process.exit(0);
