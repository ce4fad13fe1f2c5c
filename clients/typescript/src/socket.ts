// The seam between the client and phoenix: the few calls of phoenix's Socket
// and Channel the client makes, and a factory that builds the real one. Unit
// tests pass a fake factory; nothing else in the client imports phoenix.
import { Socket } from "phoenix";

/** What a join, leave or push answers: `receive` registers per status. */
export interface PhoenixPush {
  receive(status: "ok" | "error" | "timeout", callback: (response: unknown) => void): PhoenixPush;
}

/** One channel (topic) of a phoenix Socket, as phoenix.js 1.8 behaves:
 *  params are read again at every join and rejoin, a socket that opens again
 *  rejoins errored channels, a failed join is retried by phoenix until
 *  `leave()`. */
export interface PhoenixChannel {
  join(): PhoenixPush;
  leave(): PhoenixPush;
  /** Binary pushes arrive as an ArrayBuffer. */
  on(event: string, callback: (payload: unknown) => void): number;
  /** The socket was lost, or the server sent phx_error: phoenix rejoins. */
  onError(callback: (reason: unknown) => void): number;
  /** The channel ended (left, or phx_close): phoenix forgets it. */
  onClose(callback: (payload: unknown) => void): void;
}

/** A frame as phoenix hands it to `onMessage`. */
export interface PhoenixMessage {
  topic: string;
  event: string;
  payload: unknown;
}

/** The socket: one connection that carries every channel. */
export interface PhoenixSocket {
  /** True after `disconnect()` (ours, or phoenix's own on `pagehide`) until
   *  the next connect: a close then was not the server's or the network's. */
  readonly closeWasClean: boolean;
  connect(): void;
  disconnect(callback?: () => void, code?: number, reason?: string): void;
  channel(topic: string, params: () => Record<string, unknown>): PhoenixChannel;
  isConnected(): boolean;
  onOpen(callback: () => void): string;
  /** `event` is the transport's CloseEvent (`code`, `reason`). */
  onClose(callback: (event: unknown) => void): string;
  onError(callback: (error: unknown) => void): string;
  onMessage(callback: (message: PhoenixMessage) => void): string;
}

/** What the client asks of a socket it builds. */
export interface SocketSettings {
  /** Called synchronously at every connect, phoenix's own reconnects too. */
  authToken: () => string;
  /** The WebSocket class (Node: `ws`); undefined: the global WebSocket. */
  transport?: unknown;
}

/** Builds the socket for `endPoint` (phoenix appends `/websocket`). */
export type SocketFactory = (endPoint: string, settings: SocketSettings) => PhoenixSocket;

/** The default: phoenix's Socket, with its own reconnect left in place for
 *  the cases the client does not drive (its heartbeat timeout, `pageshow`). */
export const phoenixSocketFactory: SocketFactory = (endPoint, settings) =>
  new Socket(endPoint, {
    authToken: settings.authToken,
    ...(settings.transport === undefined ? {} : { transport: settings.transport }),
  });
