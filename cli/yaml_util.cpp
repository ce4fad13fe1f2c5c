#include "yaml_util.hpp"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "oasync/error.hpp"

namespace oasync::cli {
namespace {

constexpr std::uintmax_t kMaxYamlBytes = 16u << 20;

std::string quote(const YAML::Node& node) {
  if (!node.IsScalar()) return node.IsSequence() ? "a list" : "a mapping";
  std::string text = node.Scalar();
  if (text.size() > 60) text = text.substr(0, 57) + "...";
  return "\"" + text + "\"";
}

}  // namespace

YAML::Node load_yaml_file(const std::string& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) throw Error(Code::not_found, fmt::format("cannot read {}: {}", path, ec.message()));
  if (size > kMaxYamlBytes) {
    throw Error(Code::invalid_input,
                fmt::format("{}: {} bytes is larger than the {} bytes a config may have", path,
                            size, kMaxYamlBytes));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(Code::not_found, fmt::format("cannot read {}", path));
  std::ostringstream text;
  text << in.rdbuf();
  return parse_yaml(text.str(), path);
}

YAML::Node parse_yaml(std::string_view text, const std::string& origin) {
  if (text.size() > kMaxYamlBytes) {
    throw Error(Code::invalid_input,
                fmt::format("{}: {} bytes is larger than the {} bytes a config may have", origin,
                            text.size(), kMaxYamlBytes));
  }
  try {
    return YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    throw Error(Code::invalid_input, fmt::format("{}:{}: {}", origin, e.mark.line + 1, e.msg));
  }
}

void YamlContext::fail(const YAML::Node& node, const std::string& message) const {
  throw Error(Code::invalid_input, fmt::format("{}:{}: {}", path, node.Mark().line + 1, message));
}

void YamlContext::unknown(const YAML::Node& key_node, const std::string& key) const {
  fail(key_node, fmt::format("unknown key \"{}\"", key));
}

void YamlContext::require_map(const YAML::Node& node, const std::string& what) const {
  if (!node.IsMap()) fail(node, fmt::format("{} must be a mapping, found {}", what, quote(node)));
}

std::string YamlContext::key(const YAML::const_iterator::value_type& item) const {
  if (!item.first.IsScalar()) fail(item.first, "keys must be plain words");
  return item.first.Scalar();
}

std::string YamlContext::string(const YAML::Node& node, const std::string& key) const {
  if (!node.IsScalar())
    fail(node, fmt::format("\"{}\" must be a string, found {}", key, quote(node)));
  return node.Scalar();
}

std::int64_t YamlContext::integer(const YAML::Node& node, const std::string& key, std::int64_t min,
                                  std::int64_t max) const {
  std::int64_t value = 0;
  if (!node.IsScalar() || !YAML::convert<std::int64_t>::decode(node, value)) {
    fail(node, fmt::format("\"{}\" must be a whole number, found {}", key, quote(node)));
  }
  if (value < min || value > max) {
    fail(node,
         fmt::format("\"{}\" must be between {} and {}, found {}", key, min, max, quote(node)));
  }
  return value;
}

bool YamlContext::boolean(const YAML::Node& node, const std::string& key) const {
  bool value = false;
  if (!node.IsScalar() || !YAML::convert<bool>::decode(node, value)) {
    fail(node, fmt::format("\"{}\" must be true or false, found {}", key, quote(node)));
  }
  return value;
}

std::vector<std::string> YamlContext::strings(const YAML::Node& node,
                                              const std::string& key) const {
  if (!node.IsSequence()) {
    fail(node, fmt::format("\"{}\" must be a list of strings, found {}", key, quote(node)));
  }
  std::vector<std::string> out;
  for (const auto& item : node) out.push_back(string(item, key));
  return out;
}

}  // namespace oasync::cli
