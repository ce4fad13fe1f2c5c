// The torture run's sabotaging HTTP proxy (test-only; tests/torture/delivery.cpp
// starts it): it stands between some followers and `oasync serve`, passes
// everything through, and, when its mode asks, damages ONE JSON array
// response for ONE follower, so that the run shows that its checks notice a
// server that does the same:
//   skip    drops one update message from a response
//   leak    adds a doc of another tenant (the last change another tenant's
//           follower received through this proxy, or a made-up one) to a
//           response
//   repeat  after the server went away (an upstream connection failed), puts
//           the last change the follower received in front of its next
//           non-empty response again
//   none    damages nothing
// Followers name themselves in the path: /NAME/v1/topics/T goes to
// /v1/topics/T upstream. SSE and every other answer stream through untouched.
//
//   node torture-proxy.mjs CONFIG.json
//
// CONFIG: {upstreamPort, mode, target (a follower NAME), armAfterMs, logFile}.
// Prints "listening on PORT" on stdout; appends what it damaged to logFile.
import { appendFileSync, readFileSync } from "node:fs";
import { createServer, request } from "node:http";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const started = Date.now();
let damaged = false;
let upstreamFailed = false;
const lastChange = new Map(); // follower -> its last change message
const lastOfTenant = new Map(); // "topic org" -> a change message with a value

function tenantOf(req) {
  try {
    const token = (req.headers.authorization ?? "").replace(/^Bearer /, "");
    return String(JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString()).org_id);
  } catch {
    return "?";
  }
}

function isChange(m) {
  return m && typeof m === "object" && m.headers && m.headers.operation !== undefined;
}

// The response body to send instead of `items`, or null to leave it.
function damage(name, topic, org, items, offset) {
  if (damaged || config.mode === "none" || name !== config.target) return null;
  if (Date.now() - started < config.armAfterMs) return null;
  const log = (what) => {
    damaged = true;
    appendFileSync(config.logFile, `${what}\n`);
  };
  if (config.mode === "skip") {
    const i = items.findIndex((m) => isChange(m) && m.headers.operation === "update");
    if (i < 0) return null;
    const [gone] = items.splice(i, 1);
    log(`dropped ${gone.key} v${gone.headers.version} from a response to ${name} ending at ${offset}`);
    return items;
  }
  if (config.mode === "leak") {
    let other = null;
    for (const [k, m] of lastOfTenant) if (k.startsWith(`${topic} `) && k !== `${topic} ${org}`) other = m;
    if (!other) {
      const foreign = (Number(org) + 1) % 3;
      other = { type: topic, key: `${topic.replace("torture.", "")}:${foreign}`,
                value: { sc: `org:${foreign}`, pad: "leaked" },
                headers: { operation: "insert", version: 1 } };
    }
    items.push(other);
    log(`added ${other.key} (payload of ${other.value?.sc}) to a response to ${name} (org ${org}) ending at ${offset}`);
    return items;
  }
  if (config.mode === "repeat") {
    const last = lastChange.get(name);
    if (!upstreamFailed || !last || !items.some(isChange)) return null;
    items.unshift(last);
    log(`repeated ${last.key} v${last.headers.version} after a server restart, to ${name} at ${offset}`);
    return items;
  }
  return null;
}

const server = createServer((req, res) => {
  const m = /^\/([^/]+)(\/.*)$/.exec(req.url);
  if (!m) {
    res.writeHead(404).end();
    return;
  }
  const [, name, path] = m;
  const topic = decodeURIComponent(/\/v1\/topics\/([^?]+)/.exec(path)?.[1] ?? "");
  const org = tenantOf(req);
  const up = request(
    { host: "127.0.0.1", port: config.upstreamPort, method: req.method, path, headers: req.headers },
    (upRes) => {
      const json = upRes.statusCode === 200 && /application\/json/.test(upRes.headers["content-type"] ?? "");
      upRes.on("aborted", () => {
        upstreamFailed = true;
      });
      if (!json) {
        upRes.on("error", () => res.destroy());
        res.writeHead(upRes.statusCode, upRes.headers);
        upRes.pipe(res);
        return;
      }
      const chunks = [];
      upRes.on("data", (c) => chunks.push(c));
      upRes.on("error", () => res.destroy());
      upRes.on("end", () => {
        let body = Buffer.concat(chunks);
        try {
          const items = JSON.parse(body.toString("utf8"));
          if (Array.isArray(items)) {
            const changed = damage(name, topic, org, items, upRes.headers["stream-next-offset"]);
            if (changed) body = Buffer.from(JSON.stringify(changed));
            for (const item of changed ?? items) {
              if (!isChange(item)) continue;
              lastChange.set(name, item);
              if (item.value) lastOfTenant.set(`${topic} ${org}`, item);
            }
          }
        } catch {
          // not JSON after all: passed on as it came
        }
        const headers = { ...upRes.headers, "content-length": String(body.length) };
        delete headers["transfer-encoding"];
        res.writeHead(upRes.statusCode, headers);
        res.end(body);
      });
    },
  );
  up.on("error", () => {
    upstreamFailed = true;
    if (!res.headersSent) res.writeHead(502).end();
    else res.destroy();
  });
  res.on("close", () => {
    if (!res.writableFinished) up.destroy();
  });
  req.pipe(up);
});
server.keepAliveTimeout = 30000;
server.listen(0, "127.0.0.1", () => {
  process.stdout.write(`listening on ${server.address().port}\n`);
});
