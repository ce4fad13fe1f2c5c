// A fake phoenix Socket and Channel that behave as phoenix.js 1.8.16 does in
// what the client relies on, and let a test play the server: open, close
// with a notice, fail a handshake, answer joins, push batches.
//
// Modelled on phoenix: join params are read when a join is sent (at join(),
// and at each rejoin); when the socket opens, errored channels rejoin; a
// socket that closes or fails errors its joined and joining channels; a
// refused join errors the channel, which phoenix's rejoin timer joins again
// (`tickRejoinTimers`) unless it was left; leave() closes the channel at once.
import type {
  PhoenixChannel,
  PhoenixMessage,
  PhoenixPush,
  PhoenixSocket,
  SocketSettings,
} from "../../src/socket.js";

type State = "joining" | "joined" | "errored" | "closed";

class FakePush implements PhoenixPush {
  readonly hooks: { status: string; callback: (response: unknown) => void }[] = [];
  receive(status: "ok" | "error" | "timeout", callback: (response: unknown) => void): PhoenixPush {
    this.hooks.push({ status, callback });
    return this;
  }
  trigger(status: string, response: unknown): void {
    for (const h of this.hooks) if (h.status === status) h.callback(response);
  }
}

export class FakeChannel implements PhoenixChannel {
  readonly topic: string;
  readonly socket: FakeSocket;
  private readonly params: () => Record<string, unknown>;
  state: State = "closed";
  /** The params of every join sent, in order. */
  readonly joins: Record<string, unknown>[] = [];
  left = false;
  private joinPush = new FakePush();
  private readonly bindings = new Map<string, ((payload: unknown) => void)[]>();
  private readonly errorCallbacks: ((reason: unknown) => void)[] = [];
  private readonly closeCallbacks: ((payload: unknown) => void)[] = [];

  constructor(socket: FakeSocket, topic: string, params: () => Record<string, unknown>) {
    this.socket = socket;
    this.topic = topic;
    this.params = params;
  }

  join(): PhoenixPush {
    this.send();
    return this.joinPush;
  }

  leave(): PhoenixPush {
    this.left = true;
    this.state = "closed";
    this.socket.channels = this.socket.channels.filter((c) => c !== this);
    for (const cb of this.closeCallbacks) cb("leave");
    const push = new FakePush();
    return push;
  }

  on(event: string, callback: (payload: unknown) => void): number {
    const list = this.bindings.get(event) ?? [];
    list.push(callback);
    this.bindings.set(event, list);
    return list.length;
  }

  onError(callback: (reason: unknown) => void): number {
    this.errorCallbacks.push(callback);
    return this.errorCallbacks.length;
  }

  onClose(callback: (payload: unknown) => void): void {
    this.closeCallbacks.push(callback);
  }

  // --- The server's side ---

  /** The params of the latest join. */
  get lastJoin(): Record<string, unknown> | undefined {
    return this.joins.at(-1);
  }

  replyOk(response: unknown): void {
    if (this.state !== "joining")
      throw new Error(`${this.topic}: no join to answer (${this.state})`);
    this.state = "joined";
    this.joinPush.trigger("ok", response);
  }

  replyError(response: unknown): void {
    if (this.state !== "joining")
      throw new Error(`${this.topic}: no join to answer (${this.state})`);
    this.state = "errored";
    this.joinPush.trigger("error", response);
  }

  /** A push of `event` (batch, heartbeat) to this joined channel. */
  push(event: string, payload: unknown): void {
    if (this.state !== "joined") throw new Error(`${this.topic}: not joined (${this.state})`);
    for (const cb of this.bindings.get(event) ?? []) cb(payload);
  }

  /** phoenix's rejoin timer fired: an errored channel joins again. */
  tickRejoin(): void {
    if (this.state === "errored" && !this.left && this.socket.isConnected()) this.send();
  }

  // The channel errored: the transport was lost, or phx_error.
  error(reason: unknown): void {
    if (this.state === "joined" || this.state === "joining") {
      this.state = "errored";
      for (const cb of this.errorCallbacks) cb(reason);
    }
  }

  rejoinIfErrored(): void {
    if (this.state === "errored" && !this.left) this.send();
  }

  private send(): void {
    this.state = "joining";
    this.joins.push(this.params());
  }
}

export class FakeSocket implements PhoenixSocket {
  readonly endPoint: string;
  private readonly settings: SocketSettings;
  state: "closed" | "connecting" | "open" = "closed";
  closeWasClean = true;
  channels: FakeChannel[] = [];
  /** Every channel ever made, in order. */
  readonly made: FakeChannel[] = [];
  /** The token of every connect, in order. */
  readonly tokens: string[] = [];
  disconnects = 0;
  private readonly openCallbacks: (() => void)[] = [];
  private readonly closeCallbacks: ((event: unknown) => void)[] = [];
  private readonly errorCallbacks: ((error: unknown) => void)[] = [];
  private readonly messageCallbacks: ((message: PhoenixMessage) => void)[] = [];

  constructor(endPoint: string, settings: SocketSettings) {
    this.endPoint = endPoint;
    this.settings = settings;
  }

  connect(): void {
    if (this.state !== "closed") return;
    this.closeWasClean = false;
    this.tokens.push(this.settings.authToken());
    this.state = "connecting";
  }

  disconnect(callback?: () => void): void {
    this.disconnects += 1;
    this.closeWasClean = true;
    const was = this.state;
    this.state = "closed";
    if (was !== "closed") {
      for (const c of [...this.channels])
        c.error({ source: "transport", reason: "connection_closed" });
      // phoenix reports the close of a connection it closed too.
      for (const cb of this.closeCallbacks) cb({ code: 1000, reason: "" });
    }
    callback?.();
  }

  channel(topic: string, params: () => Record<string, unknown>): PhoenixChannel {
    const channel = new FakeChannel(this, topic, params);
    this.channels.push(channel);
    this.made.push(channel);
    return channel;
  }

  isConnected(): boolean {
    return this.state === "open";
  }

  onOpen(callback: () => void): string {
    this.openCallbacks.push(callback);
    return String(this.openCallbacks.length);
  }
  onClose(callback: (event: unknown) => void): string {
    this.closeCallbacks.push(callback);
    return String(this.closeCallbacks.length);
  }
  onError(callback: (error: unknown) => void): string {
    this.errorCallbacks.push(callback);
    return String(this.errorCallbacks.length);
  }
  onMessage(callback: (message: PhoenixMessage) => void): string {
    this.messageCallbacks.push(callback);
    return String(this.messageCallbacks.length);
  }

  // --- The server's side ---

  /** The handshake succeeded: errored channels rejoin. */
  open(): void {
    if (this.state !== "connecting") throw new Error(`open: the socket is ${this.state}`);
    this.state = "open";
    for (const cb of this.openCallbacks) cb();
    for (const c of [...this.channels]) c.rejoinIfErrored();
  }

  /** The server sends its disconnect notice (when given), then closes. */
  serverClose(code: number, notice?: { reason: string; message: string }): void {
    if (this.state !== "open") throw new Error(`serverClose: the socket is ${this.state}`);
    if (notice !== undefined) {
      for (const cb of this.messageCallbacks)
        cb({ topic: "phoenix", event: "disconnect", payload: notice });
    }
    this.lost({ code, reason: notice?.reason ?? "" });
  }

  /** The handshake failed (a 401, or no server): error, then close 1006. */
  failHandshake(): void {
    if (this.state !== "connecting") throw new Error(`failHandshake: the socket is ${this.state}`);
    for (const cb of this.errorCallbacks) cb(new Error("Unexpected server response"));
    this.lost({ code: 1006, reason: "" });
  }

  /** phoenix's own `pagehide`: it disconnects the open socket itself. In a
   *  browser its close event may never reach the client (the page is frozen
   *  in the back/forward cache, and phoenix drops the events of a replaced
   *  connection): `closeArrives: false`. */
  pageHide({ closeArrives }: { closeArrives: boolean }): void {
    if (closeArrives) {
      this.disconnect();
      return;
    }
    this.disconnects += 1;
    this.closeWasClean = true;
    this.state = "closed";
    for (const c of [...this.channels])
      c.error({ source: "transport", reason: "connection_closed" });
  }

  /** phoenix's own `pageshow` after a `pagehide`: it connects again itself,
   *  asking the client for the token synchronously. */
  pageShow(): void {
    this.connect();
  }

  /** The channel of `topic` made last. */
  channelOf(topic: string): FakeChannel {
    const found = this.made.filter((c) => c.topic === topic).at(-1);
    if (found === undefined) throw new Error(`no channel ${topic}`);
    return found;
  }

  /** phoenix's rejoin timers fire. */
  tickRejoinTimers(): void {
    for (const c of [...this.channels]) c.tickRejoin();
  }

  private lost(event: { code: number; reason: string }): void {
    this.state = "closed";
    for (const c of [...this.channels])
      c.error({ source: "transport", reason: "connection_closed" });
    for (const cb of [...this.closeCallbacks]) cb(event);
  }
}
