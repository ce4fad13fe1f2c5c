import assert from "node:assert/strict";
import { test } from "node:test";

import { identityOf, sameIdentity } from "../src/identity.js";
import { jwt } from "./support/world.js";

const cases: {
  name: string;
  token: string;
  identity: { user: string; org: string } | undefined;
}[] = [
  {
    name: "string claims",
    token: jwt({ sub: "u1", org_id: "o1" }),
    identity: { user: "u1", org: "o1" },
  },
  {
    name: "an integer org_id",
    token: jwt({ sub: "u1", org_id: 42 }),
    identity: { user: "u1", org: "42" },
  },
  {
    name: "non-ASCII claims",
    token: jwt({ sub: "zoë", org_id: "örg" }),
    identity: { user: "zoë", org: "örg" },
  },
  {
    name: "an org_id beyond 2^53 (rounded by JSON)",
    token: jwt({ sub: "u1", org_id: 9007199254740993 }),
    identity: undefined,
  },
  { name: "no org_id", token: jwt({ sub: "u1" }), identity: undefined },
  { name: "an empty sub", token: jwt({ sub: "", org_id: "o" }), identity: undefined },
  { name: "not a JWT", token: "opaque-token", identity: undefined },
  { name: "a payload that is not base64url", token: "a.b*c.d", identity: undefined },
  {
    name: "a payload that is not JSON",
    token: `a.${Buffer.from("nope").toString("base64url")}.c`,
    identity: undefined,
  },
];
for (const c of cases) {
  test(`identityOf: ${c.name}`, () => {
    assert.deepEqual(identityOf(c.token), c.identity);
  });
}

test("sameIdentity compares user and org", () => {
  assert.equal(sameIdentity({ user: "a", org: "1" }, { user: "a", org: "1" }), true);
  assert.equal(sameIdentity({ user: "a", org: "1" }, { user: "a", org: "2" }), false);
  assert.equal(sameIdentity(undefined, { user: "a", org: "1" }), false);
  assert.equal(sameIdentity(undefined, undefined), false, "no identity is nobody's");
});
