// A recipe for reading an oasync topic with the TanStack DB layer of
// @durable-streams/state 0.3.1 (createStreamDB, with @tanstack/db 0.6.0, the
// version it is built against). The README quotes it; streamdb.test.mjs runs
// it, rendered with useLiveQuery. StreamDB alone does not read a topic as the
// State Protocol says, in two ways, which this module works around:
//
// 1. An update must replace the row. StreamDB's collections keep TanStack
//    DB's default row update mode, "partial", which merges an update into
//    the old row: a field that the update dropped survives. Setting the
//    collections' sync config to rowUpdateMode "full" before the first sync
//    makes an update replace the row. (StreamDB takes no option for it; the
//    config is read at each commit.)
// 2. A `reset` control after the first sync, or a 410 (a stale offset: see
//    the README), ends a StreamDB for good, and silently: on a reset it
//    throws "TransactionError: No pending sync transaction to write to"
//    inside its consumer, on a 410 its stream closes; either way its rows
//    stay as they were and it still reports ready. So on either, this closes
//    it and opens a new one from -1, and hands that over once it is ready.
//
// Updates are applied as upserts either way: a topic may send an `update`
// for a key that the client never saw inserted (a doc re-created after a
// delete, or one that the snapshot hand-over delivers from the journal).
//
// The result is a store in the shape React's useSyncExternalStore takes:
//
//   const topic = openTopic({ url, headers, state });
//   function Runs() {
//     const db = useSyncExternalStore(topic.subscribe, topic.current);
//     const { data } = useLiveQuery((q) => q.from({ run: db.collections.runs }), [db]);
//     ...
//   }
import { createStreamDB } from "@durable-streams/state/db";

// Makes every collection of `db` replace a row on an update.
export function replaceRowsOnUpdate(db) {
  for (const collection of Object.values(db.collections)) {
    collection.config.sync.rowUpdateMode = "full";
  }
  return db;
}

const isReset = (message) => message?.headers?.control === "reset";

// Follows the topic at `url` (an oasync serve stream URL) into a StreamDB of
// `state` (createStateSchema's result), replaced by a fresh one on a reset or
// a 410. `headers` and `params` go to every request (e.g. the token; params
// such as { on_stale: "reset" }), `live` is StreamDB's (default: long-poll).
// Returns:
//   current()          the StreamDB to read now (its collections for useLiveQuery)
//   subscribe(notify)  calls notify() when current() is replaced; returns the unsubscribe
//   ready()            resolves once a StreamDB has synced (the first catch-up)
//   restarts           how many times it started over
//   close()            ends it
export function openTopic({ url, headers, params, state, live = "long-poll", backoffOptions }) {
  const listeners = new Set();
  const open = new Set();
  let current;
  let closed = false;
  let synced;
  const firstSync = new Promise((resolve) => (synced = resolve));
  const topic = {
    restarts: 0,
    current: () => current,
    subscribe: (notify) => {
      listeners.add(notify);
      return () => listeners.delete(notify);
    },
    ready: () => firstSync,
    close: () => {
      closed = true;
      for (const db of open) db.close();
      open.clear();
    },
  };

  const start = () => {
    let replaced = false;
    // Closes this one (its rows stay on screen) and starts a new one, which
    // becomes current once it has synced.
    const replace = () => {
      if (replaced || closed) return;
      replaced = true;
      open.delete(db);
      db.close();
      topic.restarts += 1;
      start();
    };
    const db = replaceRowsOnUpdate(
      createStreamDB({
        streamOptions: {
          url,
          headers,
          params,
          contentType: "application/json",
          backoffOptions,
          // (fetch is looked up at each call, so that a test's wrapper applies.)
          fetch: async (...args) => {
            const res = await fetch(...args);
            if (res.status === 410) replace();
            return res;
          },
        },
        state,
        live,
        onBeforeBatch: (batch) => {
          if (batch.items.some(isReset)) {
            // StreamDB would choke on it: it sees nothing of this batch.
            batch.items.length = 0;
            replace();
          }
        },
      }),
    );
    open.add(db);
    if (current === undefined) current = db;
    db.preload().then(
      () => {
        if (replaced || closed) return;
        synced();
        if (current === db) return;
        current = db;
        for (const notify of listeners) notify();
      },
      // A replaced or closed StreamDB's preload rejects: its successor goes on.
      () => {},
    );
  };
  start();
  return topic;
}
