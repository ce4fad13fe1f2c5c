// oasync serve read with the TanStack DB layer of @durable-streams/state
// (createStreamDB), rendered with React's useLiveQuery: what StreamDB 0.3.1
// does alone (an update merges into the old row; a reset after the first
// sync, or a 410, stops it for good, silently), and the recipe that reads a
// topic as it is (streamdb-recipe.mjs, quoted in the README). Side by side,
// on the same server and the same writes.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { isDeepStrictEqual } from "node:util";

import { createStateSchema, createStreamDB } from "@durable-streams/state/db";
import { useLiveQuery } from "@tanstack/react-db";
import { createElement, useSyncExternalStore } from "react";
import { act, create } from "react-test-renderer";

import { openTopic } from "./streamdb-recipe.mjs";
import { RUNS, createDatabase, eventually, freePort, makeKeys, oasync, startServer, token, write } from "./support.mjs";

const keys = makeKeys();
after(() => keys.remove());

// Any object is a row (StreamDB wants a Standard Schema).
const anyObject = { "~standard": { version: 1, vendor: "oasync-e2e", validate: (value) => ({ value }) } };
const state = createStateSchema({ runs: { schema: anyObject, type: RUNS, primaryKey: "doc_key" } });

// A row's doc, without StreamDB's fields (the primary key, _seq) and TanStack
// DB's virtual ones ($synced, $origin, $key, $collectionId).
const payload = ({ doc_key, _seq, ...rest }) => Object.fromEntries(Object.entries(rest).filter(([name]) => !name.startsWith("$")));

// The rows of a collection, doc_key -> payload.
const rowsOf = (collection) => new Map([...collection.values()].map((row) => [row.doc_key, payload(row)]));

// The React side: the rows of the recipe's current StreamDB, through
// useLiveQuery, rendered as one <li> per row: "doc_key payload".
function Runs({ topic }) {
  const db = useSyncExternalStore(topic.subscribe, topic.current);
  const { data } = useLiveQuery((q) => q.from({ run: db.collections.runs }), [db]);
  return createElement(
    "ul",
    null,
    (data ?? []).map((row) => createElement("li", { key: row.doc_key }, `${row.doc_key} ${JSON.stringify(payload(row))}`)),
  );
}

function render(topic) {
  let renderer;
  act(() => {
    renderer = create(createElement(Runs, { topic }));
  });
  return {
    rows: () => {
      const items = renderer.toJSON()?.children ?? [];
      return new Map(items.map((li) => {
        const text = li.children.join("");
        const space = text.indexOf(" ");
        return [text.slice(0, space), JSON.parse(text.slice(space + 1))];
      }));
    },
    unmount: () => act(() => renderer.unmount()),
  };
}

const same = (got, expected) => isDeepStrictEqual(got, expected);

// Runs `body` with console.error's lines kept in `lines` (StreamDB reports
// its failures there, and only there); they are printed if `body` fails.
async function capturingErrors(body) {
  const lines = [];
  const original = console.error;
  console.error = (...args) => lines.push(args.map((a) => (a instanceof Error ? `${a.name}: ${a.message}` : String(a))).join(" "));
  try {
    await body(lines);
  } catch (e) {
    for (const line of lines) original(line);
    throw e;
  } finally {
    console.error = original;
  }
}

describe("oasync serve read with createStreamDB and useLiveQuery", () => {
  let db;
  before(() => {
    db = createDatabase();
  });
  after(() => db.drop());

  for (const [stale, params] of [["reset", { on_stale: "reset" }], ["410", undefined]]) {
    test(`StreamDB alone merges updates and stops at a ${stale}; the recipe replaces rows and starts over`, async () => {
      const k = (name) => `run_summary:${stale}-${name}`;
      const w = (name, extra) => ({ key: `${stale}-${name}`, scope: "org:1", ...extra });
      const port = await freePort();
      let server = await startServer(db, keys, { port });
      const url = `${server.base}/v1/topics/${RUNS}`;
      const headers = { Authorization: `Bearer ${token(keys, { exp: Math.floor(Date.now() / 1000) + 3600 })}` };
      const backoffOptions = { initialDelay: 50, maxDelay: 500, multiplier: 1.5 };
      write(db, [w("a", { payload: { v: 1, extra: "x" } }), w("b", { payload: { v: 1 } })]);

      const bare = createStreamDB({
        streamOptions: { url, headers, params, contentType: "application/json", backoffOptions },
        state,
        live: "long-poll",
      });
      const topic = openTopic({ url, headers, params, state, backoffOptions });
      const view = render(topic);
      await capturingErrors(async (lines) => {
        try {
          let synced = false;
          Promise.all([bare.preload(), topic.ready()]).then(() => (synced = true), () => {});
          await eventually(() => synced, 15000, "the first sync");
          const mine = (rows) => new Map([...rows].filter(([key]) => key.startsWith(`run_summary:${stale}-`)));
          const first = new Map([[k("a"), { v: 1, extra: "x" }], [k("b"), { v: 1 }]]);
          await eventually(() => same(mine(view.rows()), first), 15000, "the first render");
          assert.ok(same(mine(rowsOf(bare.collections.runs)), first));

          // An update that drops a field: StreamDB alone keeps it.
          write(db, [w("a", { payload: { v: 2 } })]);
          await eventually(() => view.rows().get(k("a"))?.v === 2, 15000, "the update (recipe)");
          assert.deepEqual(view.rows().get(k("a")), { v: 2 });
          await eventually(() => bare.collections.runs.get(k("a"))?.v === 2, 15000, "the update (bare)");
          assert.deepEqual(payload(bare.collections.runs.get(k("a"))), { v: 2, extra: "x" });

          // An update for a key the client does not hold: a doc re-created
          // after its delete.
          write(db, [w("c", { payload: { v: 1 } })]);
          await eventually(() => view.rows().has(k("c")), 15000, "c");
          write(db, [w("c", { delete: true })]);
          await eventually(() => !view.rows().has(k("c")), 15000, "c deleted");
          write(db, [w("c", { payload: { v: 3 } })]);
          await eventually(() => view.rows().get(k("c"))?.v === 3, 15000, "c re-created by an update");

          // The clients' offsets go stale: writes and a purge while the
          // server is down. The server then answers their next request with
          // a reset (on_stale=reset) or a 410.
          await server.stop("SIGKILL");
          write(db, [w("b", { delete: true }), w("a", { payload: { v: 3 } })]);
          const purge = oasync(["purge", "--topic", RUNS, "--older-than", "0s", "--keep-last", "0"], { url: db.url });
          assert.equal(purge.status, 0, purge.stderr);
          server = await startServer(db, keys, { port });
          const now = new Map([[k("a"), { v: 3 }], [k("c"), { v: 3 }]]);
          await eventually(() => same(mine(view.rows()), now), 20000, "the recipe to start over");
          assert.equal(topic.restarts, 1);
          // StreamDB alone: stale rows, still "ready", and nothing but a log line.
          await eventually(() => lines.some((l) => l.includes(stale === "reset" ? "No pending sync transaction to write to" : "closed unexpectedly")),
            10000, "StreamDB to fail");
          write(db, [w("d", { payload: { v: 1 } })]);
          await eventually(() => view.rows().has(k("d")), 15000, "the recipe to follow on");
          assert.deepEqual(mine(rowsOf(bare.collections.runs)), new Map([
            [k("a"), { v: 2, extra: "x" }], [k("b"), { v: 1 }], [k("c"), { v: 3 }],
          ]));
          assert.ok(bare.collections.runs.isReady());
        } finally {
          view.unmount();
          topic.close();
          bare.close();
          await server.stop();
        }
      });
    });
  }
});
