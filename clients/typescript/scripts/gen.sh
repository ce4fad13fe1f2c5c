#!/bin/sh
# Generates the TypeScript of proto/openagents/sync/v1/sync.proto into the
# folder $1 (default src/gen) with Debian's protoc and the pinned
# protoc-gen-es. Run from clients/typescript (npm run gen does).
set -eu
out="${1:-src/gen}"
plugin=node_modules/.bin/protoc-gen-es
if [ ! -x "$plugin" ]; then
  echo "gen: $plugin is missing: run npm ci in clients/typescript" >&2
  exit 1
fi
if ! command -v protoc >/dev/null 2>&1; then
  echo "gen: protoc is missing: install protobuf-compiler" >&2
  exit 1
fi
mkdir -p "$out"
protoc --plugin=protoc-gen-es="$plugin" --es_out="$out" \
  --es_opt=target=ts,import_extension=js \
  --proto_path=../../proto openagents/sync/v1/sync.proto
