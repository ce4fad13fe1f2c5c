// The socket's life through the client, over a fake phoenix socket: a token
// before each connect, refusals, expiry, timeouts, backoff, and reconnect().
// Each test makes its own world.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { EPOCH, joinReply, TOPIC } from "./support/messages.js";
import { CHANNEL, live, values } from "./support/live.js";
import { ALICE, ALICE_2, ALICE_3, BOB, jwt, settle, world } from "./support/world.js";

describe("tokens and reconnects", () => {
  test("the token getter runs before each connect and reconnect", async () => {
    const w = world({ tokens: [ALICE, ALICE_2, ALICE] });
    w.client.subscribe(TOPIC);
    assert.equal(w.tokenCalls(), 1, "called when the first topic is subscribed");
    await settle();
    const socket = w.socket();
    socket.open();
    socket.serverClose(1012, { reason: "draining", message: "" });
    await settle();
    assert.equal(w.tokenCalls(), 2);
    socket.open();
    socket.serverClose(1001, { reason: "idle", message: "" });
    await settle();
    assert.equal(w.tokenCalls(), 3);
    assert.deepEqual(socket.tokens, [ALICE, ALICE_2, ALICE]);
  });

  test("a failing token getter: unauthorized, and no connect", async () => {
    const w = world({ tokens: () => Promise.reject(new Error("signed out")) });
    w.client.subscribe(TOPIC);
    await settle();
    assert.equal(w.client.getStatus(TOPIC), "unauthorized");
    assert.deepEqual(w.socket().tokens, []);
    await settle();
    assert.equal(w.tokenCalls(), 1, "not called again by itself");
    assert.deepEqual(
      w.errors.map((e) => [e.code, e.message]),
      [["token", "the token getter failed: signed out"]],
    );
  });

  test("the server's unauthorized notice: a fresh token and a reconnect", async () => {
    const w = world({ tokens: [ALICE, ALICE_2] });
    await live(w, 10n);
    w.socket().serverClose(1008, { reason: "unauthorized", message: "the token expired" });
    await settle();
    assert.deepEqual(w.socket().tokens, [ALICE, ALICE_2]);
    w.socket().open();
    assert.equal(w.client.getStatus(TOPIC), "connecting");
    assert.deepEqual(w.errors, []);
  });

  test("unauthorized, and the getter gives the refused token again: unauthorized, no loop", async () => {
    const w = world({ tokens: [ALICE] });
    await live(w, 10n);
    w.socket().serverClose(1008, { reason: "unauthorized", message: "the session was revoked" });
    await settle();
    assert.equal(w.client.getStatus(TOPIC), "unauthorized");
    assert.deepEqual(w.socket().tokens, [ALICE], "no connect with the refused token");
    assert.deepEqual(
      w.errors.map((e) => e.code),
      ["unauthorized"],
    );
    // reconnect() starts again (a user signed in again).
    w.client.reconnect();
    await settle();
    assert.deepEqual(w.socket().tokens, [ALICE, ALICE]);
  });

  test("a refused handshake (HEAD says 401) twice: unauthorized, no loop", async () => {
    const w = world({ tokens: [ALICE, ALICE_2, ALICE_3], respond: () => ({ status: 401 }) });
    w.client.subscribe(TOPIC);
    await settle();
    const socket = w.socket();
    socket.failHandshake();
    await settle();
    assert.deepEqual(socket.tokens, [ALICE, ALICE_2], "one fresh token");
    socket.failHandshake();
    await settle();
    assert.equal(w.client.getStatus(TOPIC), "unauthorized");
    assert.deepEqual(socket.tokens, [ALICE, ALICE_2]);
    assert.equal(w.tokenCalls(), 2, "no token asked for after the second refusal");
    assert.deepEqual(
      w.fetches.map((f) => [f.method, f.url, f.authorization]),
      [
        ["HEAD", `https://sync.test/v1/topics/${TOPIC}`, `Bearer ${ALICE}`],
        ["HEAD", `https://sync.test/v1/topics/${TOPIC}`, `Bearer ${ALICE_2}`],
      ],
    );
  });

  test("a handshake that fails for another reason (the network) is retried with a fresh token", async () => {
    const w = world({ tokens: [ALICE], respond: () => Promise.reject(new Error("offline")) });
    w.client.subscribe(TOPIC);
    await settle();
    const socket = w.socket();
    for (let i = 0; i < 3; i += 1) {
      socket.failHandshake();
      await settle();
    }
    assert.equal(socket.tokens.length, 4);
    assert.equal(w.tokenCalls(), 4);
    assert.equal(w.client.getStatus(TOPIC), "connecting");
    socket.open();
    socket.channelOf(CHANNEL).replyOk(joinReply(0n));
    assert.equal(w.client.getStatus(TOPIC), "catching_up");
  });
});

describe("reconnect()", () => {
  test("while connected, with another user's token: dropped, a fresh token, the cache cleared, a snapshot", async () => {
    let user = ALICE;
    let bobHanded = false;
    const w = world({
      tokens: () =>
        Promise.resolve(user).then((t) => {
          bobHanded ||= t === BOB;
          return t;
        }),
    });
    await live(w, 10n, { "run:a": "alice's" });
    const socket = w.socket();
    // What listeners see once the getter handed out bob's token.
    const shown: string[][] = [];
    w.client.onChange(() => {
      if (bobHanded) shown.push(w.client.getDocs(TOPIC).map((d) => String(d.value)));
    });
    user = BOB;
    w.client.reconnect();
    await settle();
    assert.equal(socket.disconnects, 1, "the open socket is dropped");
    assert.deepEqual(socket.tokens, [ALICE, BOB]);
    assert.deepEqual(values(w), {}, "nothing of alice's is shown");
    assert.ok(
      shown.every((docs) => !docs.includes("alice's")),
      `alice's doc shown after the switch: ${JSON.stringify(shown)}`,
    );
    assert.deepEqual(
      w.storage.keys().filter((k) => k.includes("alice")),
      [],
    );
    socket.open();
    const channel = socket.channelOf(CHANNEL);
    assert.deepEqual(channel.lastJoin, {}, "joined without alice's position");
    assert.deepEqual(w.errors, []);
  });

  test("while connected, with the same user's token: reconnects and resumes from the position", async () => {
    const w = world({ tokens: [ALICE, ALICE_2] });
    await live(w, 10n, { "run:a": 1 });
    w.client.reconnect();
    await settle();
    const socket = w.socket();
    assert.deepEqual(socket.tokens, [ALICE, ALICE_2]);
    socket.open();
    assert.deepEqual(socket.channelOf(CHANNEL).lastJoin, { epoch: EPOCH, watermark: "10" });
    assert.deepEqual(values(w), { "run:a": 1 });
  });
});

describe("tokens that expire, hang or keep failing", () => {
  // A token of an hour, fetched now.
  const hourLong = (sub = "alice") => {
    const now = Math.floor(Date.now() / 1000);
    return jwt({ sub, org_id: "42", iat: now, exp: now + 3600 });
  };

  // Runs `fn` with Date.now() `ms` ahead.
  async function later<T>(ms: number, fn: () => Promise<T>): Promise<T> {
    const realNow = Date.now;
    const start = realNow();
    Date.now = () => start + ms;
    try {
      return await fn();
    } finally {
      Date.now = realNow;
    }
  }

  test("a token this machine's clock calls expired is used all the same (the server judges): no lockout by a wrong clock", async () => {
    const old = jwt({ sub: "alice", org_id: "42", iat: 400, exp: 1_000 });
    const w = world({ tokens: [old] });
    w.client.subscribe(TOPIC);
    await settle();
    assert.deepEqual(w.socket().tokens, [old]);
    assert.deepEqual(w.errors, []);
  });

  for (const closeArrives of [true, false]) {
    test(`phoenix's own reconnect (pageshow) after the token's lifetime: no token sent, a fresh one first${closeArrives ? "" : " (its close never reached the client)"}`, async () => {
      const first = hourLong();
      const fresh = hourLong("alice");
      const tokens = [first, fresh];
      const w = world({ tokens: () => Promise.resolve(tokens.shift() ?? fresh) });
      await live(w, 10n, { "run:a": 1 });
      const socket = w.socket();
      socket.pageHide({ closeArrives });
      await settle();
      assert.equal(w.tokenCalls(), 1, "phoenix's own disconnect is left to phoenix");
      // The page comes back from the back/forward cache after 2 hours.
      await later(2 * 3600_000, async () => {
        socket.pageShow();
        await settle();
      });
      assert.deepEqual(
        socket.tokens,
        [first, "", fresh],
        "phoenix's connect got no token; then ours",
      );
      socket.open();
      assert.equal(w.client.getStatus(TOPIC), "connecting");
      assert.deepEqual(socket.channelOf(CHANNEL).lastJoin, { epoch: EPOCH, watermark: "10" });
    });
  }

  test("phoenix's own reconnect within the token's lifetime reuses it", async () => {
    const first = hourLong();
    const w = world({ tokens: [first] });
    await live(w, 10n);
    const socket = w.socket();
    socket.pageHide({ closeArrives: true });
    await later(30 * 60_000, async () => {
      socket.pageShow();
      await settle();
    });
    assert.deepEqual(socket.tokens, [first, first]);
    assert.equal(w.tokenCalls(), 1);
  });

  test("a getter that never answers fails after tokenTimeoutMs: unauthorized", async () => {
    const w = world({ tokens: () => new Promise<string>(() => {}), tokenTimeoutMs: 20 });
    w.client.subscribe(TOPIC);
    await new Promise((r) => setTimeout(r, 60));
    assert.equal(w.client.getStatus(TOPIC), "unauthorized");
    assert.deepEqual(
      w.errors.map((e) => [e.code, e.message]),
      [["token", "the token getter failed: it gave nothing within 20 ms"]],
    );
  });

  test("a getter slower than tokenTimeoutMs: its timer goes with close()", async () => {
    const timers = () => process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
    const before = timers();
    const w = world({ tokens: () => new Promise<string>(() => {}), tokenTimeoutMs: 60_000 });
    w.client.subscribe(TOPIC);
    await settle();
    assert.equal(timers(), before + 1, "the getter's timeout runs");
    await w.client.close();
    assert.equal(timers(), before, "and is cleared by close()");
  });

  for (const ms of [Infinity, 0, -1, 2 ** 40]) {
    test(`tokenTimeoutMs ${ms}: no timeout, the token is waited for`, async () => {
      let give: ((t: string) => void) | undefined;
      const w = world({
        tokens: () => new Promise<string>((resolve) => (give = resolve)),
        tokenTimeoutMs: ms,
      });
      w.client.subscribe(TOPIC);
      await new Promise((r) => setTimeout(r, 20));
      assert.equal(w.client.getStatus(TOPIC), "connecting");
      give?.(ALICE);
      await settle();
      assert.deepEqual(w.socket().tokens, [ALICE]);
      assert.deepEqual(w.errors, []);
    });
  }

  test("a server that accepts, then refuses each fresh token: unauthorized after two, no loop", async () => {
    const w = world({ tokens: [ALICE, ALICE_2, ALICE_3] });
    await live(w, 10n);
    const socket = w.socket();
    socket.serverClose(1008, { reason: "unauthorized", message: "revoked" });
    await settle();
    socket.open();
    socket.serverClose(1008, { reason: "unauthorized", message: "revoked" });
    await settle();
    assert.equal(w.client.getStatus(TOPIC), "unauthorized");
    assert.deepEqual(socket.tokens, [ALICE, ALICE_2]);
  });

  test("a server that closes each connection at once: the backoff grows; a connection open 10 s resets it", async () => {
    const w = world({ tokens: [ALICE] });
    await live(w, 10n);
    const socket = w.socket();
    for (let i = 0; i < 3; i += 1) {
      socket.serverClose(1011, { reason: "internal", message: "" });
      await settle();
      socket.open();
    }
    assert.deepEqual(w.delays, [1, 2, 3], "each attempt waits longer");
    const realNow = Date.now;
    const opened = Date.now();
    Date.now = () => opened + 10_000;
    try {
      socket.serverClose(1012, { reason: "draining", message: "" });
      await settle();
    } finally {
      Date.now = realNow;
    }
    assert.deepEqual(w.delays, [1, 2, 3, 1], "after a stable connection, the first delay again");
  });
});
