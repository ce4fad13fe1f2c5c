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
// connects until `retry()`. A getter that gives nothing within
// `tokenTimeoutMs` has failed.
//
// phoenix connects by itself too (on `pageshow`, or when a hidden page
// becomes visible), and asks for the token synchronously: it gets the last
// one, unless that one has expired, judged by the time since it was fetched
// and its lifetime (`exp` - `iat`), so that this machine's clock need not be
// right. Then phoenix's connect gets no token and is cut, and the client's
// own attempt fetches one.
//
// Failures back off: attempt n waits `reconnectDelayMs(n)`. Attempts and
// refusals count from the last connection that stayed open for `STABLE_MS`,
// so a server that accepts and closes at once (or refuses each fresh token
// after the handshake) is not reconnected to in a tight loop.
import { describe, SyncError } from "./errors.js";
import { timesOf } from "./identity.js";
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
const STABLE_MS = 10_000;

// setTimeout's longest delay; a longer timeout is none.
const MAX_TIMEOUT_MS = 2_147_483_647;

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
  // When the latest token expires by this machine's clock (Date.now()), or
  // undefined when it does not say.
  private latestExpiry: number | undefined;
  // True while the client's own socket.connect() runs: authToken() is then
  // not phoenix's own reconnect.
  private connectingOurs = false;
  // Bumped whenever what is under way is abandoned (stop, a new attempt):
  // an async step that finds it changed does nothing.
  private run = 0;
  private attempts = 0; // failures since the last stable connection
  private openedAt = 0; // when the current connection opened (Date.now())
  private refusals = 0; // refused tokens since the last stable connection
  private opened = false; // the current connection opened
  private notice: DisconnectNotice | undefined; // of the current connection
  private timer: ReturnType<typeof setTimeout> | undefined;
  private tokenTimer: ReturnType<typeof setTimeout> | undefined;

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
    this.clearTokenTimer();
    if (this.current !== "unauthorized") this.setPhase("idle");
    return new Promise((resolve) => this.socket.disconnect(resolve));
  }

  /** Connects again with a fresh token: after `unauthorized`, or at once
   *  while connected (the user changed, say): what is under way is dropped,
   *  the getter is asked first, then the socket connects again. */
  retry(): void {
    const connected = this.current !== "idle" && this.current !== "unauthorized";
    this.attempts = 0;
    this.refusals = 0;
    // The attempt takes the phase synchronously: the close that follows is
    // the client's own, and is not handled as a failure.
    void this.attempt(undefined);
    if (connected) this.socket.disconnect();
  }

  // phoenix calls this at every connect, its own reconnects included.
  private authToken(): string {
    this.opened = false;
    this.notice = undefined;
    const token = this.latestToken ?? "";
    if (this.connectingOurs) return token;
    // phoenix's own connect. Its close may not have reached the client (a
    // page frozen in the back/forward cache), so the phase can be anything.
    this.clearTimer();
    this.setPhase("connecting");
    if (this.latestExpiry === undefined || Date.now() < this.latestExpiry) return token;
    const run = this.run;
    queueMicrotask(() => {
      if (run !== this.run) return;
      // The attempt takes the phase first: the close of phoenix's connect
      // is then the client's own.
      void this.attempt(undefined);
      this.socket.disconnect();
    });
    return "";
  }

  // One attempt: a token, then the connect. `refused`: the token the server
  // just refused, which must not be used again.
  private async attempt(refused: string | undefined): Promise<void> {
    const run = ++this.run;
    this.clearTimer();
    this.setPhase("token");
    let token: string;
    try {
      token = await this.fetchToken();
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
          "the server refused the token, and the token getter gave the same one again",
        ),
      );
      return;
    }
    this.latestToken = token;
    this.latestExpiry = expiryByThisClock(token);
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
    this.connectingOurs = true;
    try {
      this.socket.connect();
    } finally {
      this.connectingOurs = false;
    }
  }

  private onOpen(): void {
    this.opened = true;
    this.openedAt = Date.now();
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
    if (wasOpen && Date.now() - this.openedAt >= STABLE_MS) {
      this.attempts = 0;
      this.refusals = 0;
    }
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
      this.unauthorized(new SyncError("unauthorized", "the server refused a fresh token too"));
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

  // The getter's token, or a rejection after `tokenTimeoutMs` (none when
  // that is not a positive number, or beyond setTimeout's range).
  private fetchToken(): Promise<string> {
    this.clearTokenTimer();
    const token = Promise.resolve(this.options.token());
    const ms = this.options.tokenTimeoutMs;
    if (!(ms > 0 && ms <= MAX_TIMEOUT_MS)) return token;
    const timeout = new Promise<never>((_, reject) => {
      this.tokenTimer = setTimeout(() => reject(new Error(`it gave nothing within ${ms} ms`)), ms);
    });
    return Promise.race([token, timeout]).finally(() => this.clearTokenTimer());
  }

  private clearTokenTimer(): void {
    if (this.tokenTimer !== undefined) clearTimeout(this.tokenTimer);
    this.tokenTimer = undefined;
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

// When `token` expires by this machine's clock: its lifetime (`exp` -
// `iat`) from now, as it was just fetched; without `iat`, its `exp` as it
// stands (a clock that is wrong then only costs a needless new token).
function expiryByThisClock(token: string): number | undefined {
  const { exp, iat } = timesOf(token);
  if (exp === undefined) return undefined;
  return iat === undefined ? exp * 1000 : Date.now() + (exp - iat) * 1000;
}
