// Internal: the Reader's page statement, for the test that looks at its plans
// (tests/integration/plans_test.cpp).
#pragma once

namespace oasync::internal {

// The prepared statement of Reader::read: $1 topic, $2 epoch (text, '' for
// none), $3 after, $4 through (NULL: the head), $5 scope, $6 limit.
const char* reader_page_sql();

}  // namespace oasync::internal
