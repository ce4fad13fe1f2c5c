// The external stores the hooks read, and the hooks rendered by
// react-dom/server over a client synced through the fake socket.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { createElement, useCallback } from "react";
import { renderToString } from "react-dom/server";

import type { SyncDoc } from "../src/cache.js";
import { SyncProvider, useDoc, useTopic, useTopicStatus } from "../src/react.js";
import { docStore, statusStore, topicStore } from "../src/stores.js";
import {
  batchBytes,
  doc,
  joinReply,
  snapshotEnd,
  snapshotHeader,
  TOPIC,
  upsert,
} from "./support/messages.js";
import { settle, world, type World } from "./support/world.js";

const CHANNEL = `sync:v1:${TOPIC}`;

async function synced(): Promise<World> {
  const w = world();
  w.client.subscribe(TOPIC);
  w.client.subscribe("other.topic");
  await settle();
  w.socket().open();
  const channel = w.socket().channelOf(CHANNEL);
  channel.replyOk(joinReply(10n));
  channel.push(
    "batch",
    batchBytes(
      [
        snapshotHeader(10n),
        doc("run:a", 1n, { name: "first" }),
        doc("run:b", 1n, { name: "second" }),
        snapshotEnd(10n),
      ],
      {
        watermark: 10n,
      },
    ),
  );
  return w;
}

test("the stores: a snapshot is the same object until it changes; subscribers hear their topic only", async () => {
  const w = await synced();
  const docs = topicStore(w.client, TOPIC);
  const one = docStore(w.client, "run:a");
  const status = statusStore(w.client, TOPIC);
  let heard = 0;
  const stop = docs.subscribe(() => (heard += 1));
  const before = docs.getSnapshot();
  const doc = one.getSnapshot();
  assert.equal(docs.getSnapshot(), before);
  assert.equal(one.getSnapshot(), doc);
  assert.equal(status.getSnapshot(), "live");

  w.socket()
    .channelOf("sync:v1:other.topic")
    .replyOk({ topic: "other.topic", epoch: "e", head: "0", purged_through: "0" });
  assert.equal(heard, 0, "another topic's change is not heard");

  w.socket()
    .channelOf(CHANNEL)
    .push("batch", batchBytes([upsert("run:b", 2n, 11n, { name: "changed" })], { watermark: 11n }));
  assert.equal(heard, 1);
  assert.notEqual(docs.getSnapshot(), before);
  assert.equal(one.getSnapshot(), doc, "run:a did not change");
  stop();
  w.socket()
    .channelOf(CHANNEL)
    .push("batch", batchBytes([upsert("run:b", 3n, 12n, {})], { watermark: 12n }));
  assert.equal(heard, 1, "not heard once unsubscribed");
});

test("useTopic, useDoc and useTopicStatus render the cache (react-dom/server)", async () => {
  const w = await synced();
  function Runs() {
    const names = useTopic(
      TOPIC,
      useCallback(
        (docs: readonly SyncDoc[]) => docs.map((d) => (d.value as { name: string }).name).join(","),
        [],
      ),
    );
    const all = useTopic(TOPIC);
    const first = useDoc("run:a");
    const status = useTopicStatus(TOPIC);
    return createElement("p", null, `${status}|${all.length}|${names}|${first?.version}`);
  }
  const html = renderToString(
    createElement(SyncProvider, { client: w.client }, createElement(Runs)),
  );
  assert.equal(html, "<p>live|2|first,second|1</p>");
});

test("a hook outside a SyncProvider throws", () => {
  function Lost() {
    useDoc("x");
    return null;
  }
  assert.throws(
    () => renderToString(createElement(Lost)),
    /no <SyncProvider client=\{\.\.\.\}> above this component/,
  );
});

test("the core entry point imports no React", () => {
  const src = join(dirname(fileURLToPath(import.meta.url)), "..", "src");
  const seen = new Set<string>();
  const visit = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    const text = readFileSync(join(src, file), "utf8");
    for (const [, spec] of text.matchAll(/from "([^"]+)"/g)) {
      assert.ok(
        spec !== "react" && !spec?.startsWith("react/") && spec !== "react-dom",
        `${file} imports ${spec}`,
      );
      if (spec?.startsWith("./")) visit(join(dirname(file), spec));
    }
  };
  visit("index.js");
  assert.ok(seen.has("client.js") && seen.has("cache.js"));
  assert.ok(!seen.has("react.js"));
});
