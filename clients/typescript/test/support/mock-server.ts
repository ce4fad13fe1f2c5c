// A stand-in for `oasync serve`'s socket, in Node, to run the client over
// the real phoenix package and `ws`: the handshake with the authToken
// subprotocol (401 for refused tokens), Phoenix V2 text frames, binary
// pushes (kind 0), join replies, the disconnect notice before a close, and
// HEAD /v1/topics/{topic} for the client's token probe. It holds no rules of
// sync:v1: each test plays them.
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Duplex } from "node:stream";

import { WebSocketServer, type RawData, type WebSocket } from "ws";

const TOKEN_PREFIX = "base64url.bearer.phx.";

/** A frame the client sent: `[join_ref, ref, topic, event, payload]`. */
export type Frame = [string | null, string | null, string, string, unknown];

export interface Connection {
  readonly token: string;
  readonly ws: WebSocket;
  readonly frames: Frame[];
}

export class MockServer {
  readonly connections: Connection[] = [];
  /** Tokens refused with 401, at the handshake and by HEAD. */
  readonly refused = new Set<string>();
  /** The Authorization header of every HEAD. */
  readonly heads: string[] = [];
  private readonly http: Server;
  private readonly wss: WebSocketServer;

  private constructor() {
    this.wss = new WebSocketServer({
      noServer: true,
      handleProtocols: (protocols) => (protocols.has("phoenix") ? "phoenix" : false),
    });
    this.http = createServer((req, res) => {
      if (req.method === "HEAD" && req.url?.startsWith("/v1/topics/")) {
        const auth = req.headers.authorization ?? "";
        this.heads.push(auth);
        res.statusCode = this.refused.has(auth.replace(/^Bearer /, "")) ? 401 : 200;
      } else {
        res.statusCode = 404;
      }
      res.end();
    });
    this.http.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      const token = tokenOf(req);
      if (
        !req.url?.startsWith("/sync/v1/socket/websocket?") ||
        token === undefined ||
        this.refused.has(token)
      ) {
        socket.end("HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
      }
      this.wss.handleUpgrade(req, socket, head, (ws) => this.accept(ws, token));
    });
  }

  static async start(): Promise<MockServer> {
    const server = new MockServer();
    await new Promise<void>((resolve) => server.http.listen(0, "127.0.0.1", resolve));
    return server;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.http.address() as AddressInfo).port}`;
  }

  /** The phx_join frames of every connection, in order. */
  joins(): { token: string; frame: Frame }[] {
    return this.connections.flatMap((c) =>
      c.frames.filter((f) => f[3] === "phx_join").map((frame) => ({ token: c.token, frame })),
    );
  }

  reply(c: Connection, to: Frame, status: "ok" | "error", response: unknown): void {
    c.ws.send(JSON.stringify([to[0], to[1], to[2], "phx_reply", { status, response }]));
  }

  /** A binary push (phoenix's kind 0) of `event` to the channel joined by `join`. */
  push(c: Connection, join: Frame, event: string, payload: ArrayBuffer): void {
    const enc = new TextEncoder();
    const [joinRef, topic, name] = [
      enc.encode(join[0] ?? ""),
      enc.encode(join[2]),
      enc.encode(event),
    ];
    const header = Uint8Array.from([0, joinRef.length, topic.length, name.length]);
    c.ws.send(Buffer.concat([header, joinRef, topic, name, new Uint8Array(payload)]));
  }

  /** The server's disconnect notice, then the close frame with the same reason. */
  disconnect(c: Connection, code: number, reason: string): void {
    c.ws.send(JSON.stringify([null, null, "phoenix", "disconnect", { reason, message: reason }]));
    c.ws.close(code, reason);
  }

  async close(): Promise<void> {
    for (const c of this.connections) c.ws.terminate();
    this.wss.close();
    await new Promise((resolve) => this.http.close(resolve));
  }

  private accept(ws: WebSocket, token: string): void {
    const connection: Connection = { token, ws, frames: [] };
    this.connections.push(connection);
    ws.on("message", (data: RawData, binary: boolean) => {
      if (binary) return;
      const frame = JSON.parse(String(data)) as Frame;
      connection.frames.push(frame);
      if (frame[2] === "phoenix" && frame[3] === "heartbeat")
        this.reply(connection, frame, "ok", {});
      if (frame[3] === "phx_leave") this.reply(connection, frame, "ok", {});
    });
  }
}

function tokenOf(req: IncomingMessage): string | undefined {
  const offered = (req.headers["sec-websocket-protocol"] ?? "").split(",").map((p) => p.trim());
  const entry = offered.find((p) => p.startsWith(TOKEN_PREFIX));
  return entry === undefined
    ? undefined
    : Buffer.from(entry.slice(TOKEN_PREFIX.length), "base64").toString();
}

/** Waits until `check` holds, polling; throws after `ms`. */
export async function eventually(check: () => boolean, what: string, ms = 3000): Promise<void> {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
