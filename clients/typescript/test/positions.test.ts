import assert from "node:assert/strict";
import { test } from "node:test";

import { SyncError } from "../src/errors.js";
import { atHead, joinParams, parseJoinReply, parseUint64 } from "../src/positions.js";

test("join params: {} without a position, the watermark as a decimal string with one", () => {
  assert.deepEqual(joinParams(undefined), {});
  assert.deepEqual(joinParams({ epoch: "e", watermark: 18446744073709551615n }), {
    epoch: "e",
    watermark: "18446744073709551615",
  });
});

const uint64Cases: { text: unknown; value?: bigint }[] = [
  { text: "0", value: 0n },
  { text: "9007199254740993", value: 9007199254740993n },
  { text: "18446744073709551615", value: 18446744073709551615n },
  { text: "18446744073709551616" },
  { text: "-1" },
  { text: "01" },
  { text: "1e3" },
  { text: "" },
  { text: 5 },
  { text: undefined },
];
for (const c of uint64Cases) {
  test(`parseUint64(${JSON.stringify(c.text)}) ${c.value === undefined ? "is refused" : `is ${c.value}`}`, () => {
    if (c.value === undefined) {
      assert.throws(
        () => parseUint64(c.text, "x"),
        (e: unknown) => e instanceof SyncError && e.code === "protocol",
      );
    } else {
      assert.equal(parseUint64(c.text, "x"), c.value);
    }
  });
}

test("a join reply: numbers as decimal strings, kept exact", () => {
  const reply = parseJoinReply({
    topic: "t",
    epoch: "e",
    head: "9007199254740993",
    purged_through: "7",
  });
  assert.deepEqual(reply, { topic: "t", epoch: "e", head: 9007199254740993n, purgedThrough: 7n });
  assert.throws(
    () => parseJoinReply({ topic: "t", epoch: "e", head: 5, purged_through: "0" }),
    SyncError,
  );
  assert.throws(() => parseJoinReply(null), SyncError);
});

test("atHead: the same epoch and exactly the head", () => {
  const reply = { topic: "t", epoch: "e", head: 10n, purgedThrough: 2n };
  assert.equal(atHead({ epoch: "e", watermark: 10n }, reply), true);
  assert.equal(atHead({ epoch: "e", watermark: 9n }, reply), false);
  assert.equal(atHead({ epoch: "e", watermark: 11n }, reply), false);
  assert.equal(atHead({ epoch: "f", watermark: 10n }, reply), false);
  assert.equal(atHead(undefined, reply), false);
});
