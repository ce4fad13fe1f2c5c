// GET /sync/v1/doc/{key}?topic=T: a doc whose payload a push withheld
// (`fetch_required`), with the same token as the socket (Authorization:
// Bearer). The answer is `{topic, doc_key, scope, doc_version, deleted,
// last_watermark, epoch, offset, value}`.
import type { FetchedDoc, JsonValue } from "./cache.js";
import { SyncError } from "./errors.js";

/** The fetch function the client uses (the global one by default). */
export type FetchFunction = (
  url: string,
  init: { method: string; headers: Record<string, string> },
) => Promise<{ status: number; text(): Promise<string> }>;

/** What the doc endpoint said: the doc, or that the caller does not see it
 *  (404: gone from the tenant's view since; the stream will say so too). */
export type DocAnswer = { kind: "doc"; doc: FetchedDoc; deleted: boolean } | { kind: "not_found" };

/** Fetches doc `key` of `topic` from `url`. Throws a `fetch` SyncError for
 *  a network failure, any other status, or a body of another shape. */
export async function fetchDoc(
  fetch: FetchFunction,
  url: string,
  token: string,
  topic: string,
  key: string,
): Promise<DocAnswer> {
  const what = `doc "${key}" of topic "${topic}"`;
  let response: { status: number; text(): Promise<string> };
  let body: string;
  try {
    response = await fetch(url, { method: "GET", headers: { Authorization: `Bearer ${token}` } });
    body = await response.text();
  } catch (e) {
    throw new SyncError("fetch", `${what}: GET ${url} failed: ${String(e)}`, { topic, cause: e });
  }
  if (response.status === 404) return { kind: "not_found" };
  if (response.status !== 200) {
    throw new SyncError(
      "fetch",
      `${what}: GET ${url} answered ${response.status}: ${body.slice(0, 200)}`,
      {
        topic,
      },
    );
  }
  let v: Record<string, unknown>;
  try {
    v = JSON.parse(body) as Record<string, unknown>;
  } catch {
    throw new SyncError("fetch", `${what}: the answer is not JSON: ${body.slice(0, 200)}`, {
      topic,
    });
  }
  const version = v["doc_version"];
  // JSON numbers: exact only up to 2^53 (a version beyond is refused here).
  if (typeof version !== "number" || !Number.isSafeInteger(version) || version < 0) {
    throw new SyncError(
      "fetch",
      `${what}: doc_version ${JSON.stringify(version)} is not a safe integer`,
      { topic },
    );
  }
  if (
    typeof v["epoch"] !== "string" ||
    typeof v["scope"] !== "string" ||
    typeof v["deleted"] !== "boolean"
  ) {
    throw new SyncError(
      "fetch",
      `${what}: the answer lacks epoch, scope or deleted: ${body.slice(0, 200)}`,
      {
        topic,
      },
    );
  }
  if (v["doc_key"] !== key || v["topic"] !== topic) {
    throw new SyncError(
      "fetch",
      `${what}: the answer is of doc "${String(v["doc_key"])}" of topic "${String(v["topic"])}"`,
      {
        topic,
      },
    );
  }
  return {
    kind: "doc",
    deleted: v["deleted"],
    doc: {
      version: BigInt(version),
      epoch: v["epoch"],
      scope: v["scope"],
      value: (v["value"] ?? null) as JsonValue,
    },
  };
}
