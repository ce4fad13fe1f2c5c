// Reading YAML with errors that say "FILE:LINE: ..." and quote the value.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <yaml-cpp/yaml.h>

namespace oasync::cli {

// Loads a YAML file; throws oasync::Error "PATH:LINE: ..." on syntax errors
// and "cannot read PATH" when it cannot be opened. Files above 16 MiB are
// refused before parsing.
YAML::Node load_yaml_file(const std::string& path);

// Parses YAML text; `origin` names it in errors ("ORIGIN:LINE: ..."). Texts
// above 16 MiB are refused before parsing; nesting deeper than yaml-cpp's
// depth guard is a syntax error, not a stack overflow.
YAML::Node parse_yaml(std::string_view text, const std::string& origin);

// Typed access to YAML nodes; every failure names the file, the line and the
// key, and quotes the offending value.
struct YamlContext {
  std::string path;

  [[noreturn]] void fail(const YAML::Node& node, const std::string& message) const;
  [[noreturn]] void unknown(const YAML::Node& key_node, const std::string& key) const;
  void require_map(const YAML::Node& node, const std::string& what) const;
  std::string key(const YAML::const_iterator::value_type& item) const;
  std::string string(const YAML::Node& node, const std::string& key) const;
  std::int64_t integer(const YAML::Node& node, const std::string& key, std::int64_t min,
                       std::int64_t max) const;
  bool boolean(const YAML::Node& node, const std::string& key) const;
  // A sequence of strings.
  std::vector<std::string> strings(const YAML::Node& node, const std::string& key) const;
};

}  // namespace oasync::cli
