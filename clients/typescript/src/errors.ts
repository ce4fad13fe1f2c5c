// The one error type the client reports (through `onError`) and throws.

/** What went wrong, as a code a caller acts on:
 *  - `token`: the token getter failed; the client is unauthorized;
 *  - `unauthorized`: the server refused the token, and no fresh one was had;
 *  - `refused`: the server refused a topic's join (`reason` says why);
 *  - `protocol`: the server sent what the protocol does not allow; the topic
 *    is left;
 *  - `fetch`: a withheld payload could not be fetched; the doc stays pending
 *    and is fetched again at the topic's next join;
 *  - `storage`: the storage refused a write; the topic is no longer persisted;
 *  - `usage`: a call the client cannot honour (a bad option or argument). */
export type SyncErrorCode =
  "token" | "unauthorized" | "refused" | "protocol" | "fetch" | "storage" | "usage";

export class SyncError extends Error {
  override readonly name = "SyncError";
  readonly code: SyncErrorCode;
  /** The topic concerned, when there is one. */
  readonly topic: string | undefined;
  /** The server's reason, for `refused` (`forbidden_topic`, `unavailable`...). */
  readonly reason: string | undefined;

  constructor(
    code: SyncErrorCode,
    message: string,
    details: { topic?: string; reason?: string; cause?: unknown } = {},
  ) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.code = code;
    this.topic = details.topic;
    this.reason = details.reason;
  }
}

/** The message of anything thrown, for an error that quotes its cause. */
export function describe(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}
