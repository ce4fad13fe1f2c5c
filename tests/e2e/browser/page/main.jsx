// The test page of the browser tests (browser.test.mjs): a React app over our
// TypeScript client (clients/typescript/src, bundled from source by esbuild),
// as an app would write one. Its config comes from the query string:
//
//   server   the base URL of oasync serve (or of a relay in front of it)
//   topics   the topics to show, comma-separated
//   user, org, session   whose token /token mints (the page's own server)
//   record   "0": count the pushes only (the heap test), else record them
//   react    "18": the page's server sends the bundle of React 18, else of 19
//            (the page shows React.version in data-react)
//
// Per topic it renders the status and the docs, with data-attributes the tests
// read (data-topic, data-status, data-key, data-version, data-scope,
// data-value, absent while a withheld payload is fetched with none known
// before, and data-pending). It records in window.__sync what arrived, as the
// client got it: every update of every batch (key, version, op, watermark,
// epoch, scope, and fetch: whether its payload was withheld), the snapshots
// and stale notices, the params of every join (with the number of snapshots
// taken before it), and the socket's closes; and the user of every token the
// token getter gave. The recording sits in the socket factory the client
// takes (a phoenix Socket whose channels report each push before the client
// applies it), so the client runs unchanged.
import { fromBinary } from "@bufbuild/protobuf";
import { Socket } from "phoenix";
import { useLayoutEffect, useState, version as reactVersion } from "react";
import { createRoot } from "react-dom/client";

import {
  createSyncClient,
  localStorageStorage,
} from "../../../../clients/typescript/src/index.ts";
import { SyncProvider, useTopic, useTopicStatus } from "../../../../clients/typescript/src/react.ts";
import { Op, ServerMessageSchema } from "../../../../clients/typescript/src/gen/openagents/sync/v1/sync_pb.ts";

const query = new URLSearchParams(location.search);
const server = query.get("server");
const topics = (query.get("topics") ?? "").split(",").filter(Boolean);
const recording = query.get("record") !== "0";
const OPS = { [Op.UPSERT]: "upsert", [Op.DELETE]: "delete" };

// What the tests read.
const sync = {
  identity: { user: query.get("user"), org: query.get("org"), session: query.get("session") },
  // The clients the page made (one, until __signIn makes another).
  clients: 0,
  // The user of each token the token getter gave, in order.
  tokens: [],
  topics: {},
  errors: [],
  // Every doc ever rendered, as "user topic key scope" (the tests check that
  // no other tenant's doc, and no other user's, was ever on screen).
  shown: new Set(),
  // The same, "user" being that of the latest token the client was given
  // when the doc was rendered (the tests check that, once the client has a
  // token of another identity, the first one's docs are never shown again).
  shownUnder: new Set(),
  // Per topic, the docs on screen at each render that changed them:
  // {status, docs: "key@version ..."} (record != 0).
  renders: {},
  updates: 0,
  // The socket's close events {code, reason}, and the server's disconnect
  // notices {reason, message} before them.
  closes: [],
  disconnects: [],
};
window.__sync = sync;

function topicLog(topic) {
  sync.topics[topic] ??= { updates: [], snapshots: 0, snapshotEnds: [], stale: [], joins: [], batches: 0 };
  return sync.topics[topic];
}

// A push, before the client applies it.
function record(topic, event, payload) {
  if (event !== "batch") return;
  const log = topicLog(topic);
  log.batches += 1;
  const batch = fromBinary(ServerMessageSchema, new Uint8Array(payload)).message.value;
  for (const m of batch.messages) {
    const v = m.message.value;
    switch (m.message.case) {
      case "update":
        sync.updates += 1;
        if (recording) {
          log.updates.push({
            key: v.docKey, version: String(v.docVersion), op: OPS[v.op] ?? String(v.op),
            watermark: String(v.watermark), epoch: v.epoch, scope: v.scope, snapshot: log.snapshots,
            fetch: v.fetchRequired,
          });
        }
        break;
      case "snapshotHeader":
        log.snapshots += 1;
        break;
      case "snapshotEnd":
        log.snapshotEnds.push({ epoch: v.position.epoch, head: String(v.position.head) });
        break;
      case "error":
        log.stale.push({ code: v.code, message: v.message });
        break;
    }
  }
}

// phoenix's Socket, whose channels record each push and each join's params.
function recordingSocket(endPoint, settings) {
  const socket = new Socket(endPoint, { authToken: settings.authToken });
  socket.onClose((e) => sync.closes.push({ code: e.code, reason: e.reason }));
  socket.onMessage((m) => {
    if (m.topic === "phoenix" && m.event === "disconnect") sync.disconnects.push(m.payload);
  });
  const channel = socket.channel.bind(socket);
  socket.channel = (name, params) => {
    const topic = name.replace(/^sync:v1:/, "");
    const ch = channel(name, () => {
      const p = params();
      const log = topicLog(topic);
      log.joins.push({ params: p, snapshots: log.snapshots });
      return p;
    });
    const on = ch.on.bind(ch);
    ch.on = (event, callback) =>
      on(event, (payload) => {
        try {
          record(topic, event, payload);
        } catch (e) {
          sync.errors.push(`recording a ${event} of ${topic}: ${e}`);
        }
        callback(payload);
      });
    return ch;
  };
  return socket;
}

// Whose tokens the client's getter asks /token for: the signed-in user's,
// or, after window.__switchToken(identity), another's under the same client
// (an app whose sign-in changed while it kept its client): the client takes
// the new token at its next connect.
let tokenIdentity;
window.__switchToken = (identity) => {
  tokenIdentity = identity;
};

function newClient(identity) {
  sync.clients += 1;
  tokenIdentity = identity;
  return createSyncClient({
    url: server,
    token: async () => {
      const who = tokenIdentity;
      const r = await fetch(`/token?${new URLSearchParams(who)}`);
      if (!r.ok) throw new Error(`/token answered ${r.status}`);
      const token = await r.text();
      sync.tokens.push(who.user);
      return token;
    },
    storage: localStorageStorage(),
    socketFactory: recordingSocket,
    onError: (e) => sync.errors.push(`${e.code}: ${e.message}`),
  });
}

function Topic({ topic, user }) {
  const docs = useTopic(topic);
  const status = useTopicStatus(topic);
  useLayoutEffect(() => {
    for (const d of docs) {
      sync.shown.add(`${user} ${topic} ${d.key} ${d.scope}`);
      sync.shownUnder.add(`${sync.tokens.at(-1)} ${topic} ${d.key} ${d.scope}`);
    }
    if (recording) {
      (sync.renders[topic] ??= []).push({
        status,
        docs: docs.map((d) => `${d.key}@${d.version}`).join(" "),
      });
    }
  }, [docs, status, user, topic]);
  return (
    <section className="topic" data-topic={topic} data-status={status}>
      <h2>
        {topic} <span className={`status ${status}`}>{status}</span> <small>{docs.length} docs</small>
      </h2>
      <ul>
        {docs.map((d) => (
          <li key={d.key} data-topic={topic} data-key={d.key} data-version={String(d.version)}
              data-scope={d.scope} data-value={JSON.stringify(d.value)} data-pending={String(d.pending)}>
            <code>{d.key}</code> <span className="version">v{String(d.version)}</span>{" "}
            <span className="value">{JSON.stringify(d.value)}</span>
          </li>
        ))}
      </ul>
    </section>
  );
}

// One client per signed-in user: another user's sign-in closes it and makes
// a new one, over the same localStorage.
function App() {
  const [session, setSession] = useState(() => ({ identity: sync.identity, client: newClient(sync.identity) }));
  window.__signIn = (identity) => {
    void session.client.close();
    sync.identity = identity;
    setSession({ identity, client: newClient(identity) });
  };
  return (
    <SyncProvider client={session.client}>
      <header>
        signed in as <b data-user={session.identity.user}>{session.identity.user}</b> (org{" "}
        {session.identity.org}), React <span data-react={reactVersion}>{reactVersion}</span>
      </header>
      <main>
        {topics.map((t) => <Topic key={`${session.identity.user}/${t}`} topic={t} user={session.identity.user} />)}
      </main>
    </SyncProvider>
  );
}

createRoot(document.getElementById("root")).render(<App />);
