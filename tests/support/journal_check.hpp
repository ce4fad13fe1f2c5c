// Invariants of a journal, checked with SQL after a test's writers finished.
#pragma once

#include <string>
#include <vector>

#include "test_db.hpp"

namespace oasync::test {

// Returns one line per violated invariant (empty when all hold):
//  - per topic, watermarks are exactly 1..head (no gap, no duplicate);
//  - per doc, its events' versions are exactly 1..n;
//  - each doc row's version, last_watermark, tombstone flag and hash match
//    its latest event;
//  - no placeholder (version 0) doc is visible.
std::vector<std::string> journal_violations(const TestDatabase& db);

}  // namespace oasync::test
