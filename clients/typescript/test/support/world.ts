// A clean world per test: a client over a fake socket, a token getter that
// hands out the tokens given, a storage, an injected fetch, and what the
// client reported.
import { createSyncClient, type SyncClient } from "../../src/client.js";
import type { FetchFunction } from "../../src/doc-fetch.js";
import type { SyncError } from "../../src/errors.js";
import { memoryStorage, type SyncStorage } from "../../src/storage.js";
import { FakeSocket } from "./fake-socket.js";

export const URL_BASE = "https://sync.test";

/** An unsigned JWT with these claims: the client only decodes it. */
export function jwt(claims: Record<string, unknown>): string {
  const part = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");
  return `${part({ alg: "RS256", typ: "JWT" })}.${part(claims)}.c2lnbmF0dXJl`;
}

export const ALICE = jwt({ sub: "alice", org_id: "42", exp: 4102444800 });
export const ALICE_2 = jwt({ sub: "alice", org_id: "42", exp: 4102444801 });
export const ALICE_3 = jwt({ sub: "alice", org_id: "42", exp: 4102444802 });
export const BOB = jwt({ sub: "bob", org_id: "7", exp: 4102444800 });

export interface FetchCall {
  readonly url: string;
  readonly method: string;
  readonly authorization: string | undefined;
}

export interface World {
  readonly client: SyncClient;
  readonly storage: SyncStorage;
  readonly errors: SyncError[];
  readonly fetches: FetchCall[];
  /** How many times the token getter was called. */
  tokenCalls(): number;
  /** The attempt numbers the reconnect delay was asked for, in order. */
  readonly delays: number[];
  /** The socket the client made (one per client). */
  socket(): FakeSocket;
}

export interface WorldOptions {
  /** Tokens handed out in order (the last one again when they run out); a
   *  function for anything else. */
  tokens?: string[] | (() => Promise<string>);
  storage?: SyncStorage;
  /** Default: 0 (every change is written at once). */
  persistDelayMs?: number;
  tokenTimeoutMs?: number;
  /** Answers of the fetch: status and body per URL. */
  respond?: (
    call: FetchCall,
  ) => { status: number; body?: string } | Promise<{ status: number; body?: string }>;
}

export function world(options: WorldOptions = {}): World {
  const storage = options.storage ?? memoryStorage();
  const errors: SyncError[] = [];
  const fetches: FetchCall[] = [];
  const sockets: FakeSocket[] = [];
  const delays: number[] = [];
  let calls = 0;
  const list = Array.isArray(options.tokens) ? options.tokens : [ALICE];
  const token =
    typeof options.tokens === "function"
      ? () => {
          calls += 1;
          return (options.tokens as () => Promise<string>)();
        }
      : () => {
          const t = list[Math.min(calls, list.length - 1)] ?? ALICE;
          calls += 1;
          return Promise.resolve(t);
        };
  const respond = options.respond ?? (() => ({ status: 404, body: "{}" }));
  const fetch: FetchFunction = async (url, init) => {
    const call = { url, method: init.method, authorization: init.headers["Authorization"] };
    fetches.push(call);
    const answer = await respond(call);
    return { status: answer.status, text: () => Promise.resolve(answer.body ?? "") };
  };
  const client = createSyncClient({
    url: URL_BASE,
    token,
    storage,
    fetch,
    persistDelayMs: options.persistDelayMs ?? 0,
    ...(options.tokenTimeoutMs === undefined ? {} : { tokenTimeoutMs: options.tokenTimeoutMs }),
    reconnectDelayMs: (attempt) => {
      delays.push(attempt);
      return 0;
    },
    socketFactory: (endPoint, settings) => {
      const s = new FakeSocket(endPoint, settings);
      sockets.push(s);
      return s;
    },
    onError: (e) => errors.push(e),
  });
  return {
    client,
    storage,
    errors,
    fetches,
    tokenCalls: () => calls,
    delays,
    socket: () => {
      const s = sockets[0];
      if (s === undefined) throw new Error("no socket was made");
      return s;
    },
  };
}

/** Lets promises, microtasks and zero-delay timers run. */
export async function settle(): Promise<void> {
  for (let i = 0; i < 5; i += 1) await new Promise((resolve) => setTimeout(resolve, 0));
}
