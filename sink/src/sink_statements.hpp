// Internal: the sink's statements and the planner settings it plans them
// with, for the test that looks at their plans
// (tests/integration/plans_test.cpp).
#pragma once

#include <vector>

#include "pg.hpp"

namespace oasync::internal {

// Every statement of the sink's write path.
std::vector<const pg::Statement*> sink_statements();

// What the sink's session sets before it plans them (SET statements).
const char* sink_planner_settings();

}  // namespace oasync::internal
