// The part of the `phoenix` npm package (1.8.16, which ships no types) that
// this client uses. Written here rather than taken from @types/phoenix, which
// types `authToken` as a string only: 1.8.9 and later also take a function,
// called synchronously at every connect and reconnect.
declare module "phoenix" {
  export interface SocketOptions {
    /** The WebSocket class; browsers default to the global one. */
    transport?: unknown;
    /** Sent as the `base64url.bearer.phx.` subprotocol at every connect. */
    authToken?: string | (() => string);
    params?: Record<string, unknown> | (() => Record<string, unknown>);
    reconnectAfterMs?: (tries: number) => number;
    rejoinAfterMs?: (tries: number) => number;
    heartbeatIntervalMs?: number;
    timeout?: number;
  }

  /** A decoded frame: `[join_ref, ref, topic, event, payload]`. */
  export interface Message {
    topic: string;
    event: string;
    payload: unknown;
    ref: string | null;
    join_ref: string | null;
  }

  export class Push {
    receive(status: string, callback: (response: unknown) => void): Push;
  }

  export class Channel {
    readonly topic: string;
    join(timeout?: number): Push;
    leave(timeout?: number): Push;
    on(event: string, callback: (payload: unknown) => void): number;
    off(event: string, ref?: number): void;
    onError(callback: (reason: unknown) => void): number;
    onClose(callback: (payload: unknown) => void): void;
  }

  export class Socket {
    constructor(endPoint: string, options?: SocketOptions);
    /** True once disconnect() was called, until the next connect. */
    closeWasClean: boolean;
    connect(): void;
    disconnect(callback?: () => void, code?: number, reason?: string): void;
    channel(
      topic: string,
      params?: Record<string, unknown> | (() => Record<string, unknown>),
    ): Channel;
    isConnected(): boolean;
    onOpen(callback: () => void): string;
    onClose(callback: (event: unknown) => void): string;
    onError(callback: (error: unknown) => void): string;
    onMessage(callback: (message: Message) => void): string;
    off(refs: string[]): void;
  }
}
