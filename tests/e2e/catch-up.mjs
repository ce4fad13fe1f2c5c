// The catch-up client of scripts/bench (scenario catch-up): reads a topic
// with the official client from an offset until it is up to date, and prints
// how many messages it got.
//   node catch-up.mjs URL TOKEN OFFSET
import { stream } from "@durable-streams/client";

const [url, token, offset] = process.argv.slice(2);
let count = 0;
const res = await stream({
  url,
  headers: { Authorization: `Bearer ${token}` },
  offset,
  live: "long-poll",
  json: true,
  warnOnHttp: false,
});
await new Promise((resolve, reject) => {
  res.subscribeJson((batch) => {
    count += batch.items.length;
    if (batch.upToDate) resolve();
  });
  res.closed.catch(reject);
});
res.cancel();
console.log(`${count} messages`);
