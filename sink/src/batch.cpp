#include "oasync/batch.hpp"

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

}  // namespace oasync
