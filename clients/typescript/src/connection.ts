// The socket's life: a fresh token before every connect the client starts,
// reconnects with backoff, and what a refused token leads to. phoenix's auth
// hook is synchronous and phoenix reconnects by itself after any close, so
// (phoenix-channels-notes §5) the client disconnects the socket in its close
// hook, which cancels phoenix's reconnect, fetches a token, and connects
// again; the channels rejoin when it opens.
//
// A refused token is never retried as it is: after the server's
// `unauthorized` notice (or close code 1008), or a handshake that failed
// while a HEAD of a topic with the same token answers 401, the client asks
// for a new token once. The same token again, a second refusal before a
// connection opens, or a getter that fails, ends in `unauthorized`: nothing
// connects until `retry()`. A token whose `exp` passed more than a minute
// ago (by this machine's clock) counts as refused without a connect. A getter
// that gives nothing within `tokenTimeoutMs` has failed.
//
// Failures back off: attempt n waits `reconnectDelayMs(n)`, and n counts
// from the last connection that stayed open for `STABLE_MS`, so a server
// that accepts and closes at once is not reconnected to in a tight loop.
import { describe, SyncError } from "./errors.js";
import { expiryOf } from "./identity.js";
import type { PhoenixSocket, SocketFactory } from "./socket.js";

/** Where the socket stands:
 *  - `idle`: not started, or stopped (no topic wants it);
 *  - `token`: the token getter runs; a connect follows;
 *  - `connecting`: the socket connects (the handshake has not finished);
 *  - `open`: connected;
 *  - `waiting`: closed; the next attempt is scheduled;
 *  - `unauthorized`: no token the server accepts; stopped until `retry()`. */
export type ConnectionPhase = "idle" | "token" | "connecting" | "open" | "waiting" | "unauthorized";

/** The server's answer about a token, for a handshake that failed. */
export type TokenVerdict = "refused" | "accepted" | "unknown";

export interface ConnectionOptions {
  readonly endPoint: string;
  readonly token: () => Promise<string>;
  readonly socketFactory: SocketFactory;
  readonly transport: unknown;
  /** The delay before attempt `attempt` (1, 2, ...) after a failure. */
  readonly reconnectDelayMs: (attempt: number) => number;
  /** How long the token getter may take. */
  readonly tokenTimeoutMs: number;
  /** Whether the server refuses `token` (a handshake failed before opening:
   *  browsers do not tell a 401 from a network failure). */
  readonly probe: (token: string) => Promise<TokenVerdict>;
  /** Each token, before the socket connects with it. */
  readonly tokenFetched: (token: string) => void;
  readonly phaseChanged: (phase: ConnectionPhase) => void;
  readonly report: (error: SyncError) => void;
}

// A connection open this long was a success: the failures before it no
// longer count toward the backoff.
export const STABLE_MS = 10_000;

// How far past its `exp` a token is taken to be expired here (clocks differ).
const EXPIRY_LEEWAY_S = 60;

/** The server's notice before it closes a socket. */
interface DisconnectNotice {
  readonly reason: string;
  readonly message: string;
}

export class Connection {
  readonly socket: PhoenixSocket;
  private readonly options: ConnectionOptions;
  private current: ConnectionPhase = "idle";
  private latestToken: string | undefined;
  // Bumped whenever what is under way is abandoned (stop, a new attempt):
  // an async step that finds it changed does nothing.
  private run = 0;
  private attempts = 0; // failures since the last stable connection
  private openedAt = 0; // when the current connection opened (Date.now())
  private refusals = 0; // refused tokens since the last open
  private opened = false; // the current connection opened
  private notice: DisconnectNotice | undefined; // of the current connection
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor(options: ConnectionOptions) {
    this.options = options;
    this.socket = options.socketFactory(options.endPoint, {
      authToken: () => this.authToken(),
      transport: options.transport,
    });
    this.socket.onOpen(() => this.onOpen());
    this.socket.onClose((event) => this.onClose(event));
    this.socket.onMessage((m) => {
      if (m.topic === "phoenix" && m.event === "disconnect") this.notice = noticeOf(m.payload);
    });
  }

  get phase(): ConnectionPhase {
    return this.current;
  }

  /** The token the socket connects with: for the doc fetches too. */
  get token(): string | undefined {
    return this.latestToken;
  }

  /** Connects, unless already under way (or unauthorized). */
  start(): void {
    if (this.current === "idle") void this.attempt(undefined);
  }

  /** Disconnects; resolves once phoenix has closed the socket. */
  stop(): Promise<void> {
    this.run += 1;
    this.clearTimer();
    if (this.current !== "unauthorized") this.setPhase("idle");
    return new Promise((resolve) => this.socket.disconnect(resolve));
  }

  /** Starts again after `unauthorized` (a user signed in again, say). */
  retry(): void {
    if (this.current !== "unauthorized" && this.current !== "idle") return;
    this.attempts = 0;
    this.refusals = 0;
    void this.attempt(undefined);
  }

  // phoenix calls this at every connect, its own reconnects included.
  private authToken(): string {
    this.opened = false;
    this.notice = undefined;
    const token = this.latestToken ?? "";
    if (this.current === "waiting") {
      // phoenix reconnects by itself (on pageshow, or when the page becomes
      // visible), with the latest token; if refused, onClose takes over. A
      // token known to be expired (a page back from the back/forward cache)
      // is not worth the handshake: that connect is cut at once, and the
      // client's own attempt fetches a token first.
      this.clearTimer();
      this.setPhase("connecting");
      if (expired(token)) {
        const run = this.run;
        queueMicrotask(() => {
          if (run !== this.run || this.current !== "connecting") return;
          this.socket.disconnect();
          void this.attempt(undefined);
        });
      }
    }
    return token;
  }

  // One attempt: a token, then the connect. `refused`: the token the server
  // just refused, which must not be used again.
  private async attempt(refused: string | undefined): Promise<void> {
    const run = ++this.run;
    this.clearTimer();
    this.setPhase("token");
    let token: string;
    try {
      token = await withTimeout(this.options.token(), this.options.tokenTimeoutMs);
    } catch (e) {
      if (run === this.run) {
        this.unauthorized(
          new SyncError("token", `the token getter failed: ${describe(e)}`, { cause: e }),
        );
      }
      return;
    }
    if (run !== this.run) return;
    if (typeof token !== "string" || token === "") {
      this.unauthorized(
        new SyncError("token", `the token getter gave ${JSON.stringify(token)}, not a token`),
      );
      return;
    }
    if (refused !== undefined && token === refused) {
      this.unauthorized(
        new SyncError(
          "unauthorized",
          "the token was refused (by the server, or as expired), and the token getter gave the same one again",
        ),
      );
      return;
    }
    if (expired(token)) {
      // Refused without asking the server: the getter is asked once more.
      this.options.report(
        new SyncError(
          "token",
          `the token getter gave a token that expired at ${new Date((expiryOf(token) ?? 0) * 1000).toISOString()}`,
        ),
      );
      this.refused(token);
      return;
    }
    this.latestToken = token;
    try {
      this.options.tokenFetched(token);
    } catch (e) {
      this.options.report(
        new SyncError("storage", `could not take the token's identity: ${describe(e)}`, {
          cause: e,
        }),
      );
    }
    if (run !== this.run) return;
    this.setPhase("connecting");
    this.socket.connect();
  }

  private onOpen(): void {
    this.opened = true;
    this.openedAt = Date.now();
    this.refusals = 0;
    this.clearTimer();
    this.setPhase("open");
  }

  private onClose(event: unknown): void {
    // Closes the client caused (stop, a disconnect below) are not handled.
    if (this.current !== "connecting" && this.current !== "open") return;
    if (this.socket.closeWasClean) {
      // phoenix disconnected by itself (pagehide); it connects again itself.
      this.setPhase("waiting");
      return;
    }
    const run = ++this.run;
    const wasOpen = this.opened;
    const notice = this.notice;
    const token = this.latestToken;
    if (wasOpen && Date.now() - this.openedAt >= STABLE_MS) this.attempts = 0;
    this.setPhase("waiting");
    // Cancels phoenix's own reconnect: the next connect fetches a token first.
    this.socket.disconnect();
    if (notice?.reason === "bad_frame") {
      this.options.report(
        new SyncError("protocol", `the server closed the socket: ${notice.message}`),
      );
    }
    if (notice?.reason === "unauthorized" || closeCode(event) === 1008) {
      this.refused(token);
    } else if (wasOpen || token === undefined) {
      this.later();
    } else {
      // The handshake failed: a refused token, or the network?
      void this.options.probe(token).then((verdict) => {
        if (run !== this.run) return;
        if (verdict === "refused") this.refused(token);
        else this.later();
      });
    }
  }

  private refused(token: string | undefined): void {
    this.refusals += 1;
    if (this.refusals >= 2) {
      this.unauthorized(
        new SyncError(
          "unauthorized",
          "a fresh token was refused too (by the server, or as expired)",
        ),
      );
    } else {
      void this.attempt(token);
    }
  }

  private later(): void {
    this.attempts += 1;
    const delay = this.options.reconnectDelayMs(this.attempts);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.attempt(undefined);
    }, delay);
  }

  private unauthorized(error: SyncError): void {
    this.run += 1;
    this.clearTimer();
    this.setPhase("unauthorized");
    this.socket.disconnect();
    this.options.report(error);
  }

  private clearTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private setPhase(phase: ConnectionPhase): void {
    if (phase === this.current) return;
    this.current = phase;
    this.options.phaseChanged(phase);
  }
}

/** The default backoff: 0.5 s doubling to 30 s, each with up to half of it
 *  taken off at random, so that clients cut off together spread out. */
export function defaultReconnectDelayMs(attempt: number): number {
  const base = Math.min(30_000, 500 * 2 ** Math.min(attempt - 1, 16));
  return base - Math.random() * (base / 2);
}

function noticeOf(payload: unknown): DisconnectNotice {
  const p = (typeof payload === "object" && payload !== null ? payload : {}) as Record<
    string,
    unknown
  >;
  return {
    reason: typeof p["reason"] === "string" ? p["reason"] : "",
    message: typeof p["message"] === "string" ? p["message"] : "",
  };
}

function closeCode(event: unknown): number | undefined {
  if (typeof event !== "object" || event === null) return undefined;
  const code = (event as { code?: unknown }).code;
  return typeof code === "number" ? code : undefined;
}

// Whether `token`'s exp passed more than the leeway ago.
function expired(token: string): boolean {
  const exp = expiryOf(token);
  return exp !== undefined && exp + EXPIRY_LEEWAY_S < Date.now() / 1000;
}

// `promise`, or a rejection once `ms` passed without it settling.
function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`it gave nothing within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
