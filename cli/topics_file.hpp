// Reading schema/topics.yaml, the topic catalog (format: see the file itself).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "oasync/topics.hpp"

namespace oasync::cli {

// Parses a topic catalog. Throws oasync::Error "PATH:LINE: ..." naming the
// key and quoting the value on any problem, including a spec that
// oasync::validate refuses.
std::vector<TopicSpec> load_topics_file(const std::string& path);

// Parses catalog text; errors read "ORIGIN:LINE: ...".
std::vector<TopicSpec> parse_topics(std::string_view text, const std::string& origin);

}  // namespace oasync::cli
