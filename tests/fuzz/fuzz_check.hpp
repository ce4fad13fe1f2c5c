// What every fuzz target shares: a property check that aborts (libFuzzer
// reports an abort as a crash, and so does the corpus replay under ctest) and
// the one exception a target may see on bad input, oasync::Error. Any other
// exception escapes the target, terminates the process, and is a finding.
#pragma once

#include <cstdio>
#include <cstdlib>

#define OASYNC_FUZZ_CHECK(cond)                                                        \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      std::fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                    \
    }                                                                                  \
  } while (0)
