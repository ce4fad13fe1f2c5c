// The C ABI called from outside C++: Python's ctypes loads liboasync and
// speaks protobuf to it (tests/integration/c_abi_caller.py). Debian's python3
// is named by path: it is the one with python3-protobuf.
#include <doctest/doctest.h>

#include "process.hpp"
#include "test_db.hpp"

using namespace oasync::test;

TEST_CASE("a foreign caller applies batches through the C ABI") {
  TestDatabase db;
  const auto r =
      run_process({"/usr/bin/python3", source_dir() + "/tests/integration/c_abi_caller.py",
                   OASYNC_TEST_LIBRARY, db.url()},
                  {}, {{"PYTHONPATH", OASYNC_TEST_PROTO_PY_DIR}, {"PYTHONDONTWRITEBYTECODE", "1"}});
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.out ==
        "abi version 1\n"
        "open with a bad conninfo: NULL, error names the target\n"
        "batch: applied v1 w1, rejected payload_not_object, applied v1 w2\n"
        "resend: duplicate, rejected payload_not_object, unchanged\n"
        "malformed request: malformed_frame\n"
        "closed\n");
  CHECK(db.scalar("SELECT count(*) FROM oasync.events") == "2");
}
