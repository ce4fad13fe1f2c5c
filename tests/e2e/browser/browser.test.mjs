// Our TypeScript client (clients/typescript) in a real browser: Debian's
// chromium, headless, driven by playwright-core, shows a React page
// (browser/page/main.jsx) that uses the client against oasync serve. Each
// test has its own database, servers and browser context (a fresh
// localStorage). What the page shows is compared with what oasync itself
// says: `oasync snapshot --scope` for the docs on screen, `oasync tail
// --scope` for the updates that arrived (no gap, no repeat), `oasync doc get`
// for a doc whose payload was fetched. The page runs React 19 (the client's),
// and in one test React 18 (tests/e2e's), the oldest the client allows.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { isDeepStrictEqual } from "node:util";
import { after, describe, test } from "node:test";

import {
  RUNS,
  createDatabase,
  freePort,
  makeKeys,
  oasync,
  relay,
  root,
  snapshotOf,
  startServer,
} from "../support.mjs";
import {
  NOTES,
  PREFIX,
  TENANT,
  TOPICS,
  WORKERS,
  burst,
  burstWrites,
  limits,
  mixedWrites,
  sink,
  sinkInBackground,
} from "../writes.mjs";
import { launchBrowser, pageServer } from "./browser-support.mjs";

const keys = makeKeys();
after(() => keys.remove());

// Generous: the suite runs on a loaded 2-core machine.
const WAIT = 60000;

// Where the first test leaves its screenshot, for the client's README.
const SCREENSHOT = join(root, "clients", "typescript", "docs", "screenshot.png");

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Polls `check` every 200 ms (each poll may run oasync and read the page:
// not too often on a 2-core machine) until it returns true; fails after `ms`.
async function eventually(check, ms, what) {
  const until = Date.now() + ms;
  for (;;) {
    if (await check()) return;
    if (Date.now() > until) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

// `n` updates in the background, in sink calls of 250 one after the other,
// so that they stream for a while: resolves once all are committed.
async function burstInBackground(db, topic, n) {
  for (let from = 0; from < n; from += 250) {
    await sinkInBackground(db, burstWrites(topic, Math.min(250, n - from), from));
  }
}

// The tenant's view of a topic's journal after `after`, as the page records
// updates: {key, version, op, watermark} (oasync tail --scope).
function journalOf(db, topic, { after, epoch, scope = TENANT }) {
  const args = ["tail", topic, "--after", String(after), "--format", "ndjson", "--scope", scope, "--epoch", epoch];
  const r = oasync(args, { url: db.url });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.split("\n").filter(Boolean).map((line) => {
    const e = JSON.parse(line);
    return { key: e.doc_key, version: String(e.doc_version), op: e.op, watermark: String(e.watermark) };
  });
}

// What the page recorded of `topic` (window.__sync.topics[topic]).
const logOf = (page, topic) => page.evaluate((t) => window.__sync.topics[t] ?? null, topic);

// The docs on screen for `topic`, as a Map key -> value (as snapshotOf gives;
// undefined for a doc whose withheld payload is being fetched, none known).
async function onScreen(page, topic) {
  const docs = await page.evaluate(
    (t) => [...document.querySelectorAll(`li[data-topic="${t}"]`)].map((li) => [li.dataset.key, li.dataset.value]),
    topic,
  );
  return new Map(docs.map(([k, v]) => [k, v === undefined ? undefined : JSON.parse(v)]));
}

const statusOf = (page, topic) =>
  page.evaluate((t) => document.querySelector(`section[data-topic="${t}"]`)?.dataset.status, topic);

// The client's localStorage keys: one per topic under its user and org
// (written within the client's persist delay), and whose they are.
const IDENTITY_KEY = "oasync:oasync/v2/identity";
const topicKey = (user, org, topic) =>
  `oasync:oasync/v2/${encodeURIComponent(user)}/${encodeURIComponent(org)}/topic/${encodeURIComponent(topic)}`;

// Waits until the page's localStorage holds `user`'s copy of each topic.
async function persistedFor(page, user, org, topics) {
  const keys = topics.map((t) => topicKey(user, org, t));
  await eventually(() => page.evaluate((ks) => ks.every((k) => localStorage.getItem(k) !== null), keys),
    WAIT, `${user}'s copy of ${topics.join(", ")} in localStorage`);
}

async function eventuallyEqual(actual, expected, ms, what) {
  let a;
  let e;
  try {
    await eventually(async () => {
      a = await actual();
      e = await expected();
      return isDeepStrictEqual(a, e);
    }, ms, what);
  } catch (error) {
    assert.deepEqual(a, e, `${what}: ${error.message}`);
    throw error;
  }
}

// The page shows the topic's docs as oasync snapshot --scope gives them, live.
async function converged(page, db, topic, scope = TENANT) {
  await eventuallyEqual(() => onScreen(page, topic), () => snapshotOf(db, scope, topic), WAIT,
    `${topic}: the docs on screen to equal oasync snapshot --scope ${scope}`);
  await eventually(async () => (await statusOf(page, topic)) === "live", WAIT, `${topic} to be live`);
}

// The updates that arrived since the page's latest snapshot of the topic
// equal the journal of tenant `scope` after that snapshot's head: no gap, no
// repeat. With `from` ({epoch, watermark}): since that position (a page that
// took no snapshot).
async function sameAsJournal(page, db, topic, { from, scope = TENANT } = {}) {
  const since = async () => {
    const log = await logOf(page, topic);
    const at = from ?? log.snapshotEnds.at(-1);
    const updates = log.updates.filter((u) => u.snapshot === log.snapshots)
      .map(({ key, version, op, watermark }) => ({ key, version, op, watermark }));
    return { updates, at };
  };
  await eventuallyEqual(async () => (await since()).updates, async () => {
    const { at } = await since();
    return journalOf(db, topic, { after: at.head ?? at.watermark, epoch: at.epoch, scope });
  }, WAIT, `${topic}: the updates that arrived to equal oasync tail --scope ${scope}`);
}

const waitStatus = (page, topic, status) =>
  eventually(async () => (await statusOf(page, topic)) === status, WAIT, `${topic} to be ${status}`);

// Nothing went wrong in the page: no error the client reported (beyond the
// `allowed` ones), and no stale notice or second snapshot unless expected.
async function assertClean(page, topics, { snapshots = 1, stale = 0, allowed = [] } = {}) {
  const errors = await page.evaluate(() => window.__sync.errors);
  const unexpected = errors.filter((e) => !allowed.some((re) => re.test(e)));
  assert.deepEqual(unexpected, []);
  for (const topic of topics) {
    const log = await logOf(page, topic);
    assert.equal(log.snapshots, snapshots, `${topic}: snapshots`);
    assert.equal(log.stale.length, stale, `${topic}: stale notices`);
  }
}

// One browser for the file, launched by the first test: a browser that does
// not start fails every test with its error (no test is skipped).
let launched;
const browserOnce = () => (launched ??= launchBrowser());
after(async () => {
  const browser = await launched?.catch(() => undefined);
  await browser?.close();
});

// Each test's world: a fresh database, the page's server, a fresh browser
// context, and the servers and relays it starts, all stopped at the end.
// server(): oasync serve, letting the page's origin in (CORS, for the
// client's HEAD probe). open(base, topics, options): the page, against the
// server (or relay) at `base`.
async function scenario(fn, { scopes = TOPICS } = {}) {
  const db = createDatabase();
  const cleanup = [];
  try {
    const pages = await pageServer(keys, { scopes });
    cleanup.push(() => pages.close());
    const context = await (await browserOnce()).newContext({ viewport: { width: 1200, height: 480 } });
    cleanup.push(() => context.close());
    const consoleErrors = [];
    const consoleLines = []; // the pages' console, quoted when the test fails
    const world = {
      db,
      pages,
      context,
      server: async (options = {}) => {
        const s = await startServer(db, keys, { ...options, args: ["--cors-origin", pages.origin] });
        cleanup.push(() => s.stop("SIGKILL"));
        return s;
      },
      proxy: async (port) => {
        const r = await relay({ host: "127.0.0.1", port });
        cleanup.push(() => r.close());
        r.up();
        return r;
      },
      open: async (base, topics, options) => {
        const page = await context.newPage();
        page.on("pageerror", (e) => consoleErrors.push(e.message));
        page.on("console", (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
        await page.goto(pages.url(base, topics, options));
        return page;
      },
    };
    try {
      await fn(world);
      assert.deepEqual(consoleErrors, [], "uncaught errors in the page");
    } catch (e) {
      e.message += `\nthe page's console, last lines:\n${consoleLines.slice(-15).join("\n")}`;
      throw e;
    }
  } finally {
    for (const stop of cleanup.reverse()) await stop();
    db.drop();
  }
}

// The three-topic check, on a page running React `react` (19 or 18): the
// docs on screen equal oasync snapshot --scope through three rounds of
// creates, updates, deletes, and moves in and out of the tenant, and every
// update that arrived was the tenant's. Returns the page.
async function threeTopics({ db, server: start, open }, react) {
  for (const topic of TOPICS) sink(db, mixedWrites(topic, 40));
  const server = await start({ config: limits({ snapshot_page_docs: 4, page_events: 5 }) });
  const page = await open(server.base, TOPICS, { react });
  for (const topic of TOPICS) await converged(page, db, topic);
  // It rendered with that React (React.version, on screen).
  const version = await page.evaluate(() => document.querySelector("[data-react]")?.dataset.react);
  assert.match(version ?? "(none)", new RegExp(`^${react}\\.`), `the page runs React ${version}, not ${react}`);
  for (let round = 0; round < 3; round++) {
    for (const topic of TOPICS) sink(db, mixedWrites(topic, 30, 100 + round * 30));
    for (const topic of TOPICS) {
      sink(db, [
        { topic, key: "mover", scope: TENANT, payload: { round, step: 1 } },
        { topic, key: "mover", scope: "org:2", payload: { round, step: 2 } }, // moves out
        { topic, key: "visitor", scope: "org:2", payload: { round, step: 1 } },
        { topic, key: "visitor", scope: TENANT, payload: { round, step: 2 } }, // moves in
        { topic, key: "gone", scope: TENANT, payload: { round } },
        { topic, key: "gone", delete: true },
      ]);
    }
    for (const topic of TOPICS) await converged(page, db, topic);
  }
  for (const topic of TOPICS) {
    await sameAsJournal(page, db, topic);
    const log = await logOf(page, topic);
    // Every update was the tenant's, deletes of docs that left it too.
    assert.deepEqual([...new Set(log.updates.map((u) => u.scope))], [TENANT]);
    assert.ok(log.updates.some((u) => u.op === "delete"), `${topic}: no delete arrived`);
    assert.ok(log.updates.some((u) => u.key === `${PREFIX[topic]}visitor` && u.op === "upsert"),
      `${topic}: the doc that moved in never arrived`);
  }
  const shown = await page.evaluate(() => [...window.__sync.shown]);
  assert.deepEqual(shown.filter((s) => !s.endsWith(` ${TENANT}`)), [], "docs of another tenant were shown");
  await assertClean(page, TOPICS);
  return page;
}

describe("the TypeScript client in chromium, under React", () => {
  test("three topics: the docs on screen equal oasync snapshot through creates, updates, deletes, and moves in and out of the tenant", async () => {
    await scenario(async (world) => {
      const page = await threeTopics(world, 19);
      mkdirSync(join(SCREENSHOT, ".."), { recursive: true });
      await page.screenshot({ path: SCREENSHOT, fullPage: true });
    });
  });

  test("the same three topics under React 18, the oldest React the client's peer dependency allows", async () => {
    await scenario((world) => threeTopics(world, 18));
  });

  // The socket goes mid-stream in four ways; each time the page resumes
  // from its position: the updates per topic equal the journal, no snapshot.
  const interruptions = [
    ["the server drained (SIGTERM) and started again on its port", "SIGTERM"],
    ["the server killed (SIGKILL) and started again on its port", "SIGKILL"],
    ["a TCP proxy between the browser and the server cuts the connection", "cut"],
    ["a TCP proxy cuts the connection and refuses new ones for 1.5 s", "down"],
  ];
  for (const [how, fault] of interruptions) {
    test(`${how}: each topic resumes from its position, no gap, no repeat, no snapshot`, async (ctx) => {
      await scenario(async ({ db, server: start, proxy, open }) => {
        const topics = [RUNS, NOTES];
        const port = await freePort();
        const config = limits({ drain_seconds: 5 });
        for (const topic of topics) sink(db, mixedWrites(topic, 40));
        let server = await start({ port, config });
        const relayed = fault === "cut" || fault === "down";
        const link = relayed ? await proxy(port) : undefined;
        const page = await open(`http://127.0.0.1:${link?.port ?? port}`, topics);
        for (const topic of topics) await converged(page, db, topic);
        // The socket goes while the sink still commits the burst, and the page
        // still receives it.
        const writing = Promise.all([burstInBackground(db, RUNS, 3000), burstInBackground(db, NOTES, 300)]);
        await eventually(async () => (await page.evaluate(() => window.__sync.updates)) > 0, WAIT, "the first updates");
        const before = await page.evaluate(() => window.__sync.updates);
        if (fault === "cut") {
          link.cut();
        } else if (fault === "down") {
          link.down();
          await sleep(1500);
          // (At least one reconnection refused, however slow the machine.)
          await eventually(() => link.counts.refused >= 1, WAIT, "a refused reconnection");
          link.up();
        } else {
          await server.stop(fault);
        }
        ctx.diagnostic(`${before} of the 3,300 updates had arrived at the ${fault}`);
        await writing;
        burst(db, RUNS, 300, { start: 3000 });
        sink(db, mixedWrites(RUNS, 30, 200));
        if (!relayed) server = await start({ port, config });
        burst(db, RUNS, 300, { start: 4000 });
        burst(db, NOTES, 100, { start: 300 });
        for (const topic of topics) {
          await converged(page, db, topic);
          await sameAsJournal(page, db, topic);
          // It joined again, each time with a position (never {}: no snapshot).
          const log = await logOf(page, topic);
          const rejoins = log.joins.filter((j) => j.snapshots > 0);
          assert.ok(rejoins.length >= 1, `${topic}: never joined again`);
          for (const { params } of rejoins) assert.match(params.watermark ?? "", /^[0-9]+$/);
        }
        const { closes, disconnects } = await page.evaluate(() => window.__sync);
        if (fault === "SIGTERM") {
          // Drained: the server said why before it closed.
          assert.equal(disconnects[0]?.reason, "draining");
          assert.deepEqual(closes[0], { code: 1012, reason: "draining" });
        }
        if (link !== undefined) {
          const { accepted, refused, cut } = link.counts;
          ctx.diagnostic(`the relay accepted ${accepted} connections, refused ${refused}, cut ${cut}`);
          assert.ok(cut > 0, "the relay cut no connection");
          if (fault === "down") assert.ok(refused >= 1, "the relay refused no connection");
        }
        await assertClean(page, topics);
      });
    });
  }

  test("a reload mid-stream resumes from the position persisted in localStorage, without a snapshot", async (ctx) => {
    await scenario(async ({ db, server: start, open }) => {
      sink(db, mixedWrites(RUNS, 40));
      const server = await start();
      const page = await open(server.base, [RUNS]);
      await converged(page, db, RUNS);
      const writing = burstInBackground(db, RUNS, 3000);
      await eventually(async () => (await page.evaluate(() => window.__sync.updates)) > 0, WAIT, "the first updates");
      const before = await page.evaluate(() => window.__sync.updates);
      await page.reload();
      ctx.diagnostic(`reloaded after ${before} of the 3,000 updates had arrived`);
      await writing;
      burst(db, RUNS, 300, { start: 3000 });
      await converged(page, db, RUNS);
      const log = await logOf(page, RUNS);
      // The new page joined once, with the persisted position, and got the
      // journal after it, exactly.
      assert.equal(log.joins.length, 1);
      const from = log.joins[0].params;
      assert.match(from.watermark ?? "", /^[0-9]+$/, `joined with ${JSON.stringify(from)}`);
      await sameAsJournal(page, db, RUNS, { from });
      // Its first render already showed the persisted docs.
      const renders = await page.evaluate((t) => window.__sync.renders[t], RUNS);
      assert.ok(renders.some((r) => r.status === "connecting" && r.docs !== ""),
        "the persisted docs were not shown before the join");
      await assertClean(page, [RUNS], { snapshots: 0 });
    });
  });

  test("two tabs of one user share localStorage: every copy read is one whole state, and a third tab resumes from it without a snapshot", async (ctx) => {
    await scenario(async ({ db, server: start, open }) => {
      sink(db, mixedWrites(RUNS, 40));
      const server = await start();
      const tabA = await open(server.base, [RUNS]);
      const tabB = await open(server.base, [RUNS]);
      await converged(tabA, db, RUNS);
      await converged(tabB, db, RUNS);
      // Both tabs follow the same writes, each writing its whole copy as it
      // goes; the copy is read while they do.
      const key = topicKey("user-1", "1", RUNS);
      let writing = true;
      const done = (async () => {
        for (let i = 0; i < 12; i++) await sinkInBackground(db, mixedWrites(RUNS, 40, 100 + i * 40));
      })().finally(() => (writing = false));
      const copies = new Set();
      while (writing) {
        copies.add(await tabA.evaluate((k) => localStorage.getItem(k), key));
        await sleep(50);
      }
      await done;
      await converged(tabA, db, RUNS);
      await converged(tabB, db, RUNS);
      copies.add(await tabA.evaluate((k) => localStorage.getItem(k), key));
      // Each copy's docs are the tenant's journal folded through the copy's
      // position: never the docs of one tab's state with the other's position.
      let checked = 0;
      for (const text of copies) {
        if (text === null) continue;
        const copy = JSON.parse(text);
        if (copy.position === null) continue;
        const folded = new Map();
        for (const e of journalOf(db, RUNS, { after: 0, epoch: copy.position.epoch })) {
          if (BigInt(e.watermark) > BigInt(copy.position.watermark)) break;
          if (e.op === "delete") folded.delete(e.key);
          else folded.set(e.key, e.version);
        }
        const docs = new Map(copy.docs.map((d) => [d.key, d.version]));
        assert.deepEqual(docs, folded, `the copy at ${copy.position.watermark} is not one state`);
        checked += 1;
      }
      ctx.diagnostic(`${checked} distinct copies read while two tabs wrote`);
      assert.ok(checked >= 2, `only ${checked} copies were read`);
      // Both tabs go; the writes go on; a third tab resumes from the copy.
      await tabA.close();
      await tabB.close();
      sink(db, mixedWrites(RUNS, 60, 1000));
      const tabC = await open(server.base, [RUNS]);
      await converged(tabC, db, RUNS);
      const log = await logOf(tabC, RUNS);
      assert.equal(log.joins.length, 1);
      const from = log.joins[0].params;
      assert.match(from.watermark ?? "", /^[0-9]+$/, `joined with ${JSON.stringify(from)}`);
      await sameAsJournal(tabC, db, RUNS, { from });
      await assertClean(tabC, [RUNS], { snapshots: 0 });
    });
  });

  test("a purge below the page's position: one resync, the old docs on screen until the swap, convergence", async () => {
    await scenario(async ({ db, server: start, proxy, open }) => {
      sink(db, mixedWrites(RUNS, 40));
      // Snapshots in pages of 4 docs: the resync spans several pushes.
      const server = await start({ config: limits({ snapshot_page_docs: 4 }) });
      const link = await proxy(server.port);
      const page = await open(`http://127.0.0.1:${link.port}`, [RUNS]);
      await converged(page, db, RUNS);
      sink(db, mixedWrites(RUNS, 30, 100));
      await converged(page, db, RUNS);
      const old = await page.evaluate((t) => window.__sync.renders[t].at(-1).docs, RUNS);
      const rendersBefore = await page.evaluate((t) => window.__sync.renders[t].length, RUNS);
      link.down();
      await waitStatus(page, RUNS, "connecting");
      sink(db, mixedWrites(RUNS, 30, 200));
      const purge = oasync(["purge", "--topic", RUNS, "--older-than", "0s", "--keep-last", "0"], { url: db.url });
      assert.equal(purge.status, 0, purge.stderr);
      sink(db, mixedWrites(RUNS, 20, 300));
      link.up();
      await eventually(async () => {
        const log = await logOf(page, RUNS);
        return log.stale.length >= 1 && log.snapshotEnds.length >= 2;
      }, WAIT, "the stale notice and the fresh snapshot");
      await converged(page, db, RUNS);
      // On screen: the old docs, through the resync, until the swap.
      const renders = (await page.evaluate((t) => window.__sync.renders[t], RUNS)).slice(rendersBefore);
      const swap = renders.findIndex((r) => r.docs !== old);
      assert.ok(swap > 0, `the docs changed at render ${swap}`);
      assert.ok(renders.slice(0, swap).some((r) => r.status === "resyncing"), "never shown as resyncing");
      assert.equal(renders[swap].status, "live");
      // No loop: later writes come as updates.
      sink(db, mixedWrites(RUNS, 20, 400));
      await converged(page, db, RUNS);
      await sameAsJournal(page, db, RUNS);
      await assertClean(page, [RUNS], { snapshots: 2, stale: 1 });
    });
  });

  test("a topic outside the token is refused, another tenant's docs never appear, and a revoked session ends", async () => {
    await scenario(async ({ db, server: start, open }) => {
      for (const topic of TOPICS) sink(db, mixedWrites(topic, 40));
      const server = await start();
      const page = await open(server.base, TOPICS);
      await waitStatus(page, NOTES, "refused");
      for (const topic of [RUNS, WORKERS]) await converged(page, db, topic);
      for (const topic of TOPICS) sink(db, mixedWrites(topic, 60, 100));
      for (const topic of [RUNS, WORKERS]) {
        await converged(page, db, topic);
        await sameAsJournal(page, db, topic);
      }
      // Every doc ever on screen was the tenant's; the refused topic shows none.
      const shown = await page.evaluate(() => [...window.__sync.shown]);
      assert.ok(shown.length > 0);
      assert.deepEqual(shown.filter((s) => !s.endsWith(` ${TENANT}`)), []);
      assert.deepEqual(await onScreen(page, NOTES), new Map());
      const notes = await logOf(page, NOTES);
      assert.equal(notes.joins.length, 1, "the refused topic was joined again");
      assert.equal(notes.batches, 0);
      const revoke = oasync(["sessions", "revoke", "session-1", "--reason", "test"], { url: db.url });
      assert.equal(revoke.status, 0, revoke.stderr);
      for (const topic of [RUNS, WORKERS]) await waitStatus(page, topic, "unauthorized");
      assert.equal(await statusOf(page, NOTES), "refused");
      const { closes, disconnects } = await page.evaluate(() => window.__sync);
      assert.equal(disconnects[0]?.reason, "unauthorized");
      assert.deepEqual(closes[0], { code: 1008, reason: "unauthorized" });
      await assertClean(page, [RUNS, WORKERS], {
        allowed: [/^refused: topic "runtime\.notifications": forbidden_topic/, /^unauthorized: /],
      });
    }, { scopes: [RUNS, WORKERS] });
  });

  test("a second user signing in on the same page sees none of the first user's cached docs", async () => {
    await scenario(async ({ db, pages, server: start, open }) => {
      const topics = [RUNS, WORKERS];
      for (const topic of topics) sink(db, mixedWrites(topic, 60));
      const server = await start();
      const page = await open(server.base, topics);
      for (const topic of topics) await converged(page, db, topic);
      await persistedFor(page, "user-1", "1", topics);
      await page.evaluate(() => window.__signIn({ user: "user-2", org: "2", session: "session-2" }));
      for (const topic of topics) await converged(page, db, topic, "org:2");
      for (const topic of topics) sink(db, mixedWrites(topic, 30, 100));
      for (const topic of topics) await converged(page, db, topic, "org:2");
      // Nothing of user-1's was shown to user-2, nor is kept for it.
      const shown = await page.evaluate(() => [...window.__sync.shown]);
      const second = shown.filter((s) => s.startsWith("user-2 "));
      assert.ok(second.length > 0);
      assert.deepEqual(second.filter((s) => !s.endsWith(" org:2")), []);
      const keysNow = await page.evaluate(() => Object.keys(localStorage));
      assert.deepEqual(keysNow.filter((k) => k.includes("/user-1/")), []);
      assert.deepEqual(await page.evaluate(() => window.__sync.errors), []);
      // user-1 signs in again on a new load of the page, over user-2's cache.
      await page.goto(pages.url(server.base, topics));
      for (const topic of topics) await converged(page, db, topic);
      const again = await page.evaluate(() => [...window.__sync.shown]);
      assert.ok(again.length > 0);
      assert.deepEqual(again.filter((s) => !s.endsWith(` ${TENANT}`)), [], "user-2's docs were shown to user-1");
      assert.deepEqual(await page.evaluate(() => window.__sync.errors), []);
    });
  });

  // The same client, with the same page, is given another user's token by
  // its token getter (the app's sign-in changed under a client it keeps),
  // and takes it when its socket connects again, in two ways an app sees.
  const switches = [
    ["the first user's session revoked (signed out)", "revoked"],
    ["the server drained (SIGTERM) and started again on its port", "drained"],
  ];
  for (const [how, cause] of switches) {
    test(`the token getter turns to another user, then ${how}: the same client shows only the second user's docs, and keeps none of the first's`, async (ctx) => {
      await scenario(async ({ db, server: start, open }) => {
        const topics = [RUNS, WORKERS];
        const port = await freePort();
        for (const topic of topics) sink(db, mixedWrites(topic, 60));
        let server = await start({ port });
        const page = await open(server.base, topics);
        for (const topic of topics) await converged(page, db, topic);
        await persistedFor(page, "user-1", "1", topics);
        const tokensBefore = await page.evaluate(() => window.__sync.tokens.length);
        await page.evaluate(() => window.__switchToken({ user: "user-2", org: "2", session: "session-2" }));
        if (cause === "revoked") {
          const revoke = oasync(["sessions", "revoke", "session-1", "--reason", "signed out"], { url: db.url });
          assert.equal(revoke.status, 0, revoke.stderr);
        } else {
          await server.stop("SIGTERM");
          server = await start({ port });
        }
        for (const topic of topics) await converged(page, db, topic, "org:2");
        for (const topic of topics) sink(db, mixedWrites(topic, 30, 100));
        for (const topic of topics) {
          await converged(page, db, topic, "org:2");
          await sameAsJournal(page, db, topic, { scope: "org:2" });
        }
        const { clients, tokens, closes, disconnects } = await page.evaluate(() => window.__sync);
        assert.equal(clients, 1, "the page made another client");
        // The getter gave user-1's tokens until the switch, user-2's after.
        assert.ok(tokens.length > tokensBefore, "no token was asked for after the switch");
        assert.deepEqual([...new Set(tokens.slice(0, tokensBefore))], ["user-1"]);
        assert.deepEqual([...new Set(tokens.slice(tokensBefore))], ["user-2"]);
        // How the first user's socket ended.
        if (cause === "revoked") {
          assert.equal(disconnects[0]?.reason, "unauthorized");
          assert.deepEqual(closes[0], { code: 1008, reason: "unauthorized" });
        } else {
          assert.equal(disconnects[0]?.reason, "draining");
          assert.deepEqual(closes[0], { code: 1012, reason: "draining" });
        }
        // Once the client had user-2's token, only org:2's docs were ever on
        // screen (every render recorded); user-1's, before, only org:1's.
        const shown = await page.evaluate(() => [...window.__sync.shownUnder]);
        const second = shown.filter((s) => s.startsWith("user-2 "));
        ctx.diagnostic(`${tokens.length - tokensBefore} token(s) of user-2; docs shown: ` +
          `${shown.length - second.length} under user-1's token, ${second.length} under user-2's`);
        assert.ok(second.length > 0);
        assert.ok(shown.some((s) => s.startsWith("user-1 ")), "user-1's docs were never shown");
        assert.deepEqual(second.filter((s) => !s.endsWith(" org:2")), [],
          "user-1's docs were shown under user-2's token");
        assert.deepEqual(shown.filter((s) => !s.startsWith("user-2 ") && !s.startsWith("user-1 ")), []);
        assert.deepEqual(shown.filter((s) => s.startsWith("user-1 ") && !s.endsWith(` ${TENANT}`)), []);
        // Each topic took user-2's snapshot; every update since was org:2's.
        for (const topic of topics) {
          const log = await logOf(page, topic);
          const since = log.updates.filter((u) => u.snapshot === log.snapshots);
          assert.deepEqual(since.filter((u) => u.scope !== "org:2"), [], `${topic}: another tenant's update`);
        }
        // localStorage is user-2's alone.
        const keysNow = await page.evaluate(() => Object.keys(localStorage));
        assert.deepEqual(keysNow.filter((k) => k.includes("/user-1/")), []);
        await persistedFor(page, "user-2", "2", topics);
        assert.deepEqual(JSON.parse(await page.evaluate((k) => localStorage.getItem(k), IDENTITY_KEY)),
          { user: "user-2", org: "2" });
        await assertClean(page, topics, { snapshots: 2 });
      });
    });
  }

  test("a payload too large for a push (fetch_required) is fetched across origins (CORS), shown in full, and replaced by later updates", async () => {
    await scenario(async ({ db, pages, server: start, open }) => {
      sink(db, mixedWrites(RUNS, 40));
      // Payloads over 4 KiB are withheld from pushes (the topic takes 64 KiB).
      const server = await start({ config: limits({ channel_payload_bytes: 4096 }) });
      const page = await open(server.base, [RUNS]);
      // The doc fetches the page made, as the browser answered them.
      const fetches = [];
      page.on("response", (r) => {
        const url = new URL(r.url());
        if (url.pathname.startsWith("/sync/v1/doc/")) {
          fetches.push({
            method: r.request().method(),
            path: `${url.pathname}${url.search}`,
            status: r.status(),
            allowOrigin: r.headers()["access-control-allow-origin"],
          });
        }
      });
      // ... and the requests it sent for them, preflights included (which
      // the DevTools protocol shows, and playwright does not), with their
      // headers, names in lower case.
      const sent = [];
      const cdp = await page.context().newCDPSession(page);
      await cdp.send("Network.enable");
      cdp.on("Network.requestWillBeSent", ({ request, initiator }) => {
        if (!new URL(request.url).pathname.startsWith("/sync/v1/doc/")) return;
        const headers = Object.fromEntries(Object.entries(request.headers).map(([k, v]) => [k.toLowerCase(), v]));
        sent.push({ method: request.method, preflight: initiator?.type === "preflight", headers });
      });
      await converged(page, db, RUNS);
      const key = `${PREFIX[RUNS]}big`;
      const path = `/sync/v1/doc/${encodeURIComponent(key)}?topic=${encodeURIComponent(RUNS)}`;
      const storageKey = topicKey("user-1", "1", RUNS);
      // The doc as `oasync doc get` has it, and as the page shows it.
      const stored = () => {
        const r = oasync(["doc", "get", key, "--topic", RUNS], { url: db.url });
        assert.equal(r.status, 0, r.stderr);
        const d = JSON.parse(r.stdout);
        return { version: String(d.doc_version), value: d.payload };
      };
      const shownDoc = () => page.evaluate((k) => {
        const li = document.querySelector(`li[data-key="${k}"]`);
        const { version, value, pending } = li?.dataset ?? {};
        return li && { version, value: value === undefined ? undefined : JSON.parse(value), pending };
      }, key);
      const steps = [
        { payload: { blob: "x".repeat(20000), step: 1 }, withheld: true },
        { payload: { blob: "é✓".repeat(8000), step: 2 }, withheld: true }, // a later one, withheld too
        { payload: { step: 3 }, withheld: false }, // small: pushed
      ];
      for (const [n, { payload, withheld }] of steps.entries()) {
        sink(db, [{ key: "big", scope: TENANT, payload }]);
        await converged(page, db, RUNS);
        const expected = stored();
        assert.equal(expected.version, String(n + 1));
        assert.deepEqual(expected.value, payload);
        assert.deepEqual(await shownDoc(), { ...expected, pending: "false" });
        const log = await logOf(page, RUNS);
        const update = log.updates.filter((u) => u.key === key);
        assert.equal(update.length, n + 1, "the updates of the doc that arrived");
        assert.equal(update[n].fetch, withheld, `update ${n + 1}: fetch_required`);
        // Each withheld version was fetched once, by the page, from the
        // server's origin, which let the page's origin read the answer.
        const fetched = steps.slice(0, n + 1).filter((s) => s.withheld).length;
        const answered = { method: "GET", path, status: 200, allowOrigin: pages.origin };
        await eventuallyEqual(() => fetches, () => Array(fetched).fill(answered), WAIT, "the doc fetches");
        // Persisted as shown, with its full value.
        await eventuallyEqual(
          async () => JSON.parse(await page.evaluate((k) => localStorage.getItem(k), storageKey) ?? "{}")
            .docs?.find((d) => d.key === key),
          () => ({ key, version: expected.version, scope: TENANT, pending: false, value: payload }),
          WAIT, "the doc persisted");
      }
      // The browser asked the server (a preflight from the page's origin, for
      // a GET with Authorization), and sent each GET with the socket's token.
      await eventually(() => sent.filter((r) => !r.preflight).length >= 2, WAIT, "the GETs sent");
      const preflight = sent.find((r) => r.preflight);
      assert.ok(preflight, `no preflight among ${JSON.stringify(sent.map((r) => r.method))}`);
      assert.equal(preflight.method, "OPTIONS");
      assert.equal(preflight.headers.origin, pages.origin);
      assert.equal(preflight.headers["access-control-request-method"], "GET");
      assert.equal(preflight.headers["access-control-request-headers"], "authorization");
      const gets = sent.filter((r) => !r.preflight);
      assert.deepEqual(gets.map((r) => r.method), ["GET", "GET"], "the requests sent");
      for (const get of gets) assert.match(get.headers.authorization ?? "", /^Bearer [\w-]+\.[\w-]+\.[\w-]+$/);
      await sameAsJournal(page, db, RUNS);
      await assertClean(page, [RUNS]);
    });
  });

  test("a burst of 10,000 updates: the heap after a forced collection stays within 1.5x of the heap after the first 1,000", async (ctx) => {
    await scenario(async ({ db, server: start, open }) => {
      const server = await start();
      const page = await open(server.base, [RUNS], { record: false });
      await converged(page, db, RUNS);
      const cdp = await page.context().newCDPSession(page);
      const heap = async () => {
        await cdp.send("HeapProfiler.collectGarbage");
        await cdp.send("HeapProfiler.collectGarbage");
        return (await cdp.send("Runtime.getHeapUsage")).usedSize;
      };
      const arrived = (n) => eventually(async () => (await page.evaluate(() => window.__sync.updates)) >= n,
        120000, `${n} updates`);
      burst(db, RUNS, 1000);
      await arrived(1000);
      await converged(page, db, RUNS);
      const first = await heap();
      burst(db, RUNS, 9000, { start: 1000 });
      await arrived(10000);
      await converged(page, db, RUNS);
      const last = await heap();
      const mib = (n) => (n / 1048576).toFixed(2);
      ctx.diagnostic(`heap after 1,000 updates: ${mib(first)} MiB; after 10,000: ${mib(last)} MiB (${(last / first).toFixed(2)}x)`);
      assert.equal(await page.evaluate(() => window.__sync.updates), 10000);
      assert.ok(last <= first * 1.5, `the heap grew from ${first} to ${last} bytes`);
      await assertClean(page, [RUNS]);
    });
  });
});
