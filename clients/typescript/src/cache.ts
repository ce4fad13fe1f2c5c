// One topic's docs as the client shows them, and the rules that change them:
// snapshots (staged, then swapped in at once), updates (version-checked),
// stale notices, heartbeats and the topic's status. Plain TypeScript: no
// React, no phoenix, no storage; the client persists the topic when
// `Applied` says so.
import type { Batch, Heartbeat, Update } from "./gen/openagents/sync/v1/sync_pb.js";
import { ErrorCode, Op } from "./gen/openagents/sync/v1/sync_pb.js";
import { SyncError } from "./errors.js";
import { atHead, goesBack, reached, type JoinReply, type Position } from "./positions.js";

/** A doc's JSON value. */
export type JsonValue =
  null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** One doc of a topic, as the cache holds it. Immutable: a change replaces
 *  the object, so `===` tells whether a doc changed. */
export interface SyncDoc {
  readonly topic: string;
  readonly key: string;
  /** The doc's version: 1 at creation, +1 per change. */
  readonly version: bigint;
  /** The tenant scope it belongs to (e.g. `org:42`); empty when unscoped. */
  readonly scope: string;
  /** The doc at `version`. While `pending`, the last value known (an older
   *  version's), or undefined when there is none. */
  readonly value: JsonValue | undefined;
  /** True while the payload, which the server withheld as too large for a
   *  push (`fetch_required`), is being fetched from `GET /sync/v1/doc/{key}`. */
  readonly pending: boolean;
}

/** Where a topic stands:
 *  - `connecting`: a join is sent (or waits for the socket), with no reply yet;
 *  - `catching_up`: joined; a snapshot, or the changes since the position
 *    joined with, are arriving; the docs shown are not yet the head's;
 *  - `live`: joined and delivered through the head the join reply (or the
 *    latest snapshot) named; changes arrive as they commit;
 *  - `resyncing`: the position was stale: a fresh snapshot is arriving; the
 *    old docs stay shown until it ends, then are replaced at once;
 *  - `refused`: the server refused the join (or broke the protocol): the topic
 *    was left and is not joined again until subscribed anew;
 *  - `unauthorized`: no token the server accepts could be had; nothing is
 *    joined until `reconnect()`. */
export type TopicStatus =
  "connecting" | "catching_up" | "live" | "resyncing" | "refused" | "unauthorized";

/** What applying a batch or heartbeat changed. */
export interface Applied {
  /** Something `getDocs`, `getDoc` or `status` answer has changed. */
  readonly changed: boolean;
  /** The position or the docs changed: the persisted copy is to be
   *  written again. */
  readonly persist: boolean;
  /** Keys whose withheld payloads are to be fetched. */
  readonly fetch: readonly string[];
}

/** A withheld payload, as fetched. */
export interface FetchedDoc {
  readonly version: bigint;
  readonly epoch: string;
  readonly scope: string;
  readonly value: JsonValue;
}

// Where the channel stands: between joins, joined, or refused for good.
type Link = "connecting" | "joined" | "refused";

// A snapshot being received: its docs replace the shown ones at its end.
interface Staging {
  readonly epoch: string;
  readonly head: bigint;
  readonly docs: Map<string, SyncDoc>;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

export class TopicCache {
  readonly topic: string;
  private docs = new Map<string, SyncDoc>();
  private staging: Staging | undefined;
  private current: Position | undefined;
  // The position the docs shown are at: unlike `current`, kept through a
  // stale notice and a snapshot's pages, as the docs are.
  private docsAt: Position | undefined;
  private link: Link = "connecting";
  private reply: JoinReply | undefined;
  // Delivered through the join reply's head, or a snapshot ended since.
  private caughtUp = false;
  // A stale notice came, and the snapshot after it has not ended.
  private resyncing = false;
  private sorted: readonly SyncDoc[] | undefined;

  constructor(topic: string) {
    this.topic = topic;
  }

  /** The position to join with: undefined asks for a snapshot. */
  get position(): Position | undefined {
    return this.current;
  }

  status(): TopicStatus {
    if (this.link === "refused") return "refused";
    if (this.link === "connecting") return "connecting";
    if (this.resyncing) return "resyncing";
    if (this.staging !== undefined || !this.caughtUp) return "catching_up";
    return "live";
  }

  getDoc(key: string): SyncDoc | undefined {
    return this.docs.get(key);
  }

  /** The docs shown, sorted by key; the same array until they change. */
  getDocs(): readonly SyncDoc[] {
    if (this.sorted === undefined) {
      const docs = [...this.docs.values()].sort((a, b) =>
        a.key < b.key ? -1 : a.key > b.key ? 1 : 0,
      );
      this.sorted = Object.freeze(docs);
    }
    return this.sorted;
  }

  /** Every doc whose payload is still to be fetched. */
  pendingKeys(): string[] {
    return [...this.docs.values()].filter((d) => d.pending).map((d) => d.key);
  }

  /** Takes what a previous session persisted (before the first join). */
  load(position: Position | undefined, docs: Iterable<SyncDoc>): void {
    this.docs = new Map([...docs].map((d) => [d.key, Object.freeze({ ...d })]));
    this.current = position;
    this.docsAt = position;
    this.sorted = undefined;
  }

  /** A join is being sent (or the channel errored and phoenix will rejoin):
   *  a snapshot cut off is dropped; its position was dropped at its header. */
  connecting(): boolean {
    const before = this.status();
    if (this.link !== "refused") this.link = "connecting";
    this.staging = undefined;
    this.reply = undefined;
    this.caughtUp = false;
    return this.status() !== before;
  }

  /** The join was accepted. */
  joined(reply: JoinReply): boolean {
    const before = this.status();
    this.link = "joined";
    this.reply = reply;
    this.caughtUp = atHead(this.current, reply);
    return this.status() !== before;
  }

  /** The join was refused for good: the topic's docs and position go. */
  refused(): void {
    this.clear();
    this.link = "refused";
  }

  /** Forgets the docs and the position (another identity's token came). */
  clear(): void {
    this.docs = new Map();
    this.staging = undefined;
    this.current = undefined;
    this.docsAt = undefined;
    this.resyncing = false;
    this.caughtUp = false;
    this.sorted = undefined;
  }

  /** Applies one `batch` push, message by message. Throws a `protocol`
   *  SyncError for what the protocol rules out (an update inside a snapshot,
   *  a doc outside one...): the topic is then not to be trusted. */
  applyBatch(batch: Batch): Applied {
    const before = this.status();
    const start = this.current;
    let docsChanged = false;
    const fetch: string[] = [];
    for (const m of batch.messages) {
      const message = m.message;
      switch (message.case) {
        case "error": {
          const e = message.value;
          if (e.code !== ErrorCode.STALE_CURSOR) {
            throw this.violation(`an error in a batch, code ${e.code}: ${e.message}`);
          }
          // The position is stale: a fresh snapshot follows. The old docs
          // stay shown until it ends. A snapshot it cut short (an epoch
          // reset or a purge between its pages) is dropped.
          this.resyncing = true;
          this.caughtUp = false;
          this.current = undefined;
          this.staging = undefined;
          break;
        }
        case "snapshotHeader": {
          const h = message.value;
          if (this.staging !== undefined)
            throw this.violation("a snapshot header inside a snapshot");
          if (h.position === undefined)
            throw this.violation("a snapshot header without a position");
          // A delta applies to the docs at `since`: the position they are at.
          const at = this.docsAt;
          if (
            h.since > 0n &&
            (at === undefined || at.epoch !== h.position.epoch || at.watermark !== h.since)
          ) {
            throw this.violation(
              `a delta snapshot since ${h.position.epoch}/${h.since}, the docs are at ${
                at === undefined ? "no position" : `${at.epoch}/${at.watermark}`
              }`,
            );
          }
          this.staging = {
            epoch: h.position.epoch,
            head: h.position.head,
            docs: h.since > 0n ? new Map(this.docs) : new Map(),
          };
          // A snapshot cannot be resumed part-way: cut off inside it, the
          // channel joins again without a position.
          this.current = undefined;
          break;
        }
        case "doc": {
          const d = message.value;
          if (this.staging === undefined)
            throw this.violation(`doc "${d.docKey}" outside a snapshot`);
          if (d.topic !== this.topic)
            throw this.violation(`doc "${d.docKey}" of topic "${d.topic}"`);
          if (d.deleted) {
            this.staging.docs.delete(d.docKey);
          } else {
            this.staging.docs.set(
              d.docKey,
              this.doc(d.docKey, d.docVersion, d.scope, this.parse(d.docKey, d.payload), false),
            );
          }
          break;
        }
        case "snapshotEnd": {
          const p = message.value.position;
          const staging = this.staging;
          if (staging === undefined) throw this.violation("a snapshot end outside a snapshot");
          if (p === undefined || p.epoch !== staging.epoch || p.head !== staging.head) {
            throw this.violation(
              `a snapshot end at ${p?.epoch}/${p?.head}, its header said ${staging.epoch}/${staging.head}`,
            );
          }
          // The swap: every doc of the new set at once.
          this.docs = staging.docs;
          this.staging = undefined;
          this.current = { epoch: p.epoch, watermark: p.head };
          this.docsAt = this.current;
          this.resyncing = false;
          this.caughtUp = true;
          docsChanged = true;
          break;
        }
        case "update": {
          const u = message.value;
          if (this.staging !== undefined) {
            throw this.violation(`update of "${u.docKey}" at ${u.watermark} inside a snapshot`);
          }
          if (u.topic !== this.topic)
            throw this.violation(`update of "${u.docKey}" of topic "${u.topic}"`);
          if (this.applyUpdate(u)) {
            docsChanged = true;
            if (u.op === Op.UPSERT && u.fetchRequired) fetch.push(u.docKey);
          }
          break;
        }
        default:
          throw this.violation(`a ${message.case ?? "empty"} message in a batch`);
      }
    }
    // A batch that ends inside a snapshot carries no position.
    if (batch.position !== undefined && this.staging === undefined) {
      this.advance({ epoch: batch.position.epoch, watermark: batch.position.watermark });
    }
    if (docsChanged) this.sorted = undefined;
    return {
      changed: docsChanged || this.status() !== before,
      persist: docsChanged || this.current !== start,
      fetch,
    };
  }

  /** Applies a `heartbeat` push: its delivered position for this topic, if
   *  any (none inside a snapshot), is the position now. */
  applyHeartbeat(heartbeat: Heartbeat): Applied {
    const before = this.status();
    const start = this.current;
    for (const c of heartbeat.delivered) {
      if (c.topic !== this.topic || this.staging !== undefined || this.resyncing) continue;
      this.advance({ epoch: c.epoch, watermark: c.watermark });
    }
    return {
      changed: this.status() !== before,
      persist: this.current !== start,
      fetch: [],
    };
  }

  /** Fills in a withheld payload; returns the doc written, or undefined when
   *  the fetch is moot (the doc is gone, no longer pending, newer than what
   *  was fetched, or of another epoch). Removals come from the stream only:
   *  a doc fetched as deleted stays pending until its delete arrives. */
  applyFetched(key: string, fetched: FetchedDoc): SyncDoc | undefined {
    const cached = this.docs.get(key);
    if (cached === undefined || !cached.pending || fetched.version < cached.version)
      return undefined;
    if (this.current === undefined || fetched.epoch !== this.current.epoch) return undefined;
    const doc = this.doc(key, fetched.version, fetched.scope, fetched.value, false);
    this.docs.set(key, doc);
    this.sorted = undefined;
    return doc;
  }

  // An update, version-checked; true when it changed the docs.
  private applyUpdate(u: Update): boolean {
    // At or below the position: already applied (a repeat).
    if (
      this.current !== undefined &&
      u.epoch === this.current.epoch &&
      u.watermark <= this.current.watermark
    ) {
      return false;
    }
    const cached = this.docs.get(u.docKey);
    if (cached !== undefined && u.docVersion <= cached.version) return false;
    if (u.op === Op.DELETE) {
      // A tombstone, or the doc left the tenant's scope.
      return this.docs.delete(u.docKey);
    }
    if (u.op !== Op.UPSERT) throw this.violation(`update of "${u.docKey}" with op ${u.op}`);
    const doc = u.fetchRequired
      ? this.doc(u.docKey, u.docVersion, u.scope, cached?.value, true)
      : this.doc(u.docKey, u.docVersion, u.scope, this.parse(u.docKey, u.payload), false);
    this.docs.set(u.docKey, doc);
    return true;
  }

  private advance(next: Position): void {
    if (goesBack(this.current, next)) return;
    this.current = next;
    this.docsAt = next;
    if (this.reply !== undefined && reached(next, this.reply)) this.caughtUp = true;
  }

  private doc(
    key: string,
    version: bigint,
    scope: string,
    value: JsonValue | undefined,
    pending: boolean,
  ): SyncDoc {
    return Object.freeze({ topic: this.topic, key, version, scope, value, pending });
  }

  private parse(key: string, payload: Uint8Array): JsonValue {
    try {
      return JSON.parse(utf8.decode(payload)) as JsonValue;
    } catch (e) {
      throw this.violation(`the payload of doc "${key}" is not UTF-8 JSON (${String(e)})`);
    }
  }

  private violation(what: string): SyncError {
    return new SyncError("protocol", `topic "${this.topic}": ${what}`, { topic: this.topic });
  }
}
