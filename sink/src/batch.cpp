#include "oasync/batch.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>

namespace oasync {

const char* to_string(Op op) noexcept {
  switch (op) {
    case Op::upsert:
      return "upsert";
    case Op::delete_:
      return "delete";
  }
  return "upsert";
}

std::optional<Op> parse_op(std::string_view text) noexcept {
  if (text == "upsert") return Op::upsert;
  if (text == "delete") return Op::delete_;
  return std::nullopt;
}

const char* to_string(Outcome outcome) noexcept {
  switch (outcome) {
    case Outcome::applied:
      return "applied";
    case Outcome::unchanged:
      return "unchanged";
    case Outcome::duplicate:
      return "duplicate";
    case Outcome::conflict:
      return "conflict";
    case Outcome::rejected:
      return "rejected";
  }
  return "unknown";
}

const char* to_string(RejectReason reason) noexcept {
  switch (reason) {
    case RejectReason::none:
      return "";
    case RejectReason::topic_not_registered:
      return "topic_not_registered";
    case RejectReason::key_prefix_mismatch:
      return "key_prefix_mismatch";
    case RejectReason::invalid_topic:
      return "invalid_topic";
    case RejectReason::invalid_key:
      return "invalid_key";
    case RejectReason::invalid_scope:
      return "invalid_scope";
    case RejectReason::payload_not_object:
      return "payload_not_object";
    case RejectReason::payload_too_large:
      return "payload_too_large";
    case RejectReason::invalid_write:
      return "invalid_write";
    case RejectReason::malformed:
      return "malformed";
  }
  return "unknown";
}

bool storable_text(std::string_view text) noexcept {
  if (text.find('\0') != std::string_view::npos) return false;
  if (std::all_of(text.begin(), text.end(),
                  [](char c) { return static_cast<unsigned char>(c) < 0x80; })) {
    return true;
  }
  // The JSON library's strict encoder checks the UTF-8.
  try {
    (void)nlohmann::json(std::string(text))
        .dump(-1, ' ', false, nlohmann::json::error_handler_t::strict);
    return true;
  } catch (...) {
    return false;
  }
}

}  // namespace oasync
