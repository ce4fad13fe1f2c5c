// The client's copy of positions and docs in a SyncStorage, kept per
// identity. The key layout (each part URI-encoded):
//
//   oasync/v1/identity                      {"user": U, "org": O} of the data below
//   oasync/v1/{U}/{O}/pos/{topic}           {"epoch": E, "watermark": "W"}
//   oasync/v1/{U}/{O}/doc/{topic}/{key}     {"version": "V", "scope": S, "pending": B, "value": J}
//
// A token of another identity clears every key under oasync/v1/ before
// anything is read, so one tenant's cache is never shown to another. A
// token without an identity persists nothing.
import type { JsonValue, SyncDoc } from "./cache.js";
import { describe, SyncError } from "./errors.js";
import { sameIdentity, type Identity } from "./identity.js";
import { parseUint64, type Position } from "./positions.js";
import type { SyncStorage } from "./storage.js";

const ROOT = "oasync/v1/";
const IDENTITY_KEY = `${ROOT}identity`;

/** What a previous session left of a topic. */
export interface PersistedTopic {
  readonly position: Position | undefined;
  readonly docs: SyncDoc[];
}

export class Persistence {
  private readonly storage: SyncStorage;
  private readonly report: (error: SyncError) => void;
  // The key prefix of the current identity; undefined: persist nothing.
  private base: string | undefined;
  // Topics whose writes failed: no longer persisted this session.
  private readonly failed = new Set<string>();

  constructor(storage: SyncStorage, report: (error: SyncError) => void) {
    this.storage = storage;
    this.report = report;
  }

  /** Makes `identity` the owner of the storage: another identity's data (or
   *  any, when `identity` is undefined) is removed first. Returns true when
   *  something was removed. */
  claim(identity: Identity | undefined): boolean {
    const stored = this.storedIdentity();
    let cleared = false;
    if (identity === undefined || !sameIdentity(stored, identity)) {
      cleared = this.removeAll();
    }
    this.failed.clear();
    if (identity === undefined) {
      this.base = undefined;
      return cleared;
    }
    this.base = `${ROOT}${encodeURIComponent(identity.user)}/${encodeURIComponent(identity.org)}/`;
    if (!sameIdentity(stored, identity)) {
      this.attempt(undefined, () => this.storage.setItem(IDENTITY_KEY, JSON.stringify(identity)));
    }
    return cleared;
  }

  /** The topic as persisted (nothing when no identity is claimed). Records
   *  that do not parse are dropped, with the position: the topic resyncs. */
  load(topic: string): PersistedTopic {
    if (this.base === undefined) return { position: undefined, docs: [] };
    try {
      const docs: SyncDoc[] = [];
      const prefix = this.docPrefix(topic);
      for (const key of this.storage.keys()) {
        if (!key.startsWith(prefix)) continue;
        const text = this.storage.getItem(key);
        if (text !== null)
          docs.push(parseDoc(topic, decodeURIComponent(key.slice(prefix.length)), text));
      }
      const pos = this.storage.getItem(this.positionKey(topic));
      return { position: pos === null ? undefined : parsePosition(pos), docs };
    } catch (e) {
      this.report(
        new SyncError(
          "storage",
          `topic "${topic}": the persisted copy does not read (${describe(e)}); it is dropped`,
          {
            topic,
            cause: e,
          },
        ),
      );
      this.forget(topic);
      return { position: undefined, docs: [] };
    }
  }

  /** Persists one batch's effect: drops the position if asked, writes the
   *  docs named (those `docs` no longer holds are removed), then the position. */
  save(
    topic: string,
    plan: {
      dropPosition: boolean;
      docs: "all" | ReadonlySet<string>;
      position: Position | undefined;
    },
    docs: { getDoc(key: string): SyncDoc | undefined; getDocs(): readonly SyncDoc[] },
  ): void {
    if (this.base === undefined || this.failed.has(topic)) return;
    this.attempt(topic, () => {
      if (plan.dropPosition) this.storage.removeItem(this.positionKey(topic));
      if (plan.docs === "all") {
        const prefix = this.docPrefix(topic);
        for (const key of this.storage.keys())
          if (key.startsWith(prefix)) this.storage.removeItem(key);
        for (const doc of docs.getDocs()) this.writeDoc(topic, doc);
      } else {
        for (const key of plan.docs) {
          const doc = docs.getDoc(key);
          if (doc === undefined) this.storage.removeItem(this.docKey(topic, key));
          else this.writeDoc(topic, doc);
        }
      }
      if (plan.position !== undefined) {
        this.storage.setItem(
          this.positionKey(topic),
          JSON.stringify({
            epoch: plan.position.epoch,
            watermark: plan.position.watermark.toString(),
          }),
        );
      }
    });
  }

  /** Persists one doc (a fetched payload). */
  saveDoc(doc: SyncDoc): void {
    if (this.base === undefined || this.failed.has(doc.topic)) return;
    this.attempt(doc.topic, () => this.writeDoc(doc.topic, doc));
  }

  /** Removes the topic's docs and position. */
  forget(topic: string): void {
    if (this.base === undefined) return;
    try {
      const prefix = this.docPrefix(topic);
      for (const key of this.storage.keys())
        if (key.startsWith(prefix)) this.storage.removeItem(key);
      this.storage.removeItem(this.positionKey(topic));
    } catch (e) {
      this.report(
        new SyncError(
          "storage",
          `topic "${topic}": could not remove the persisted copy (${describe(e)})`,
          { topic, cause: e },
        ),
      );
    }
  }

  private storedIdentity(): Identity | undefined {
    try {
      const text = this.storage.getItem(IDENTITY_KEY);
      if (text === null) return undefined;
      const v = JSON.parse(text) as { user?: unknown; org?: unknown };
      if (typeof v.user !== "string" || typeof v.org !== "string") return undefined;
      return { user: v.user, org: v.org };
    } catch {
      return undefined;
    }
  }

  private removeAll(): boolean {
    let removed = false;
    for (const key of this.storage.keys()) {
      if (key.startsWith(ROOT)) {
        this.storage.removeItem(key);
        removed = true;
      }
    }
    return removed;
  }

  // Runs a write; a failure stops persisting `topic` this session and
  // forgets its copy, so that a reload resyncs instead of resuming from a
  // half-written one.
  private attempt(topic: string | undefined, write: () => void): void {
    try {
      write();
    } catch (e) {
      if (topic === undefined) {
        this.report(
          new SyncError("storage", `could not record the storage's identity (${describe(e)})`, {
            cause: e,
          }),
        );
        return;
      }
      this.failed.add(topic);
      this.forget(topic);
      this.report(
        new SyncError(
          "storage",
          `topic "${topic}": a write failed (${describe(e)}); the topic is no longer persisted`,
          {
            topic,
            cause: e,
          },
        ),
      );
    }
  }

  private writeDoc(topic: string, doc: SyncDoc): void {
    const record: Record<string, unknown> = {
      version: doc.version.toString(),
      scope: doc.scope,
      pending: doc.pending,
    };
    if (doc.value !== undefined) record["value"] = doc.value;
    this.storage.setItem(this.docKey(topic, doc.key), JSON.stringify(record));
  }

  private positionKey(topic: string): string {
    return `${this.base}pos/${encodeURIComponent(topic)}`;
  }

  private docPrefix(topic: string): string {
    return `${this.base}doc/${encodeURIComponent(topic)}/`;
  }

  private docKey(topic: string, key: string): string {
    return this.docPrefix(topic) + encodeURIComponent(key);
  }
}

function parsePosition(text: string): Position {
  const v = JSON.parse(text) as { epoch?: unknown; watermark?: unknown };
  if (typeof v.epoch !== "string") throw new Error(`a position ${text} has no epoch`);
  return { epoch: v.epoch, watermark: parseUint64(v.watermark, "a persisted watermark") };
}

function parseDoc(topic: string, key: string, text: string): SyncDoc {
  const v = JSON.parse(text) as {
    version?: unknown;
    scope?: unknown;
    pending?: unknown;
    value?: JsonValue;
  };
  if (typeof v.scope !== "string" || typeof v.pending !== "boolean") {
    throw new Error(`doc "${key}" is persisted as ${text.slice(0, 80)}`);
  }
  return {
    topic,
    key,
    version: parseUint64(v.version, `the version of doc "${key}"`),
    scope: v.scope,
    value: v.value,
    pending: v.pending,
  };
}
