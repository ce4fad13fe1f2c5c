// Whose token it is, and for how long: the JWT's `sub`, `org_id`, `exp` and
// `iat` claims, decoded without verifying the signature. The identity is only
// a cache key and the times only spare a connect bound to be refused (the
// server verifies every token); a token that does not decode has neither.

/** The user and organisation a token speaks for. */
export interface Identity {
  readonly user: string;
  readonly org: string;
}

/** `sub` and `org_id` of the JWT `token` (strings, or safe integers as their
 *  decimal text), or undefined when the token is no JWT or lacks either. */
export function identityOf(token: string): Identity | undefined {
  const c = claimsOf(token);
  if (c === undefined) return undefined;
  const user = claimText(c["sub"]);
  const org = claimText(c["org_id"]);
  if (user === undefined || org === undefined) return undefined;
  return { user, org };
}

/** The `exp` and `iat` claims of the JWT `token` (seconds since the epoch),
 *  each undefined when absent. */
export function timesOf(token: string): { exp: number | undefined; iat: number | undefined } {
  const claims = claimsOf(token);
  const seconds = (v: unknown) => (typeof v === "number" && Number.isFinite(v) ? v : undefined);
  return { exp: seconds(claims?.["exp"]), iat: seconds(claims?.["iat"]) };
}

function claimsOf(token: string): Record<string, unknown> | undefined {
  const parts = token.split(".");
  const payload = parts[1];
  if (parts.length !== 3 || payload === undefined) return undefined;
  let claims: unknown;
  try {
    claims = JSON.parse(decodeBase64Url(payload));
  } catch {
    return undefined;
  }
  if (typeof claims !== "object" || claims === null || Array.isArray(claims)) return undefined;
  return claims as Record<string, unknown>;
}

export function sameIdentity(a: Identity | undefined, b: Identity | undefined): boolean {
  // A token without an identity is nobody's: never the same as another, so
  // that two such tokens (of two tenants, maybe) never share a cache.
  if (a === undefined || b === undefined) return false;
  return a.user === b.user && a.org === b.org;
}

// An integer claim beyond 2^53 would be rounded by JSON.parse, and two orgs
// could then share a key: such a claim gives no identity.
function claimText(value: unknown): string | undefined {
  if (typeof value === "string" && value !== "") return value;
  if (typeof value === "number" && Number.isSafeInteger(value)) return String(value);
  return undefined;
}

function decodeBase64Url(text: string): string {
  if (!/^[A-Za-z0-9_-]*$/.test(text)) throw new Error("not base64url");
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
  const binary = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
}
