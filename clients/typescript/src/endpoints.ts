// The server's URLs, from the one base URL the client is given.

/** The URLs of one `oasync serve`. */
export interface Endpoints {
  /** The phoenix endpoint (phoenix appends `/websocket?vsn=2.0.0`). */
  readonly socket: string;
  /** `GET` a doc by key: `{http}/sync/v1/doc/{key}?topic={topic}`. */
  doc(key: string, topic: string): string;
  /** `HEAD` a topic: answers 401 when the token is refused. */
  topic(topic: string): string;
}

/** The endpoints under `base` (`https://sync.example`, `wss://...`, or with a
 *  path prefix a proxy adds: `https://example.com/oasync`). Throws on a URL
 *  that is neither http(s) nor ws(s). */
export function endpointsOf(base: string): Endpoints {
  const location = (globalThis as { location?: { href: string } }).location;
  const url = location === undefined ? new URL(base) : new URL(base, location.href);
  const secure = url.protocol === "https:" || url.protocol === "wss:";
  if (!["http:", "https:", "ws:", "wss:"].includes(url.protocol)) {
    throw new Error(`the url "${base}" is not http(s) or ws(s)`);
  }
  const path = url.pathname.replace(/\/+$/, "");
  const http = `${secure ? "https" : "http"}://${url.host}${path}`;
  const ws = `${secure ? "wss" : "ws"}://${url.host}${path}`;
  return {
    socket: `${ws}/sync/v1/socket`,
    doc: (key, topic) =>
      `${http}/sync/v1/doc/${encodeURIComponent(key)}?topic=${encodeURIComponent(topic)}`,
    topic: (topic) => `${http}/v1/topics/${encodeURIComponent(topic)}`,
  };
}
