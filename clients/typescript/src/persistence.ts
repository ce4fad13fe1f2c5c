// The client's copy of positions and docs in a SyncStorage, kept per
// identity. The key layout (each part URI-encoded):
//
//   oasync/v2/identity                   {"user": U, "org": O}: whose copy it is
//   oasync/v2/{U}/{O}/topic/{topic}      {"position": {"epoch": E, "watermark": "W"} | null,
//                                         "docs": [{"key", "version": "V", "scope", "pending", "value"?}]}
//
// One key per topic, always written whole: the position and the docs in it
// are one state of the cache, so a reader (a reload, another tab of the same
// user) finds that state or the one before, never docs of one state and the
// position of another. Two tabs of one user write the same keys: the last
// write wins, and it is whole. Writes are coalesced: a topic changed is
// written `delayMs` later (or at `flush()`), at most once per delay.
//
// A claim by an identity removes every key but its own before anything is
// read, so one tenant's cache is never shown to another. A tab
// that finds the storage claimed by another identity (another tab signed in
// as someone else) stops persisting. A token without an identity persists
// nothing.
import type { JsonValue, SyncDoc } from "./cache.js";
import { describe, SyncError } from "./errors.js";
import { sameIdentity, type Identity } from "./identity.js";
import { parseUint64, type Position } from "./positions.js";
import type { SyncStorage } from "./storage.js";

const ROOT = "oasync/v2/";
const IDENTITY_KEY = `${ROOT}identity`;
// Keys of an earlier layout (docs and positions in keys of their own),
// removed at every claim.
const LEGACY_ROOT = "oasync/v1/";

/** What a previous session left of a topic. */
export interface PersistedTopic {
  readonly position: Position | undefined;
  readonly docs: SyncDoc[];
}

/** A topic's state as it is to be persisted: read when it is written. */
export interface TopicState {
  readonly position: Position | undefined;
  getDocs(): readonly SyncDoc[];
}

export class Persistence {
  private readonly storage: SyncStorage;
  private readonly report: (error: SyncError) => void;
  private readonly delayMs: number;
  // The key prefix and identity of the copy; undefined: persist nothing.
  private base: string | undefined;
  private owner: Identity | undefined;
  // Topics whose writes failed: no longer persisted this session.
  private readonly failed = new Set<string>();
  // Topics changed and not yet written, with where to read them.
  private readonly dirty = new Map<string, () => TopicState>();
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor(storage: SyncStorage, report: (error: SyncError) => void, delayMs: number) {
    this.storage = storage;
    this.report = report;
    this.delayMs = delayMs;
  }

  /** Makes `identity` the owner of the storage: every key not its own is
   *  removed first (another identity's, or one a tab of another identity
   *  wrote after its claim; all of them when `identity` is undefined).
   *  Returns true when something was removed. Changes not yet written are
   *  dropped. */
  claim(identity: Identity | undefined): boolean {
    this.cancel();
    this.failed.clear();
    this.base = undefined;
    this.owner = undefined;
    const base =
      identity === undefined
        ? undefined
        : `${ROOT}${encodeURIComponent(identity.user)}/${encodeURIComponent(identity.org)}/`;
    let cleared = false;
    try {
      const stored = this.storedIdentity();
      cleared = this.remove(
        (key) =>
          key.startsWith(LEGACY_ROOT) ||
          (key.startsWith(ROOT) &&
            (base === undefined || (key !== IDENTITY_KEY && !key.startsWith(base)))),
      );
      if (identity === undefined) return cleared;
      if (!sameIdentity(stored, identity)) {
        cleared = this.remove((key) => base !== undefined && key.startsWith(base)) || cleared;
        this.storage.setItem(IDENTITY_KEY, JSON.stringify(identity));
      }
    } catch (e) {
      this.report(
        new SyncError(
          "storage",
          `could not claim the storage (${describe(e)}); nothing is persisted`,
          {
            cause: e,
          },
        ),
      );
      return cleared;
    }
    this.owner = identity;
    this.base = base;
    return cleared;
  }

  /** The topic as persisted (nothing when no identity is claimed). A copy
   *  that does not parse is dropped: the topic resyncs. */
  load(topic: string): PersistedTopic {
    if (this.base === undefined) return { position: undefined, docs: [] };
    try {
      const text = this.storage.getItem(this.topicKey(topic));
      return text === null ? { position: undefined, docs: [] } : parseTopic(topic, text);
    } catch (e) {
      this.report(
        new SyncError(
          "storage",
          `topic "${topic}": the persisted copy does not read (${describe(e)}); it is dropped`,
          { topic, cause: e },
        ),
      );
      this.forget(topic);
      return { position: undefined, docs: [] };
    }
  }

  /** The topic changed: `state()` is written within the delay. */
  touch(topic: string, state: () => TopicState): void {
    if (this.base === undefined || this.failed.has(topic)) return;
    this.dirty.set(topic, state);
    if (this.delayMs <= 0) {
      this.flush();
    } else if (this.timer === undefined) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.flush();
      }, this.delayMs);
    }
  }

  /** Writes every topic changed and not yet written. */
  flush(): void {
    const topics = [...this.dirty];
    this.cancel();
    if (topics.length === 0 || this.base === undefined) return;
    if (!this.stillOwner()) return;
    for (const [topic, state] of topics) {
      if (this.failed.has(topic)) continue;
      const s = state();
      const text = JSON.stringify({
        position:
          s.position === undefined
            ? null
            : { epoch: s.position.epoch, watermark: s.position.watermark.toString() },
        docs: s.getDocs().map(docRecord),
      });
      try {
        this.storage.setItem(this.topicKey(topic), text);
      } catch (e) {
        // A full storage, say: a reload resyncs instead of resuming from an
        // older copy than the rest of this session's.
        this.failed.add(topic);
        this.forget(topic);
        this.report(
          new SyncError(
            "storage",
            `topic "${topic}": a write failed (${describe(e)}); the topic is no longer persisted`,
            { topic, cause: e },
          ),
        );
      }
    }
  }

  /** Removes the topic's copy, and any change of it not yet written. */
  forget(topic: string): void {
    this.dirty.delete(topic);
    if (this.base === undefined) return;
    try {
      this.storage.removeItem(this.topicKey(topic));
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

  // Whether the storage is still this identity's: another tab may have
  // claimed it for another. If not, nothing more is persisted.
  private stillOwner(): boolean {
    let stored: Identity | undefined;
    try {
      stored = this.storedIdentity();
    } catch {
      stored = undefined;
    }
    if (sameIdentity(stored, this.owner)) return true;
    this.base = undefined;
    this.owner = undefined;
    return false;
  }

  private cancel(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.dirty.clear();
  }

  private storedIdentity(): Identity | undefined {
    const text = this.storage.getItem(IDENTITY_KEY);
    if (text === null) return undefined;
    try {
      const v = JSON.parse(text) as { user?: unknown; org?: unknown };
      if (typeof v.user !== "string" || typeof v.org !== "string") return undefined;
      return { user: v.user, org: v.org };
    } catch {
      return undefined;
    }
  }

  // Removes the keys `which` picks; true when one was removed.
  private remove(which: (key: string) => boolean): boolean {
    let removed = false;
    for (const key of this.storage.keys()) {
      if (which(key)) {
        this.storage.removeItem(key);
        removed = true;
      }
    }
    return removed;
  }

  private topicKey(topic: string): string {
    return `${this.base}topic/${encodeURIComponent(topic)}`;
  }
}

function docRecord(doc: SyncDoc): Record<string, unknown> {
  const record: Record<string, unknown> = {
    key: doc.key,
    version: doc.version.toString(),
    scope: doc.scope,
    pending: doc.pending,
  };
  if (doc.value !== undefined) record["value"] = doc.value;
  return record;
}

function parseTopic(topic: string, text: string): PersistedTopic {
  const v = JSON.parse(text) as { position?: unknown; docs?: unknown };
  if (typeof v !== "object" || v === null || !Array.isArray(v.docs)) {
    throw new Error(`the copy is ${text.slice(0, 80)}`);
  }
  const docs = v.docs.map((d: unknown, i: number) => parseDoc(topic, i, d));
  return { position: v.position === null ? undefined : parsePosition(v.position), docs };
}

function parsePosition(value: unknown): Position {
  const v = (typeof value === "object" && value !== null ? value : {}) as {
    epoch?: unknown;
    watermark?: unknown;
  };
  if (typeof v.epoch !== "string")
    throw new Error(`the position ${JSON.stringify(value)} has no epoch`);
  return { epoch: v.epoch, watermark: parseUint64(v.watermark, "the persisted watermark") };
}

function parseDoc(topic: string, index: number, value: unknown): SyncDoc {
  const v = (typeof value === "object" && value !== null ? value : {}) as {
    key?: unknown;
    version?: unknown;
    scope?: unknown;
    pending?: unknown;
    value?: JsonValue;
  };
  if (typeof v.key !== "string" || typeof v.scope !== "string" || typeof v.pending !== "boolean") {
    throw new Error(`doc ${index} is persisted as ${JSON.stringify(value).slice(0, 80)}`);
  }
  return {
    topic,
    key: v.key,
    version: parseUint64(v.version, `the version of doc "${v.key}"`),
    scope: v.scope,
    value: v.value,
    pending: v.pending,
  };
}
