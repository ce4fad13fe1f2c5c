// Reading schema/topics.yaml, the topic catalog (format: see the file itself).
#pragma once

#include <string>
#include <vector>

#include "oasync/topics.hpp"

namespace oasync::cli {

// Parses a topic catalog. Throws oasync::Error "PATH:LINE: ..." naming the
// key and quoting the value on any problem, including a spec that
// oasync::validate refuses.
std::vector<TopicSpec> load_topics_file(const std::string& path);

}  // namespace oasync::cli
