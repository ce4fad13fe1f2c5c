// The world of a channel test: a fresh database, and the servers, relays
// and official-client sockets it started, stopped at the end (sockets
// first). Shared by channel.test.mjs and channel-raw.test.mjs.
import { connectSync } from "./channel-client.mjs";
import { createDatabase, relay, startServer } from "./support.mjs";

// scenario(fn) for the keys `keys`: fn({db, server(options), proxy(port),
// client(port, token, topics, options)}); proxy(port) is a relay (up) to the
// server on `port`, for a client to connect through.
export function channelScenario(keys) {
  return async function scenario(fn) {
    const db = createDatabase();
    const cleanup = [];
    const world = {
      db,
      server: async (options) => {
        const s = await startServer(db, keys, options);
        cleanup.push(() => s.stop("SIGKILL"));
        return s;
      },
      proxy: async (port) => {
        const r = await relay({ host: "127.0.0.1", port });
        cleanup.push(() => r.close());
        r.up();
        return r;
      },
      client: (port, tok, topics, options) => {
        const c = connectSync(port, tok, topics, options);
        cleanup.push(() => c.disconnect());
        return c;
      },
    };
    try {
      await fn(world);
    } finally {
      for (const stop of cleanup.reverse()) await stop();
      db.drop();
    }
  };
}
