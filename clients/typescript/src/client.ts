// createSyncClient: one socket to `oasync serve`, one sync:v1 channel per
// subscribed topic, each topic's docs in a TopicCache, persisted through a
// SyncStorage under the token's identity.
import { TopicCache, type Applied, type SyncDoc, type TopicStatus } from "./cache.js";
import { Connection, defaultReconnectDelayMs, type TokenVerdict } from "./connection.js";
import { fetchDoc, type FetchFunction } from "./doc-fetch.js";
import { endpointsOf, type Endpoints } from "./endpoints.js";
import { describe, SyncError } from "./errors.js";
import { identityOf, sameIdentity, type Identity } from "./identity.js";
import { decodePush } from "./messages.js";
import { Persistence } from "./persistence.js";
import { joinParams, parseJoinReply, type JoinParams } from "./positions.js";
import { phoenixSocketFactory, type PhoenixChannel, type SocketFactory } from "./socket.js";
import { memoryStorage, type SyncStorage } from "./storage.js";

/** The channel topic of an oasync topic. */
export const CHANNEL_PREFIX = "sync:v1:";

// The one join refusal that passes (too many reads waiting for the
// database, or the database unreachable): phoenix's rejoin timer is what the
// client wants. Any other (`forbidden_topic`, `unknown_topic`, `bad_params`,
// `unmatched_topic`, `too_many_channels`, a reason unknown today) leaves the
// topic, as the server's README says: phoenix would join again every 10 s
// forever.
const TRANSIENT_REFUSALS: ReadonlySet<string> = new Set(["unavailable"]);

// Withheld payloads fetched at once, at most.
const MAX_CONCURRENT_FETCHES = 4;

const DEFAULT_PERSIST_DELAY_MS = 250;
const DEFAULT_TOKEN_TIMEOUT_MS = 30_000;

export interface SyncClientOptions {
  /** The server's base URL: `https://sync.example` (or `wss://`, or with the
   *  path prefix a proxy adds). The socket is `{url}/sync/v1/socket`, docs
   *  are fetched from `{url}/sync/v1/doc/{key}`. */
  url: string;
  /** Gives a token (a JWT) the server accepts. Called before every connect
   *  and reconnect the client starts, and after the server refused one; a
   *  rejection makes every topic `unauthorized` until `reconnect()`. */
  token: () => Promise<string>;
  /** Where positions and docs persist. Default: memory (nothing survives a
   *  reload); `localStorageStorage()` in browsers. */
  storage?: SyncStorage;
  /** How long a change waits before its topic is written to `storage`, so
   *  that a burst is written once. The page's `pagehide` (or its becoming
   *  hidden) and `close()` write at once. 0: at every change. Default: 250. */
  persistDelayMs?: number;
  /** The WebSocket class phoenix uses. Browsers: leave it out. Node 20, which
   *  has no global WebSocket: `WebSocket` of the `ws` package (without it,
   *  phoenix falls back to long-polling, which oasync does not serve). */
  transport?: unknown;
  /** For the doc fetches, and a HEAD that tells a refused token from a
   *  network failure when a handshake fails. Default: `globalThis.fetch`. */
  fetch?: FetchFunction;
  /** The delay before reconnect attempt `attempt` (1, 2, ...) after a
   *  failure; failures count from the last connection that stayed open
   *  10 s. Default: 0.5 s doubling to 30 s, with jitter. */
  reconnectDelayMs?: (attempt: number) => number;
  /** How long `token()` may take before it counts as failed. Default: 30 s. */
  tokenTimeoutMs?: number;
  /** Builds the phoenix socket. Default: phoenix's Socket; tests pass a fake. */
  socketFactory?: SocketFactory;
  /** Told each error once, with its context. Default: `console.error`. */
  onError?: (error: SyncError) => void;
}

/** A client of the sync:v1 channel. Reads are synchronous and answer from
 *  the cache; `onChange` tells when they would answer differently. */
export interface SyncClient {
  /** Syncs `topic` until the returned function is called. Subscriptions are
   *  counted: the topic is left when its last one ends (its persisted copy
   *  stays, and a later subscription resumes from it). A refused topic stays
   *  refused while subscribed, and is joined again only by a subscription
   *  made after its last one ended. */
  subscribe(topic: string): () => void;
  /** Ends every subscription of `topic` at once. */
  unsubscribe(topic: string): void;
  /** The doc with `key` in `topic`, or when no topic is given, in the first
   *  subscribed topic that holds one. */
  getDoc(key: string, topic?: string): SyncDoc | undefined;
  /** The docs of `topic`, sorted by key: the same array until they change;
   *  empty for a topic not subscribed. */
  getDocs(topic: string): readonly SyncDoc[];
  /** Where `topic` stands; undefined for a topic not subscribed. */
  getStatus(topic: string): TopicStatus | undefined;
  /** Calls `listener` with a topic's name after its docs or status changed
   *  (once per push applied, never within one); returns its removal. */
  onChange(listener: (topic: string) => void): () => void;
  /** Connects again with a fresh token from `token()`: after
   *  `unauthorized` (a user signed in again), or when the app's user changed
   *  while connected. A token of another identity clears the cache and the
   *  storage before anything is shown or joined. */
  reconnect(): void;
  /** Leaves every topic and closes the socket; the client is done. */
  close(): Promise<void>;
}

/** A client of `oasync serve`'s sync:v1 channel at `options.url`. It
 *  connects when the first topic is subscribed. */
export function createSyncClient(options: SyncClientOptions): SyncClient {
  return new Client(options);
}

// One subscribed topic.
interface Entry {
  readonly topic: string;
  cache: TopicCache;
  holds: number;
  // The channel joined (or joining); undefined before the first token, and
  // once left or refused.
  channel: PhoenixChannel | undefined;
}

// A withheld payload to fetch: `version` is the one the doc was pending at.
interface FetchJob {
  readonly entry: Entry;
  readonly key: string;
  readonly version: bigint;
  readonly id: string;
}

class Client implements SyncClient {
  private readonly endpoints: Endpoints;
  private readonly fetch: FetchFunction | undefined;
  private readonly report: (error: SyncError) => void;
  private readonly persistence: Persistence;
  private readonly connection: Connection;
  private readonly topics = new Map<string, Entry>();
  private readonly listeners = new Set<(topic: string) => void>();
  // Whose token the cache holds; set by the first token.
  private identity: Identity | undefined;
  private claimed = false;
  // Bumped when the cache is cleared for another identity: work begun
  // before (fetches) does not land.
  private generation = 0;
  private readonly fetching = new Set<string>();
  private fetchQueue: FetchJob[] = [];
  private activeFetches = 0;
  private closed = false;
  private readonly stopWatchingPage: () => void;

  constructor(options: SyncClientOptions) {
    if (typeof options.token !== "function") {
      throw new SyncError(
        "usage",
        "createSyncClient: options.token must be a function returning a Promise of a token",
      );
    }
    try {
      this.endpoints = endpointsOf(options.url);
    } catch (e) {
      throw new SyncError("usage", `createSyncClient: ${describe(e)}`, { cause: e });
    }
    const globalFetch = (globalThis as { fetch?: FetchFunction }).fetch;
    this.fetch = options.fetch ?? globalFetch?.bind(globalThis);
    const onError = options.onError ?? ((e: SyncError) => console.error(e));
    this.report = (e) => onError(e);
    this.persistence = new Persistence(
      options.storage ?? memoryStorage(),
      this.report,
      options.persistDelayMs ?? DEFAULT_PERSIST_DELAY_MS,
    );
    this.stopWatchingPage = whenPageHides(() => this.persistence.flush());
    this.connection = new Connection({
      endPoint: this.endpoints.socket,
      token: options.token,
      socketFactory: options.socketFactory ?? phoenixSocketFactory,
      transport: options.transport,
      reconnectDelayMs: options.reconnectDelayMs ?? defaultReconnectDelayMs,
      tokenTimeoutMs: options.tokenTimeoutMs ?? DEFAULT_TOKEN_TIMEOUT_MS,
      probe: (token) => this.probe(token),
      tokenFetched: (token) => this.tokenFetched(token),
      phaseChanged: () => {
        for (const topic of this.topics.keys()) this.notify(topic);
      },
      report: this.report,
    });
  }

  subscribe(topic: string): () => void {
    if (this.closed) throw new SyncError("usage", `subscribe("${topic}"): the client is closed`);
    if (typeof topic !== "string" || topic === "") {
      throw new SyncError(
        "usage",
        `subscribe(${JSON.stringify(topic)}): a topic is a non-empty string`,
      );
    }
    let entry = this.topics.get(topic);
    if (entry === undefined) {
      entry = { topic, cache: new TopicCache(topic), holds: 0, channel: undefined };
      this.topics.set(topic, entry);
      if (this.claimed) this.load(entry);
      this.ensureChannel(entry);
      this.notify(topic);
    }
    entry.holds += 1;
    if (this.wantsSocket()) this.connection.start();
    const held = entry;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      held.holds -= 1;
      // Deferred, so that a subscription ended and made again at once (React
      // StrictMode's effects) keeps the channel.
      if (held.holds === 0) queueMicrotask(() => this.dropIfUnheld(held));
    };
  }

  unsubscribe(topic: string): void {
    const entry = this.topics.get(topic);
    if (entry === undefined) return;
    entry.holds = 0;
    this.dropIfUnheld(entry);
  }

  getDoc(key: string, topic?: string): SyncDoc | undefined {
    if (topic !== undefined) return this.topics.get(topic)?.cache.getDoc(key);
    for (const entry of this.topics.values()) {
      const doc = entry.cache.getDoc(key);
      if (doc !== undefined) return doc;
    }
    return undefined;
  }

  getDocs(topic: string): readonly SyncDoc[] {
    return this.topics.get(topic)?.cache.getDocs() ?? EMPTY;
  }

  getStatus(topic: string): TopicStatus | undefined {
    const entry = this.topics.get(topic);
    if (entry === undefined) return undefined;
    const status = entry.cache.status();
    if (status !== "refused" && this.connection.phase === "unauthorized") return "unauthorized";
    return status;
  }

  onChange(listener: (topic: string) => void): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  reconnect(): void {
    if (!this.closed && this.wantsSocket()) this.connection.retry();
  }

  async close(): Promise<void> {
    if (this.closed) return this.connection.stop();
    this.closed = true;
    this.persistence.flush();
    this.stopWatchingPage();
    for (const entry of [...this.topics.values()]) this.drop(entry);
    // Nothing of this client is called again: phoenix keeps its socket's
    // window listeners (it has no way to remove them), and through them the
    // socket, but no longer the caches or the app's listeners.
    this.listeners.clear();
    this.generation += 1;
    this.fetchQueue = [];
    this.fetching.clear();
    await this.connection.stop();
  }

  // --- Tokens and identity ---------------------------------------------------

  // Each token, before the socket connects with it: the first one unlocks
  // the persisted copy (when it is of the same identity), another identity's
  // clears the cache and the storage before anything is shown or joined.
  private tokenFetched(token: string): void {
    const identity = identityOf(token);
    if (this.claimed && sameIdentity(this.identity, identity)) return;
    const first = !this.claimed;
    this.claimed = true;
    this.identity = identity;
    this.persistence.claim(identity);
    this.generation += 1;
    this.fetching.clear();
    this.fetchQueue = [];
    for (const entry of this.topics.values()) {
      if (!first) {
        // The socket is closed here: the channels rejoin on open, with
        // the new cache's (empty) position.
        entry.cache = new TopicCache(entry.topic);
      }
      this.load(entry);
      this.ensureChannel(entry);
      this.notify(entry.topic);
    }
  }

  private persist(entry: Entry): void {
    this.persistence.touch(entry.topic, () => entry.cache);
  }

  private load(entry: Entry): void {
    const persisted = this.persistence.load(entry.topic);
    entry.cache.load(persisted.position, persisted.docs);
  }

  // Whether the server refuses `token`, after a handshake failed before
  // opening (browsers hide its status): a HEAD of a subscribed topic answers
  // 401 for a refused token.
  private async probe(token: string): Promise<TokenVerdict> {
    const entry = [...this.topics.values()].find((e) => e.cache.status() !== "refused");
    if (entry === undefined || this.fetch === undefined) return "unknown";
    try {
      const response = await this.fetch(this.endpoints.topic(entry.topic), {
        method: "HEAD",
        headers: { Authorization: `Bearer ${token}` },
      });
      if (response.status === 401) return "refused";
      // 503: the server has not read the revoked sessions yet.
      return response.status === 503 ? "unknown" : "accepted";
    } catch {
      return "unknown";
    }
  }

  // --- Channels --------------------------------------------------------------

  private ensureChannel(entry: Entry): void {
    if (!this.claimed || entry.channel !== undefined || entry.cache.status() === "refused") return;
    const channel = this.connection.socket.channel(CHANNEL_PREFIX + entry.topic, () =>
      this.joinParams(entry),
    );
    entry.channel = channel;
    channel.on("batch", (payload) => this.onPush(entry, channel, "batch", payload));
    channel.on("heartbeat", (payload) => this.onPush(entry, channel, "heartbeat", payload));
    channel.onError(() => {
      if (entry.channel === channel && entry.cache.connecting()) this.notify(entry.topic);
    });
    channel.onClose(() => {
      // Only the server's phx_close gets here (the client forgets a channel
      // before it leaves it): not joined again, as that could loop.
      if (entry.channel === channel) this.refuse(entry, "closed", "the server closed the channel");
    });
    channel
      .join()
      .receive("ok", (response) => this.onJoined(entry, channel, response))
      .receive("error", (response) => this.onJoinError(entry, channel, response));
  }

  // phoenix reads the params at every join and rejoin: a join is being sent.
  private joinParams(entry: Entry): JoinParams {
    if (entry.cache.connecting()) this.notify(entry.topic);
    return joinParams(entry.cache.position);
  }

  private onJoined(entry: Entry, channel: PhoenixChannel, response: unknown): void {
    if (entry.channel !== channel) return;
    let reply;
    try {
      reply = parseJoinReply(response);
    } catch (e) {
      this.refuse(entry, "protocol_error", describe(e));
      return;
    }
    if (entry.cache.joined(reply)) this.notify(entry.topic);
    // Payloads still withheld (from a previous session, or a failed fetch).
    this.fetchPending(entry, entry.cache.pendingKeys());
  }

  private onJoinError(entry: Entry, channel: PhoenixChannel, response: unknown): void {
    if (entry.channel !== channel) return;
    const r = (typeof response === "object" && response !== null ? response : {}) as Record<
      string,
      unknown
    >;
    const reason = typeof r["reason"] === "string" ? r["reason"] : "unknown";
    const message = typeof r["message"] === "string" ? r["message"] : JSON.stringify(response);
    if (!TRANSIENT_REFUSALS.has(reason)) {
      this.refuse(entry, reason, message);
    } else {
      this.report(
        new SyncError(
          "refused",
          `topic "${entry.topic}": the join was refused (${reason}: ${message}); phoenix joins again`,
          {
            topic: entry.topic,
            reason,
          },
        ),
      );
    }
  }

  private onPush(
    entry: Entry,
    channel: PhoenixChannel,
    event: "batch" | "heartbeat",
    payload: unknown,
  ): void {
    if (entry.channel !== channel) return;
    let applied: Applied;
    try {
      const message = decodePush(entry.topic, event, payload).message;
      if (message.case === "batch" && event === "batch") {
        applied = entry.cache.applyBatch(message.value);
      } else if (message.case === "heartbeat" && event === "heartbeat") {
        applied = entry.cache.applyHeartbeat(message.value);
      } else {
        throw new SyncError(
          "protocol",
          `a ${event} push holding a ${message.case ?? "empty"} message`,
        );
      }
    } catch (e) {
      this.refuse(entry, "protocol_error", describe(e));
      return;
    }
    if (applied.persist) this.persist(entry);
    if (applied.changed) this.notify(entry.topic);
    this.fetchPending(entry, applied.fetch);
  }

  // Leaves the topic for good (until subscribed anew): its docs and position
  // go, in memory and in storage.
  private refuse(entry: Entry, reason: string, message: string): void {
    const channel = entry.channel;
    entry.channel = undefined;
    channel?.leave();
    entry.cache.refused();
    this.persistence.forget(entry.topic);
    this.notify(entry.topic);
    const code = reason === "protocol_error" ? "protocol" : "refused";
    this.report(
      new SyncError(code, `topic "${entry.topic}": ${reason}: ${message}; the topic is left`, {
        topic: entry.topic,
        reason,
      }),
    );
    if (!this.wantsSocket()) void this.connection.stop();
  }

  private dropIfUnheld(entry: Entry): void {
    if (entry.holds > 0 || this.topics.get(entry.topic) !== entry) return;
    this.drop(entry);
    if (!this.wantsSocket()) void this.connection.stop();
  }

  private drop(entry: Entry): void {
    // What waits is written first: a subscription made again soon resumes
    // from the latest position.
    this.persistence.flush();
    this.topics.delete(entry.topic);
    const channel = entry.channel;
    entry.channel = undefined;
    channel?.leave();
    this.notify(entry.topic);
  }

  // A topic is to be joined.
  private wantsSocket(): boolean {
    for (const entry of this.topics.values()) if (entry.cache.status() !== "refused") return true;
    return false;
  }

  // --- Withheld payloads -----------------------------------------------------

  private fetchPending(entry: Entry, keys: readonly string[]): void {
    for (const key of keys) {
      const doc = entry.cache.getDoc(key);
      const id = JSON.stringify([entry.topic, key]);
      if (doc === undefined || !doc.pending || this.fetching.has(id)) continue;
      this.fetching.add(id);
      this.fetchQueue.push({ entry, key, version: doc.version, id });
    }
    while (this.activeFetches < MAX_CONCURRENT_FETCHES && this.fetchQueue.length > 0) {
      const job = this.fetchQueue.shift();
      if (job === undefined) break;
      this.activeFetches += 1;
      void this.fetchOne(job).finally(() => {
        this.activeFetches -= 1;
        this.fetchPending(job.entry, []);
      });
    }
  }

  private async fetchOne(job: FetchJob): Promise<void> {
    const { key } = job;
    const topic = job.entry.topic;
    const generation = this.generation;
    // The topic's entry now. A fetch can outlive its subscription: what it
    // fetched applies to the topic subscribed again meanwhile, if the doc
    // there is still pending at that version.
    const live = () => (generation === this.generation ? this.topics.get(topic) : undefined);
    try {
      const token = this.connection.token;
      if (this.fetch === undefined || token === undefined) {
        throw new SyncError(
          "fetch",
          `doc "${key}" of topic "${topic}": no fetch function to get it with`,
          { topic },
        );
      }
      const answer = await fetchDoc(this.fetch, this.endpoints.doc(key, topic), token, topic, key);
      const entry = live();
      if (entry === undefined || answer.kind !== "doc" || answer.deleted) return;
      if (entry.cache.applyFetched(key, answer.doc) !== undefined) {
        this.persist(entry);
        this.notify(topic);
      }
    } catch (e) {
      if (live() !== undefined) {
        this.report(
          e instanceof SyncError ? e : new SyncError("fetch", describe(e), { topic, cause: e }),
        );
      }
    } finally {
      if (generation === this.generation) {
        this.fetching.delete(job.id);
        // Still withheld: a newer version came while this fetch ran, or the
        // topic was subscribed again (its join skipped this key, as it was
        // being fetched). Fetch it again.
        const entry = live();
        const now = entry?.cache.getDoc(key);
        if (
          entry !== undefined &&
          now !== undefined &&
          now.pending &&
          (now.version > job.version || entry !== job.entry)
        ) {
          this.fetchPending(entry, [key]);
        }
      }
    }
  }

  // --- Listeners -------------------------------------------------------------

  private notify(topic: string): void {
    for (const listener of [...this.listeners]) {
      try {
        listener(topic);
      } catch (e) {
        this.report(
          new SyncError("usage", `a change listener threw: ${describe(e)}`, { topic, cause: e }),
        );
      }
    }
  }
}

const EMPTY: readonly SyncDoc[] = Object.freeze([]);

// Calls `flush` when the page is hidden or left (a tab closed, a reload, a
// page put in the back/forward cache): what is still to be written is
// written while the page can. Returns the listeners' removal. Outside a
// browser, does nothing.
function whenPageHides(flush: () => void): () => void {
  const page = globalThis as {
    addEventListener?: (type: string, listener: () => void) => void;
    removeEventListener?: (type: string, listener: () => void) => void;
    document?: { visibilityState?: string };
  };
  const add = page.addEventListener;
  const remove = page.removeEventListener;
  if (typeof add !== "function" || typeof remove !== "function") return () => {};
  const onHide = () => flush();
  const onVisibility = () => {
    if (page.document?.visibilityState === "hidden") flush();
  };
  add.call(page, "pagehide", onHide);
  add.call(page, "visibilitychange", onVisibility);
  return () => {
    remove.call(page, "pagehide", onHide);
    remove.call(page, "visibilitychange", onVisibility);
  };
}
