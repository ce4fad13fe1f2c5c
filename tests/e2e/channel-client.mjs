// A sync:v1 client for the end-to-end tests, as an app would write one over
// the official phoenix package: one Socket, one channel per topic, and per
// topic a doc map (docKey -> {version, payload, scope}) that snapshots and
// updates are applied to. It persists the position each batch, snapshot end
// and heartbeat gives, and joins again with it (the channel's params are a
// function: phoenix reads them on every join and rejoin). It also keeps what
// the tests assert on: the updates applied since each snapshot, the
// snapshots and stale notices counted, every join reply, the socket's
// disconnect notices and close events, and `violations`: anything the wire
// did that a client must never see (an update at or below the persisted
// position, a doc version that skips or repeats, a position going back).
import { Socket } from "phoenix";
import WebSocket from "ws";

import { ErrorCode, Op, decodeServerMessage, serverMessageFromJson } from "./sync-proto.mjs";

export const CHANNEL_PREFIX = "sync:v1:";

// Join errors a client cannot cure by joining again: it leaves the channel
// (phoenix would otherwise rejoin every 10 s forever). Others (unavailable,
// too_many_channels) are left to phoenix's rejoin timer.
const PERMANENT_JOIN_ERRORS = new Set(["forbidden_topic", "unknown_topic", "bad_params", "unmatched_topic"]);

const OP_NAMES = { [Op.UPSERT]: "upsert", [Op.DELETE]: "delete" };
const utf8 = new TextDecoder("utf-8", { fatal: true });

// One topic's state in the client.
class TopicState {
  constructor(client, topic) {
    this.client = client;
    this.topic = topic;
    // docKey -> {version, payload, scope, fetchRequired}: the live docs.
    this.docs = new Map();
    // docKey -> {version, present}: the last version seen of every doc, live
    // or not, to check that versions neither skip nor repeat.
    this.versions = new Map();
    // Every update applied: {docKey, version, op, watermark, epoch, scope, snapshot}
    // (snapshot: the number of snapshots taken before it).
    this.applied = [];
    // The persisted position: {epoch, watermark: bigint}, or undefined.
    this.position = undefined;
    // Each position persisted, in order, with where it came from.
    this.positions = [];
    this.snapshots = 0;        // snapshot headers seen
    this.snapshotEnds = [];    // TopicPosition of each snapshot's end
    this.staleNotices = [];    // StaleCursor of each stale notice
    this.heartbeats = [];      // Heartbeat messages, in order
    this.batches = [];         // per batch, the kinds of its messages in order
    this.joinReplies = [];     // {params, response} of each ok join
    this.joinErrors = [];      // {params, response} of each error reply
    this.joinTimeouts = 0;
    this.channelErrors = [];   // the position when the channel errored (socket lost, phx_error)
    this.left = false;
    this.sentParams = [];      // what each join attempt sent
    this.staging = undefined;  // the snapshot being received
  }

  // The channel's join params: the persisted position, or {} for a snapshot.
  params() {
    const p = this.override ?? (this.position === undefined
      ? {}
      : { epoch: this.position.epoch, watermark: String(this.position.watermark) });
    this.sentParams.push(p);
    return p;
  }

  violation(text) {
    this.client.violations.push(`${this.topic}: ${text}`);
  }

  persist(epoch, watermark, source) {
    const old = this.position;
    if (old !== undefined && old.epoch === epoch && watermark < old.watermark) {
      this.violation(`${source} moves the position back from ${old.watermark} to ${watermark}`);
    }
    this.position = { epoch, watermark };
    this.positions.push({ epoch, watermark, source });
  }

  // docKey -> payload of the live docs (as support.mjs's snapshotOf gives).
  payloads() {
    return new Map([...this.docs].map(([k, d]) => [k, d.payload]));
  }

  // The updates applied since the latest snapshot (all of them, when it
  // took none), as {docKey, version, op, watermark}.
  updatesSinceSnapshot() {
    return this.applied
      .filter((u) => u.snapshot === this.snapshots)
      .map(({ docKey, version, op, watermark }) => ({ docKey, version, op, watermark }));
  }

  // The latest snapshot's position (TopicPosition), or undefined.
  lastSnapshot() {
    return this.snapshotEnds.at(-1);
  }

  applyMessage(m) {
    switch (m.message.case) {
      case "snapshotHeader": return this.snapshotHeader(m.message.value);
      case "doc": return this.doc(m.message.value);
      case "snapshotEnd": return this.snapshotEnd(m.message.value);
      case "update": return this.update(m.message.value);
      case "error": return this.error(m.message.value);
      default: return this.violation(`unexpected ${m.message.case ?? "empty"} message in a batch`);
    }
  }

  snapshotHeader(h) {
    if (this.staging !== undefined) this.violation("a snapshot header inside a snapshot");
    if (h.position?.topic !== this.topic) this.violation(`a snapshot header of topic ${h.position?.topic}`);
    this.snapshots += 1;
    // A snapshot is not resumable part-way: cut off inside it, the client
    // joins again without a position (and takes a fresh snapshot).
    this.position = undefined;
    const delta = h.since > 0n;
    this.staging = {
      header: h,
      docs: delta ? new Map(this.docs) : new Map(),
      versions: delta ? new Map(this.versions) : new Map(),
    };
  }

  doc(d) {
    if (this.staging === undefined) return this.violation(`doc ${d.docKey} outside a snapshot`);
    if (d.topic !== this.topic) this.violation(`doc ${d.docKey} of topic ${d.topic}`);
    this.client.seenKeys.add(d.docKey);
    this.client.seenScopes.add(d.scope);
    if (d.deleted) {
      this.staging.docs.delete(d.docKey);
      this.staging.versions.set(d.docKey, { version: d.docVersion, present: false });
      return;
    }
    this.staging.docs.set(d.docKey, {
      version: d.docVersion,
      payload: JSON.parse(utf8.decode(d.payload)),
      scope: d.scope,
    });
    this.staging.versions.set(d.docKey, { version: d.docVersion, present: true });
  }

  snapshotEnd(e) {
    if (this.staging === undefined) return this.violation("a snapshot end outside a snapshot");
    const p = e.position;
    const start = this.staging.header.position;
    if (p.epoch !== start.epoch || p.head !== start.head) {
      this.violation(`snapshot end at ${p.epoch}/${p.head}, its header said ${start.epoch}/${start.head}`);
    }
    this.docs = this.staging.docs;
    this.versions = this.staging.versions;
    this.staging = undefined;
    this.snapshotEnds.push(p);
    this.persist(p.epoch, p.head, "snapshot end");
  }

  update(u) {
    if (this.staging !== undefined) return this.violation(`update ${u.docKey}@${u.watermark} inside a snapshot`);
    if (u.topic !== this.topic) this.violation(`update of topic ${u.topic}`);
    const op = OP_NAMES[u.op];
    if (op === undefined) return this.violation(`update ${u.docKey} with op ${u.op}`);
    this.client.seenKeys.add(u.docKey);
    this.client.seenScopes.add(u.scope);
    if (this.position === undefined) {
      this.violation(`update ${u.docKey}@${u.watermark} before any snapshot or position`);
    } else if (u.epoch !== this.position.epoch) {
      this.violation(`update ${u.docKey}@${u.watermark} of epoch ${u.epoch}, the position's is ${this.position.epoch}`);
    } else if (u.watermark <= this.position.watermark) {
      this.violation(`update ${u.docKey}@${u.watermark} at or below the position ${this.position.watermark} (a repeat)`);
    }
    const last = this.applied.at(-1);
    if (last !== undefined && last.snapshot === this.snapshots && u.watermark <= last.watermark) {
      this.violation(`update ${u.docKey}@${u.watermark} after ${last.docKey}@${last.watermark}`);
    }
    const known = this.versions.get(u.docKey);
    if (known?.present && u.docVersion !== known.version + 1n) {
      this.violation(`${u.docKey}: version ${u.docVersion} after ${known.version}`);
    } else if (known !== undefined && u.docVersion <= known.version) {
      this.violation(`${u.docKey}: version ${u.docVersion} after ${known.version} (a repeat)`);
    }
    if (u.op === Op.DELETE) {
      this.docs.delete(u.docKey);
    } else {
      this.docs.set(u.docKey, {
        version: u.docVersion,
        payload: u.fetchRequired ? undefined : JSON.parse(utf8.decode(u.payload)),
        scope: u.scope,
        fetchRequired: u.fetchRequired,
      });
    }
    this.versions.set(u.docKey, { version: u.docVersion, present: u.op !== Op.DELETE });
    this.applied.push({
      docKey: u.docKey,
      version: u.docVersion,
      op,
      watermark: u.watermark,
      epoch: u.epoch,
      scope: u.scope,
      snapshot: this.snapshots,
    });
  }

  error(e) {
    if (e.code !== ErrorCode.STALE_CURSOR) {
      return this.violation(`error ${e.code} in a batch: ${e.message}`);
    }
    this.staleNotices.push(e.stale);
    // The position is stale: drop it (the fresh snapshot that follows gives
    // the next one; cut off before its end, join without a position).
    this.position = undefined;
  }

  batch(message) {
    if (message.message.case !== "batch") {
      return this.violation(`a batch event holding ${message.message.case}`);
    }
    const b = message.message.value;
    this.batches.push(b.messages.map((m) => m.message.case));
    for (const m of b.messages) this.applyMessage(m);
    if (b.position !== undefined) {
      if (this.staging !== undefined) this.violation("a batch ending inside a snapshot has a position");
      if (b.position.topic !== this.topic) this.violation(`a batch position of topic ${b.position.topic}`);
      this.persist(b.position.epoch, b.position.watermark, "batch");
    } else if (this.staging === undefined) {
      this.violation("a batch ending outside a snapshot has no position");
    }
  }

  heartbeat(message) {
    if (message.message.case !== "heartbeat") {
      return this.violation(`a heartbeat event holding ${message.message.case}`);
    }
    const h = message.message.value;
    this.heartbeats.push(h);
    for (const c of h.delivered) {
      if (c.topic !== this.topic) continue;
      if (this.staging !== undefined) {
        this.violation("a heartbeat delivered a position inside a snapshot");
        continue;
      }
      this.persist(c.epoch, c.watermark, "heartbeat");
    }
  }
}

// A phoenix Socket to `oasync serve` on loopback, and its channels.
//   port       the server's port
//   token      a JWT (or a function returning one), sent as phoenix's authToken
//   encoding   "json" for the canonical JSON frames; default binary protobuf
//   socket     more phoenix Socket options (reconnectAfterMs, heartbeatIntervalMs, ...)
export class SyncClient {
  constructor({ port, token, encoding, socket = {} }) {
    this.topics = new Map();
    this.violations = [];
    this.seenKeys = new Set();    // every doc key that arrived, in a snapshot or update
    this.seenScopes = new Set();  // every scope that arrived
    this.disconnects = [];        // payloads of ["phoenix", "disconnect"] messages
    this.closes = [];             // {code, reason} of each close event
    this.errors = [];             // messages of the socket's error events
    this.opens = 0;
    this.socket = new Socket(`ws://127.0.0.1:${port}/sync/v1/socket`, {
      transport: WebSocket,
      authToken: token,
      params: encoding === undefined ? {} : { encoding },
      reconnectAfterMs: (tries) => [50, 100, 200, 500][tries - 1] ?? 1000,
      ...socket,
    });
    this.socket.onOpen(() => {
      this.opens += 1;
    });
    this.socket.onClose((event) => {
      this.closes.push({ code: event?.code, reason: event?.reason });
    });
    this.socket.onError((error) => {
      this.errors.push(String(error?.message ?? error?.error?.message ?? error));
    });
    this.socket.onMessage((msg) => {
      if (msg.topic === "phoenix" && msg.event === "disconnect") this.disconnects.push(msg.payload);
    });
  }

  connect() {
    this.socket.connect();
    return this;
  }

  // Joins `topic` (a topic name, or with `channelTopic` any channel topic);
  // returns its TopicState. `params`: fixed join params instead of the
  // persisted position (for the tests of bad params).
  join(topic, { params, channelTopic = CHANNEL_PREFIX + topic } = {}) {
    const t = new TopicState(this, topic);
    if (params !== undefined) t.override = params;
    t.channel = this.socket.channel(channelTopic, () => t.params());
    const decode = (payload) =>
      payload instanceof ArrayBuffer ? decodeServerMessage(payload) : serverMessageFromJson(payload);
    const guarded = (what, fn) => (payload) => {
      try {
        fn(decode(payload));
      } catch (e) {
        t.violation(`a ${what} event that does not decode or apply: ${e.stack ?? e}`);
      }
    };
    t.channel.on("batch", guarded("batch", (m) => t.batch(m)));
    t.channel.on("heartbeat", guarded("heartbeat", (m) => t.heartbeat(m)));
    t.channel.onError(() => {
      t.channelErrors.push(t.position);
      // Cut off inside a snapshot: what arrived of it is dropped.
      t.staging = undefined;
    });
    t.channel.onClose(() => {
      t.left = true;
    });
    t.channel
      .join()
      .receive("ok", (response) => {
        t.joinReplies.push({ params: t.sentParams.at(-1), response });
      })
      .receive("error", (response) => {
        t.joinErrors.push({ params: t.sentParams.at(-1), response });
        if (PERMANENT_JOIN_ERRORS.has(response?.reason)) t.channel.leave();
      })
      .receive("timeout", () => {
        t.joinTimeouts += 1;
      });
    this.topics.set(channelTopic.startsWith(CHANNEL_PREFIX) ? topic : channelTopic, t);
    return t;
  }

  topic(name) {
    const t = this.topics.get(name);
    if (t === undefined) throw new Error(`not joined: ${name}`);
    return t;
  }

  // Closes the socket (phoenix stops reconnecting); resolves once it is closed.
  async disconnect() {
    await new Promise((resolve) => this.socket.disconnect(resolve));
  }
}

// A connected SyncClient with `topics` joined.
export function connectSync(port, token, topics = [], options = {}) {
  const client = new SyncClient({ port, token, ...options });
  for (const topic of topics) client.join(topic);
  return client.connect();
}
