// Internal: parsing JSON with oasync's limits (depth, duplicate keys).
#pragma once

#include <string_view>

#include <nlohmann/json.hpp>

#include "oasync/canonical_json.hpp"

namespace oasync::internal {

// Parses `text` into a value, checking nesting depth and duplicate keys as it
// reads. Throws oasync::Error naming the problem.
nlohmann::json parse_json(std::string_view text, int max_depth = kMaxJsonDepth);

}  // namespace oasync::internal
