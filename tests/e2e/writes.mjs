// What the sync:v1 channel and browser tests write and ask oasync, as one
// tenant (org:1) over the three inline topics: the sink's input, mixed and
// burst writes, and where a topic stands.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";

import { RUNS, oasync, oasyncBinary } from "./support.mjs";

export const WORKERS = "runtime.codex_worker_summaries";
export const NOTES = "runtime.notifications";
export const TOPICS = [RUNS, WORKERS, NOTES];
// The doc key prefix of each inline topic (schema/topics.yaml).
export const PREFIX = { [RUNS]: "run_summary:", [WORKERS]: "codex_worker_summary:", [NOTES]: "notification:" };
export const TENANT = "org:1"; // the scope of support.mjs's tokens (org_id "1")

// serve: limits: {...} as YAML.
export const limits = (values) =>
  `serve:\n  limits: {${Object.entries(values).map(([k, v]) => `${k}: ${v}`).join(", ")}}\n`;

// `oasync sink` input lines for writes {topic, key, scope, payload} or
// {topic, key, delete: true} (topic defaults to RUNS).
function sinkInput(writes) {
  const lines = writes.map((w) => {
    const topic = w.topic ?? RUNS;
    return JSON.stringify({
      topic,
      doc_key: PREFIX[topic] + w.key,
      scope: w.scope ?? "",
      op: w.delete ? "delete" : "upsert",
      ...(w.delete ? {} : { payload: w.payload ?? { n: 1 } }),
    });
  });
  return lines.join("\n") + "\n";
}

// Applies `writes` through `oasync sink --input -`.
export function sink(db, writes) {
  const r = oasync(["sink", "--input", "-"], { url: db.url, input: sinkInput(writes) });
  assert.equal(r.status, 0, r.stderr);
}

// The same, in the background (the test goes on while the sink commits):
// resolves once it exited 0.
export function sinkInBackground(db, writes) {
  const child = spawn(oasyncBinary, ["--database-url", db.url, "sink", "--input", "-"], {
    stdio: ["pipe", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (chunk) => {
    stderr += chunk;
  });
  child.stdin.end(sinkInput(writes));
  return new Promise((resolve, reject) => {
    child.on("error", reject);
    child.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`sink exited ${code}: ${stderr}`))));
  });
}

// Creates, updates, deletes, and (the scope turns with i) moves between
// org:1, org:2 and org:3, of 25 keys.
export function mixedWrites(topic, n, start = 0) {
  const out = [];
  for (let i = start; i < start + n; i++) {
    out.push({ topic, key: `k${i % 25}`, scope: `org:${(i % 3) + 1}`, payload: { i, note: "é ✓ \"q\"" } });
    if (i % 5 === 0) out.push({ topic, key: `k${(i + 7) % 25}`, delete: true });
  }
  return out;
}

// `n` updates of 500 docs of the tenant, from number `start` on.
export function burstWrites(topic, n, start = 0) {
  const writes = [];
  for (let i = start; i < start + n; i++) writes.push({ topic, key: `b${i % 500}`, scope: TENANT, payload: { i } });
  return writes;
}

// The same, applied in sink calls of `per` writes.
export function burst(db, topic, n, { start = 0, per = 2500 } = {}) {
  for (let from = start; from < start + n; from += per) {
    sink(db, burstWrites(topic, Math.min(per, start + n - from), from));
  }
}

// Where a topic stands: {topic, epoch, head, purged_through} (the header of
// oasync snapshot).
export function positionOf(db, topic) {
  const r = oasync(["snapshot", topic, "--scope", TENANT], { url: db.url });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout.split("\n")[0]).snapshot;
}
