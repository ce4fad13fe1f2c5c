// The payload of a channel push: one ServerMessage of sync.proto, in a
// binary frame (phoenix hands it over as an ArrayBuffer).
import { fromBinary } from "@bufbuild/protobuf";

import { ServerMessageSchema, type ServerMessage } from "./gen/openagents/sync/v1/sync_pb.js";
import { describe, SyncError } from "./errors.js";

/** Decodes the push `payload` of event `event` on `topic`; throws a
 *  `protocol` SyncError for anything but the bytes of a ServerMessage. */
export function decodePush(topic: string, event: string, payload: unknown): ServerMessage {
  let bytes: Uint8Array;
  if (payload instanceof ArrayBuffer) {
    bytes = new Uint8Array(payload);
  } else if (ArrayBuffer.isView(payload)) {
    bytes = new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength);
  } else {
    throw new SyncError(
      "protocol",
      `topic "${topic}": a ${event} push that is not binary (the socket's encoding must be protobuf)`,
      {
        topic,
      },
    );
  }
  try {
    return fromBinary(ServerMessageSchema, bytes);
  } catch (e) {
    throw new SyncError(
      "protocol",
      `topic "${topic}": a ${event} push of ${bytes.length} bytes is no ServerMessage (${describe(e)})`,
      {
        topic,
        cause: e,
      },
    );
  }
}
