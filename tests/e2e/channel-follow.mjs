// Follows one topic over the sync:v1 channel with the official phoenix
// client, and prints what arrives: the join, the snapshot, each update.
// scripts/demo runs it; it is also the shortest complete client there is.
//
//   node channel-follow.mjs SOCKET_URL TOKEN TOPIC SECONDS
//
// SOCKET_URL is the socket's path without /websocket, for example
// ws://127.0.0.1:4437/sync/v1/socket. Exits 0 after SECONDS, 1 if the join
// was refused.
import { Socket } from "phoenix";
import WebSocket from "ws";

import { Op, decodeServerMessage } from "./sync-proto.mjs";

const [url, token, topic, seconds] = process.argv.slice(2);
if (!url || !token || !topic || !(Number(seconds) > 0)) {
  console.error("usage: node channel-follow.mjs SOCKET_URL TOKEN TOPIC SECONDS");
  process.exit(2);
}

const text = new TextDecoder();
let position = null; // {epoch, watermark}: what a real client persists
const socket = new Socket(url, { transport: WebSocket, authToken: token });
socket.onMessage((m) => {
  if (m.topic === "phoenix" && m.event === "disconnect") console.log(`    closed: ${m.payload.reason}`);
});
socket.connect();
const channel = socket.channel(`sync:v1:${topic}`, () => position ?? {});
channel.on("batch", (bytes) => {
  const batch = decodeServerMessage(bytes).message.value; // ServerMessage.batch
  let docs = 0;
  for (const { message: m } of batch.messages) {
    if (m.case === "doc") docs++;
    if (m.case === "snapshotEnd") console.log(`    snapshot: ${docs} docs of this tenant, head ${m.value.position.head}`);
    if (m.case === "error") console.log(`    stale: ${m.value.message}; a fresh snapshot follows`);
    if (m.case === "update") {
      const u = m.value;
      const op = u.op === Op.DELETE ? "delete" : "upsert";
      console.log(`    update ${u.docKey} v${u.docVersion} ${op} ${u.scope} ${text.decode(u.payload)} (watermark ${u.watermark})`);
    }
  }
  if (batch.position) position = { epoch: batch.position.epoch, watermark: String(batch.position.watermark) };
});
channel
  .join()
  .receive("ok", (r) => console.log(`    joined sync:v1:${topic} (head ${r.head})`))
  .receive("error", (r) => {
    console.log(`    refused: ${r.reason}: ${r.message}`);
    channel.leave();
    socket.disconnect(() => process.exit(1));
  });
setTimeout(() => socket.disconnect(() => process.exit(0)), Number(seconds) * 1000);
