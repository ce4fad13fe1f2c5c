// The sync/v1 messages (proto/openagents/sync/v1/sync.proto) for the tests,
// generated when this module is imported: Debian's protoc runs
// protoc-gen-es (node_modules/.bin) into a fresh folder under .gen/ (git
// ignored; inside tests/e2e so that the generated module's import of
// "@bufbuild/protobuf" resolves to node_modules here), the result is
// imported, and the folder removed. Nothing generated is kept or committed:
// the tests always read the proto file as it is now. A missing protoc or
// plugin, or a proto that does not compile, fails the import with protoc's
// own words.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

import { create, fromBinary, fromJson, toBinary, toJson } from "@bufbuild/protobuf";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");
const plugin = join(here, "node_modules", ".bin", "protoc-gen-es");
const protoFile = join("openagents", "sync", "v1", "sync.proto");

export { create, fromBinary, fromJson, toBinary, toJson };

// Generates and imports sync_pb.js from the proto tree at `protoRoot`
// (default: OASYNC_PROTO_ROOT, else this repository's proto/); resolves to
// the generated module (ServerMessageSchema, BatchSchema, Op, ErrorCode, ...).
export async function loadSyncProto(protoRoot = process.env.OASYNC_PROTO_ROOT ?? join(root, "proto")) {
  if (!existsSync(plugin)) {
    throw new Error(`sync-proto: ${plugin} is missing: run npm ci in tests/e2e`);
  }
  if (!existsSync(join(protoRoot, protoFile))) {
    throw new Error(`sync-proto: ${join(protoRoot, protoFile)} does not exist`);
  }
  mkdirSync(join(here, ".gen"), { recursive: true });
  const out = mkdtempSync(join(here, ".gen", "sync-"));
  try {
    const r = spawnSync(
      "protoc",
      [
        `--plugin=protoc-gen-es=${plugin}`,
        `--es_out=${out}`,
        "--es_opt=target=js,import_extension=js",
        `--proto_path=${protoRoot}`,
        protoFile,
      ],
      { encoding: "utf8" },
    );
    if (r.error) throw new Error(`sync-proto: could not run protoc (${r.error.message}); install protobuf-compiler`);
    if (r.status !== 0) {
      throw new Error(`sync-proto: protoc failed (status ${r.status}, signal ${r.signal}): ${r.stderr}`);
    }
    const generated = join(out, "openagents", "sync", "v1", "sync_pb.js");
    if (!existsSync(generated)) {
      throw new Error(`sync-proto: protoc succeeded but wrote no ${generated}: ${r.stderr}`);
    }
    return await import(pathToFileURL(generated).href);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

export const pb = await loadSyncProto();
export const {
  ServerMessageSchema,
  BatchSchema,
  CursorSchema,
  TopicPositionSchema,
  UpdateSchema,
  HeartbeatSchema,
  ErrorSchema,
  StaleCursorSchema,
  SnapshotHeaderSchema,
  SnapshotEndSchema,
  DocSchema,
  Op,
  ErrorCode,
  StaleReason,
} = pb;

// A ServerMessage from the bytes of a binary frame (an ArrayBuffer, as
// phoenix hands it to channel.on, or any Uint8Array).
export function decodeServerMessage(bytes, schema = ServerMessageSchema) {
  const view = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  return fromBinary(schema, view);
}

// A ServerMessage from its canonical JSON mapping (the socket's
// encoding=json frames).
export function serverMessageFromJson(json, schema = ServerMessageSchema) {
  return fromJson(schema, json);
}
