#!/usr/bin/env bash
# Installs the build into a temporary prefix, builds a small consumer against
# it once through pkg-config and once through find_package(oasync), and runs
# both against a fresh database that the installed `oasync` migrates.
#
#   tests/install/install_test.sh BUILD_DIR     (OASYNC_DATABASE_URL: admin URL)
set -euo pipefail
build=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
: "${OASYNC_DATABASE_URL:?OASYNC_DATABASE_URL is not set: this test needs a real PostgreSQL}"

work=$(mktemp -d /tmp/oasync-install.XXXXXX)
db="oasync_install_$$"
cleanup() {
  psql -q "$OASYNC_DATABASE_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

prefix="$work/prefix"
cmake --install "$build" --prefix "$prefix" >/dev/null
# Moving the tree afterwards must not matter: nothing in it names $prefix.
mv "$prefix" "$work/moved"
prefix="$work/moved"
pcdir=$(dirname "$(find "$prefix" -name oasync.pc)")
libdir=$(dirname "$(find "$prefix" -name 'liboasync.so' -print -quit)")

# A database for this test, migrated by the installed oasync.
url="$OASYNC_DATABASE_URL"
case "$url" in
  *://*\?*) url="$url&dbname=$db" ;;
  *://*) url="$url?dbname=$db" ;;
  *) url="$url dbname=$db" ;;
esac
psql -q "$OASYNC_DATABASE_URL" -c "CREATE DATABASE $db" >/dev/null
"$prefix/bin/oasync" --database-url "$url" migrate --dir "$prefix/share/oasync/migrations" >/dev/null
"$prefix/bin/oasync" --database-url "$url" topics apply "$prefix/share/oasync/topics.yaml" >/dev/null

fail() { echo "install test: $*" >&2; exit 1; }

# 1. pkg-config
echo "pkg-config: $(PKG_CONFIG_PATH=$pcdir pkg-config --modversion oasync)"
# shellcheck disable=SC2046
c++ -std=c++20 "$here/consumer/consumer.cpp" -o "$work/consumer_pc" \
  $(PKG_CONFIG_PATH=$pcdir pkg-config --cflags --libs oasync) -Wl,-rpath,"$libdir"
out=$("$work/consumer_pc" "$url" pc) || fail "the pkg-config consumer failed"
[ "$out" = "applied 1 1" ] || fail "the pkg-config consumer printed \"$out\", expected \"applied 1 1\""

# 2. find_package(oasync)
cmake -S "$here/consumer" -B "$work/consumer-build" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/consumer-build" >/dev/null
out=$("$work/consumer-build/consumer" "$url" cmake) || fail "the find_package consumer failed"
[ "$out" = "applied 1 2" ] || fail "the find_package consumer printed \"$out\", expected \"applied 1 2\""

# 3. a version this build does not satisfy is refused
mkdir "$work/wants-9"
cp "$here/consumer/consumer.cpp" "$work/wants-9/"
sed 's/find_package(oasync 0.1 REQUIRED)/find_package(oasync 9.0 REQUIRED)/' \
  "$here/consumer/CMakeLists.txt" > "$work/wants-9/CMakeLists.txt"
if cmake -S "$work/wants-9" -B "$work/wants-9/build" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null 2>&1; then
  fail "find_package(oasync 9.0) succeeded against version $(PKG_CONFIG_PATH=$pcdir pkg-config --modversion oasync)"
fi
echo "install test: both consumers applied their write; a wrong version was refused"
