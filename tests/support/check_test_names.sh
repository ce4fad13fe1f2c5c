#!/bin/sh
# ctest registers each doctest case under its name (doctest_discover_tests)
# and splits a name at ";" into entries that match no case, and so pass
# without running anything. Fails on any such name in the given test binaries.
status=0
for exe in "$@"; do
  # Listed first: in a pipe into grep, a binary that cannot list would pass.
  if ! names=$("$exe" --list-test-cases); then
    echo "$exe: could not list its test cases" >&2
    status=1
    continue
  fi
  if printf '%s\n' "$names" | grep ';'; then
    echo "$exe: the test case names above hold ';', which ctest splits: use ',' instead" >&2
    status=1
  fi
done
exit $status
