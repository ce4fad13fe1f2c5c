#!/bin/sh
# Fails (exit 1) when src/gen is not what `npm run gen` writes from the
# proto as it is now: regenerates into a temporary folder and diffs.
set -eu
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
sh scripts/gen.sh "$tmp"
if ! diff -ru src/gen "$tmp" >"$tmp.diff" 2>&1; then
  cat "$tmp.diff" >&2
  rm -f "$tmp.diff"
  echo "check-gen: src/gen is stale: run npm run gen in clients/typescript and commit the result" >&2
  exit 1
fi
rm -f "$tmp.diff"
echo "check-gen: src/gen matches proto/openagents/sync/v1/sync.proto"
