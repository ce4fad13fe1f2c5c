// Helpers for the end-to-end tests: a fresh database per test (on the server
// that scripts/with-postgres started: OASYNC_DATABASE_URL), the oasync
// command, a running `oasync serve` on loopback, a TCP relay that a test
// cuts, and tokens. Importing it also checks every State Protocol message a
// test receives (below).
import { spawn, spawnSync } from "node:child_process";
import { createHmac, createSign, generateKeyPairSync, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterEach } from "node:test";
import { fileURLToPath } from "node:url";

import Ajv from "ajv";
import addFormats from "ajv-formats";

const here = dirname(fileURLToPath(import.meta.url));
export const root = join(here, "..", "..");
export const oasyncBinary = process.env.OASYNC_BINARY ?? join(root, "build", "bin", "oasync");
export const RUNS = "runtime.run_summaries";

// Every message that a stream answers, checked against the State Protocol's
// published JSON Schema (state-protocol.schema.json of @durable-streams/state).
// The check sits in fetch itself, which the tests and the official clients
// all call, so that no test can read a message unchecked: a JSON answer of
// GET /v1/topics/... is checked before fetch returns it (a bad one rejects),
// an SSE answer as its events go by. Every violation is also kept, and fails
// the test it happened in (afterEach), and any eventually() waiting for it.
// With versions=true the request opted in to a "version" header, which the
// published schema does not allow: those answers are checked against the
// schema with that one header added.
const require = createRequire(import.meta.url);
const publishedSchema = JSON.parse(
  readFileSync(join(dirname(require.resolve("@durable-streams/state/package.json")), "state-protocol.schema.json"), "utf8"),
);

// A validator of `schema`: a function of a message that returns what is wrong
// with it, or undefined.
function compile(schema) {
  // (strictTypes off: the published schema leaves out "type" beside some "properties".)
  const ajv = new Ajv({ allErrors: true, strictTypes: false });
  addFormats(ajv);
  const whole = ajv.compile(schema);
  const part = (name) => ajv.getSchema(`${schema.$id}#/definitions/${name}`);
  return (message) => {
    if (whole(message)) return undefined;
    // The errors of the kind of message it looks like, not of both.
    const kind = part(message?.headers?.control !== undefined ? "ControlMessage" : "ChangeMessage");
    return kind(message) ? ajv.errorsText(whole.errors) : ajv.errorsText(kind.errors);
  };
}

const withVersion = structuredClone(publishedSchema);
withVersion.definitions.ChangeHeaders.properties.version = { type: "integer", minimum: 1 };
const validators = { plain: compile(publishedSchema), versions: compile(withVersion) };

export const schemaViolations = [];

// Throws (and keeps) the first of `messages` that the schema refuses.
// `versions`: the request asked for versions=true.
export function checkMessages(messages, { versions = false, where = "a stream" } = {}) {
  const validate = versions ? validators.versions : validators.plain;
  const problem = (text) => {
    const error = new Error(`${where}: ${text}`);
    schemaViolations.push(error);
    throw error;
  };
  if (!Array.isArray(messages)) problem(`not a JSON array of messages: ${JSON.stringify(messages).slice(0, 200)}`);
  for (const m of messages) {
    const wrong = validate(m);
    if (wrong) problem(`a message breaks state-protocol.schema.json (${wrong}): ${JSON.stringify(m).slice(0, 300)}`);
  }
}

const fetchUnchecked = globalThis.fetch;

// A stream's SSE body, passed on as it is; each `event: data` is checked.
function checkedEvents(body, options) {
  const decoder = new TextDecoder();
  let text = "";
  const check = (block) => {
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    }
    if (event !== "data") return;
    try {
      checkMessages(JSON.parse(data.join("\n")), options);
    } catch {
      // Kept in schemaViolations; the client reads on.
    }
  };
  return body.pipeThrough(
    new TransformStream({
      transform(chunk, controller) {
        controller.enqueue(chunk);
        text += decoder.decode(chunk, { stream: true }).replace(/\r\n?/g, "\n");
        for (let end = text.indexOf("\n\n"); end >= 0; end = text.indexOf("\n\n")) {
          check(text.slice(0, end));
          text = text.slice(end + 2);
        }
      },
    }),
  );
}

globalThis.fetch = async (input, init = {}) => {
  const res = await fetchUnchecked(input, init);
  const url = new URL(input instanceof Request ? input.url : String(input));
  const method = (init.method ?? (input instanceof Request ? input.method : "GET")).toUpperCase();
  if (method !== "GET" || res.status !== 200 || !url.pathname.startsWith("/v1/topics/")) return res;
  const options = { versions: url.searchParams.get("versions") === "true", where: `GET ${url.pathname}${url.search}` };
  const type = res.headers.get("content-type") ?? "";
  const answer = { status: res.status, statusText: res.statusText, headers: res.headers };
  if (type.startsWith("text/event-stream")) return new Response(checkedEvents(res.body, options), answer);
  if (!type.startsWith("application/json")) return res;
  const body = await res.text();
  checkMessages(JSON.parse(body), options);
  return new Response(body, answer);
};

afterEach(() => {
  if (schemaViolations.length > 0) {
    const first = schemaViolations[0];
    const count = schemaViolations.length;
    schemaViolations.length = 0;
    throw new Error(`${count} State Protocol message(s) broke the schema; the first: ${first.message}`);
  }
});

const adminUrl = process.env.OASYNC_DATABASE_URL;
if (!adminUrl) {
  // Loudly: these tests need the throwaway server of scripts/with-postgres.
  throw new Error("OASYNC_DATABASE_URL is not set: run under scripts/with-postgres (scripts/test does)");
}

// `url` with its database name replaced, as libpq reads it.
function withDatabase(url, name) {
  const u = new URL(url);
  u.pathname = "/" + name;
  return u.toString();
}

function psql(url, sql) {
  const r = spawnSync("psql", ["-qAtX", "-v", "ON_ERROR_STOP=1", url, "-c", sql], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`psql failed: ${r.stderr}`);
  return r.stdout.trim();
}

// Runs the oasync command; returns {status, stdout, stderr}.
export function oasync(args, { input, url } = {}) {
  const r = spawnSync(oasyncBinary, url ? ["--database-url", url, ...args] : args, {
    input,
    encoding: "utf8",
    maxBuffer: 256 << 20,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function must(result, what) {
  if (result.status !== 0) throw new Error(`${what} failed (${result.status}): ${result.stderr}`);
  return result;
}

// A migrated database with the shipped topics, dropped by drop().
export function createDatabase() {
  const name = `oasync_e2e_${process.pid}_${randomBytes(4).toString("hex")}`;
  psql(adminUrl, `CREATE DATABASE "${name}"`);
  const url = withDatabase(adminUrl, name);
  must(oasync(["migrate"], { url }), "migrate");
  must(oasync(["topics", "apply", join(root, "schema", "topics.yaml")], { url }), "topics apply");
  return {
    url,
    sql: (text) => psql(url, text),
    drop: () => psql(adminUrl, `DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`),
  };
}

// Applies writes through `oasync sink --input -`: each {key, scope, payload}
// (or {key, delete: true}) becomes a run summary.
export function write(db, writes) {
  const lines = writes.map((w) =>
    JSON.stringify({
      topic: w.topic ?? RUNS,
      doc_key: `run_summary:${w.key}`,
      scope: w.scope ?? "",
      op: w.delete ? "delete" : "upsert",
      ...(w.delete ? {} : { payload: w.payload ?? { n: 1 } }),
    }),
  );
  return must(oasync(["sink", "--input", "-"], { url: db.url, input: lines.join("\n") + "\n" }), "sink");
}

// The docs `oasync snapshot TOPIC --scope S` lists, as a Map key -> payload.
export function snapshotOf(db, scope, topic = RUNS) {
  const r = must(oasync(["snapshot", topic, "--scope", scope], { url: db.url }), "snapshot");
  const docs = new Map();
  for (const line of r.stdout.split("\n").filter(Boolean)) {
    const m = JSON.parse(line);
    if (m.doc_key !== undefined && !m.deleted) docs.set(m.doc_key, m.payload);
  }
  return docs;
}

// A free TCP port on loopback (for a server started, stopped and started again).
export async function freePort() {
  return await new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });
}

// A TCP relay on loopback to `target` (net.connect options): the network
// between a client and a server, for a test to cut and to take away. It
// starts down: until up(), it refuses every connection (accepts it and
// closes it at once). `counts` holds, live, the connections it relayed
// (accepted), refused, and cut while open (by cut(), down() or close()).
export async function relay(target) {
  const open = new Set();  // [client, upstream] of each relayed connection still open
  const counts = { accepted: 0, refused: 0, cut: 0 };
  let refusing = true;
  const cutOpen = () => {
    counts.cut += open.size;
    for (const pair of open) for (const socket of pair) socket.destroy();
    open.clear();
  };
  const server = createServer((client) => {
    if (refusing) {
      counts.refused += 1;
      client.destroy();
      return;
    }
    counts.accepted += 1;
    const upstream = connect(target);
    const pair = [client, upstream];
    open.add(pair);
    const end = () => {
      open.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", end).on("close", end).pipe(upstream);
    upstream.on("error", end).on("close", end).pipe(client);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: server.address().port,
    counts,
    up: () => {
      refusing = false;
    },
    // Destroys both sides of every open connection at once (what is in
    // flight is lost; each peer sees its connection end, as after a broken
    // link), and goes on relaying new ones.
    cut: cutOpen,
    // Refuses new connections and cuts the open ones.
    down: () => {
      refusing = true;
      cutOpen();
    },
    close: () => {
      cutOpen();
      server.close();
    },
  };
}

// Keys for each algorithm the server can be configured with.
export function makeKeys() {
  const dir = mkdtempSync(join(tmpdir(), "oasync-e2e-"));
  const secret = randomBytes(32).toString("hex");
  const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const ec = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const files = {
    HS256: join(dir, "secret"),
    RS256: join(dir, "rsa.pub"),
    ES256: join(dir, "ec.pub"),
  };
  writeFileSync(files.HS256, secret + "\n");
  writeFileSync(files.RS256, rsa.publicKey.export({ type: "spki", format: "pem" }));
  writeFileSync(files.ES256, ec.publicKey.export({ type: "spki", format: "pem" }));
  return { dir, secret, rsa, ec, files, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

const b64url = (data) => Buffer.from(data).toString("base64url");

// A signed JWT. `alg` is what the header says; `sign` picks the key:
// "HS256" with `keys.secret` (or `secretOverride`), "RS256", "ES256".
export function token(keys, claims = {}, { alg = "HS256", sign = alg, secretOverride } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const body = {
    sub: "user-1",
    org_id: "1",
    session_id: "session-1",
    scopes: [RUNS],
    exp: now + 600,
    ...claims,
  };
  const signed = `${b64url(JSON.stringify({ alg, typ: "JWT" }))}.${b64url(JSON.stringify(body))}`;
  let signature;
  if (sign === "HS256") {
    signature = createHmac("sha256", secretOverride ?? keys.secret).update(signed).digest();
  } else if (sign === "RS256") {
    signature = createSign("SHA256").update(signed).sign(keys.rsa.privateKey);
  } else if (sign === "ES256") {
    signature = createSign("SHA256")
      .update(signed)
      .sign({ key: keys.ec.privateKey, dsaEncoding: "ieee-p1363" });
  } else {
    signature = Buffer.alloc(0);
  }
  return `${signed}.${b64url(signature)}`;
}

// Starts `oasync serve` on loopback; resolves once it listens and, unless
// `ready` is false, once /healthz says it has reached the database (until
// then, tokens get 503: it has not read the revoked sessions yet).
export async function startServer(db, keys, { algorithm = "HS256", port = 0, args = [], config, ready = true } = {}) {
  const extra = [];
  if (config) {
    const file = join(keys.dir, `serve-${randomBytes(4).toString("hex")}.yaml`);
    writeFileSync(file, config);
    extra.push("--config", file);
  }
  const child = spawn(
    oasyncBinary,
    [
      ...extra,
      "--database-url",
      db.url,
      "serve",
      "--listen",
      "127.0.0.1",
      "--port",
      String(port),
      "--auth-algorithm",
      algorithm,
      "--auth-key-file",
      keys.files[algorithm],
      ...args,
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let log = "";
  const listening = new Promise((resolve, reject) => {
    child.stderr.on("data", (chunk) => {
      log += chunk;
      const m = /listening on 127\.0\.0\.1:(\d+)/.exec(log);
      if (m) resolve(Number(m[1]));
    });
    child.on("exit", (code) => reject(new Error(`oasync serve exited (${code}): ${log}`)));
  });
  const bound = await listening;
  if (ready) {
    await eventually(async () => (await fetch(`http://127.0.0.1:${bound}/healthz`)).status === 200, 10000,
      "oasync serve to reach the database");
  }
  return {
    child,
    port: bound,
    base: `http://127.0.0.1:${bound}`,
    log: () => log,
    rss: () => {
      const status = readFileSync(`/proc/${child.pid}/status`, "utf8");
      return Number(/VmHWM:\s+(\d+)/.exec(status)[1]) * 1024;
    },
    stop: async (signal = "SIGTERM") => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill(signal);
      await exited;
    },
  };
}

// Polls `check` until it returns true, or fails after `ms`.
export async function eventually(check, ms = 10000, what = "condition") {
  const until = Date.now() + ms;
  for (;;) {
    if (schemaViolations.length > 0) throw schemaViolations[0];
    if (await check()) return;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
