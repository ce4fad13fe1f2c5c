// The torture run's delivery clients (tests/torture/delivery.cpp starts this
// file): several followers in one process, each reading one topic of
// `oasync serve` as one tenant with the official @durable-streams/client
// (long-poll or SSE, with or without on_stale=reset), and writing what it
// received, response by response, as NDJSON into its own file. The driver
// checks those files; this file decides nothing.
//
//   node torture-follower.mjs CONFIG.json
//
// CONFIG: {secretFile, followers: [{name, url, topic, org, live, onStale,
// out, sessionFile, tokenSeconds: [min, max]}]}.
//
// Tokens are HS256 JWTs minted here with the server's secret, short-lived
// (tokenSeconds), each with a new session_id written to sessionFile (the
// driver revokes it with `oasync sessions revoke`). A refused token (401)
// gets a fresh one; the stream resumes from the last offset.
//
// stdin: one line "finish TOPIC EPOCH_COUNTER HEAD" per topic: a follower of
// TOPIC writes its final state and stops once it holds an offset of that
// epoch at or past HEAD. When every follower is done, the process exits.
//
// Lines written (one JSON object each):
//   {"k":"s","o":OFFSET,"sid":SESSION}                   a stream session starts
//   {"k":"b","f":FROM,"o":TO,"u":UP_TO_DATE,"m":[...]}   one response (or SSE
//       data+control): m holds [key, operation, version, payload.sc] per change
//       and ["!CONTROL"] per control message
//   {"k":"e","status":S,"reason":R,"floor":F,"head":H,"epoch":E,"o":OFFSET,"msg":M}
//       the session ended with an error (410, 401, ...); status 0: ended without one
//   {"k":"final","o":OFFSET,"state":{KEY:[version, value]}}
import { createHmac } from "node:crypto";
import { closeSync, openSync, readFileSync, writeFileSync, writeSync } from "node:fs";
import { createInterface } from "node:readline";
import { stream } from "@durable-streams/client";

// The query parameter that asks the server for headers.version on each
// change message (sent always; a server that sends versions anyway ignores it).
const VERSIONS_PARAM = "versions";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const secret = readFileSync(config.secretFile, "utf8").replace(/\n$/, "");
const b64url = (data) => Buffer.from(data).toString("base64url");

function mint(f) {
  f.sessions += 1;
  const sid = `${f.name}-s${f.sessions}`;
  const [lo, hi] = f.tokenSeconds;
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    sub: f.name,
    org_id: String(f.org),
    session_id: sid,
    scopes: [f.topic],
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
  const j = journal(f.offset);
  return j !== null && j.epoch === f.target.epoch && j.watermark >= f.target.head;
}

function finish(f) {
  f.finished = true;
  const state = {};
  for (const [key, v] of f.state) state[key] = v;
  record(f, { k: "final", o: f.offset, state });
  closeSync(f.fd);
  f.session?.cancel();
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
  const [word, topic, epoch, head] = line.trim().split(/\s+/);
  if (word !== "finish") return;
  for (const f of followers) {
    if (f.topic !== topic || f.finished) continue;
    f.target = { epoch: BigInt(epoch), head: BigInt(head) };
    if (done(f)) finish(f);
  }
});

await Promise.all(followers.map(follow));
process.exit(0);
