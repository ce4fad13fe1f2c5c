#!/bin/sh
# ctest registers each doctest case under its name (doctest_discover_tests)
# and splits a name at ";" into entries that match no case, and so pass
# without running anything. Fails on any such name in the given test binaries.
status=0
for exe in "$@"; do
  if "$exe" --list-test-cases | grep ';'; then
    echo "$exe: the test case names above hold ';', which ctest splits: use ',' instead" >&2
    status=1
  fi
done
exit $status
