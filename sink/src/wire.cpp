#include "oasync/wire.hpp"

#include <limits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "json_limits.hpp"
#include "openagents/sync/v1/sink.pb.h"

namespace oasync {
namespace {

namespace pb = openagents::sync::v1;
using json = nlohmann::json;

constexpr std::uint64_t kMaxInt64 =
    static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());

std::int64_t checked_int64(std::uint64_t value, const char* field, std::size_t index) {
  if (value > kMaxInt64) {
    throw Error(Code::invalid_input,
                fmt::format("write {}: {} {} is above 2^63-1", index, field, value));
  }
  return static_cast<std::int64_t>(value);
}

pb::Outcome to_proto(Outcome o) {
  switch (o) {
    case Outcome::applied:
      return pb::OUTCOME_APPLIED;
    case Outcome::unchanged:
      return pb::OUTCOME_UNCHANGED;
    case Outcome::duplicate:
      return pb::OUTCOME_DUPLICATE;
    case Outcome::conflict:
      return pb::OUTCOME_CONFLICT;
    case Outcome::rejected:
      return pb::OUTCOME_REJECTED;
  }
  return pb::OUTCOME_UNSPECIFIED;
}

Outcome from_proto(pb::Outcome o) {
  switch (o) {
    case pb::OUTCOME_APPLIED:
      return Outcome::applied;
    case pb::OUTCOME_UNCHANGED:
      return Outcome::unchanged;
    case pb::OUTCOME_DUPLICATE:
      return Outcome::duplicate;
    case pb::OUTCOME_CONFLICT:
      return Outcome::conflict;
    case pb::OUTCOME_REJECTED:
      return Outcome::rejected;
    default:
      // An outcome this build does not know (from a newer peer).
      return Outcome::rejected;
  }
}

pb::RejectReason to_proto(RejectReason r) {
  switch (r) {
    case RejectReason::none:
      return pb::REJECT_REASON_UNSPECIFIED;
    case RejectReason::topic_not_registered:
      return pb::REJECT_REASON_TOPIC_NOT_REGISTERED;
    case RejectReason::key_prefix_mismatch:
      return pb::REJECT_REASON_KEY_PREFIX_MISMATCH;
    case RejectReason::invalid_topic:
      return pb::REJECT_REASON_INVALID_TOPIC;
    case RejectReason::invalid_key:
      return pb::REJECT_REASON_INVALID_KEY;
    case RejectReason::invalid_scope:
      return pb::REJECT_REASON_INVALID_SCOPE;
    case RejectReason::payload_not_object:
      return pb::REJECT_REASON_PAYLOAD_NOT_OBJECT;
    case RejectReason::payload_too_large:
      return pb::REJECT_REASON_PAYLOAD_TOO_LARGE;
    case RejectReason::invalid_write:
      return pb::REJECT_REASON_INVALID_WRITE;
    case RejectReason::malformed:
      return pb::REJECT_REASON_MALFORMED;
  }
  return pb::REJECT_REASON_UNSPECIFIED;
}

// A reason this build does not know (from a newer peer) reads as invalid_write.
RejectReason from_proto(pb::RejectReason r) {
  switch (r) {
    case pb::REJECT_REASON_UNSPECIFIED:
      return RejectReason::none;
    case pb::REJECT_REASON_TOPIC_NOT_REGISTERED:
      return RejectReason::topic_not_registered;
    case pb::REJECT_REASON_KEY_PREFIX_MISMATCH:
      return RejectReason::key_prefix_mismatch;
    case pb::REJECT_REASON_INVALID_TOPIC:
      return RejectReason::invalid_topic;
    case pb::REJECT_REASON_INVALID_KEY:
      return RejectReason::invalid_key;
    case pb::REJECT_REASON_INVALID_SCOPE:
      return RejectReason::invalid_scope;
    case pb::REJECT_REASON_PAYLOAD_NOT_OBJECT:
      return RejectReason::payload_not_object;
    case pb::REJECT_REASON_PAYLOAD_TOO_LARGE:
      return RejectReason::payload_too_large;
    case pb::REJECT_REASON_INVALID_WRITE:
      return RejectReason::invalid_write;
    case pb::REJECT_REASON_MALFORMED:
      return RejectReason::malformed;
    default:
      return RejectReason::invalid_write;
  }
}

pb::Op to_proto(Op op) {
  switch (op) {
    case Op::upsert:
      return pb::OP_UPSERT;
    case Op::delete_:
      return pb::OP_DELETE;
  }
  return pb::OP_UPSERT;
}

}  // namespace

namespace {

DocWrite from_proto(const pb::DocWrite& m, std::size_t index) {
  DocWrite w;
  w.topic = m.topic();
  w.doc_key = m.doc_key();
  w.scope = m.scope();
  switch (m.op()) {
    case pb::OP_UNSPECIFIED:
    case pb::OP_UPSERT:
      w.op = Op::upsert;
      break;
    case pb::OP_DELETE:
      w.op = Op::delete_;
      break;
    default:
      throw Error(Code::invalid_input,
                  fmt::format("write {}: unknown op {}", index, static_cast<int>(m.op())));
  }
  w.payload = m.payload();
  w.source_stream = m.source_stream();
  if (m.has_source_seq()) w.source_seq = checked_int64(m.source_seq(), "source_seq", index);
  if (m.has_expected_version()) {
    w.expected_version = checked_int64(m.expected_version(), "expected_version", index);
  }
  return w;
}

}  // namespace

DocWrite decode_write(std::string_view bytes) {
  pb::DocWrite message;
  if (bytes.size() > static_cast<std::size_t>(std::numeric_limits<int>::max()) ||
      !message.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    throw Error(Code::invalid_input, fmt::format("not a valid DocWrite ({} bytes)", bytes.size()));
  }
  return from_proto(message, 0);
}

Batch decode_batch(std::string_view bytes) {
  pb::WriteBatch message;
  if (bytes.size() > static_cast<std::size_t>(std::numeric_limits<int>::max()) ||
      !message.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    throw Error(Code::invalid_input,
                fmt::format("not a valid WriteBatch ({} bytes)", bytes.size()));
  }
  Batch batch;
  batch.writes.reserve(static_cast<std::size_t>(message.writes_size()));
  for (int i = 0; i < message.writes_size(); ++i) {
    batch.writes.push_back(from_proto(message.writes(i), static_cast<std::size_t>(i)));
  }
  if (message.has_checkpoint()) {
    const pb::ProducerCheckpoint& c = message.checkpoint();
    batch.checkpoint = ProducerCheckpoint{c.producer_id(), checked_int64(c.epoch(), "epoch", 0),
                                          checked_int64(c.position(), "position", 0)};
  }
  return batch;
}

std::string encode_batch(const Batch& batch) {
  pb::WriteBatch message;
  for (const DocWrite& w : batch.writes) {
    pb::DocWrite* m = message.add_writes();
    m->set_topic(w.topic);
    m->set_doc_key(w.doc_key);
    m->set_scope(w.scope);
    m->set_op(to_proto(w.op));
    m->set_payload(w.payload);
    m->set_source_stream(w.source_stream);
    if (w.source_seq) m->set_source_seq(static_cast<std::uint64_t>(*w.source_seq));
    if (w.expected_version) {
      m->set_expected_version(static_cast<std::uint64_t>(*w.expected_version));
    }
  }
  if (batch.checkpoint) {
    pb::ProducerCheckpoint* c = message.mutable_checkpoint();
    c->set_producer_id(batch.checkpoint->producer_id);
    c->set_epoch(static_cast<std::uint64_t>(batch.checkpoint->epoch));
    c->set_position(static_cast<std::uint64_t>(batch.checkpoint->position));
  }
  return message.SerializeAsString();
}

std::string encode_results(const std::vector<WriteResult>& results) {
  pb::BatchResult message;
  for (const WriteResult& r : results) {
    pb::WriteResult* m = message.add_results();
    m->set_outcome(to_proto(r.outcome));
    m->set_reason(to_proto(r.reason));
    m->set_detail(r.detail);
    m->set_doc_version(static_cast<std::uint64_t>(r.doc_version));
    m->set_watermark(static_cast<std::uint64_t>(r.watermark));
  }
  return message.SerializeAsString();
}

const char* wire_code(Code code) noexcept {
  switch (code) {
    case Code::database:
      return "database";
    case Code::outcome_unknown:
      return "outcome_unknown";
    case Code::fenced:
      return "fenced";
    case Code::invalid_input:
      return "malformed_frame";
    case Code::invalid_argument:
      return "invalid_batch";
    case Code::not_found:
    case Code::refused:
    case Code::internal:
      return "internal";
  }
  return "internal";
}

std::string encode_error(const Error& error) {
  pb::BatchResult message;
  pb::BatchError* e = message.mutable_error();
  e->set_code(wire_code(error.code()));
  e->set_message(error.what());
  e->set_retryable(error.retryable() == Retryable::yes);
  e->set_sqlstate(error.sqlstate());
  return message.SerializeAsString();
}

DecodedResult decode_results(std::string_view bytes) {
  pb::BatchResult message;
  if (bytes.size() > static_cast<std::size_t>(std::numeric_limits<int>::max()) ||
      !message.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    throw Error(Code::invalid_input,
                fmt::format("not a valid BatchResult ({} bytes)", bytes.size()));
  }
  DecodedResult out;
  for (const pb::WriteResult& m : message.results()) {
    WriteResult r;
    r.outcome = from_proto(m.outcome());
    r.reason = from_proto(m.reason());
    r.detail = m.detail();
    r.doc_version = static_cast<std::int64_t>(m.doc_version());
    r.watermark = static_cast<std::int64_t>(m.watermark());
    out.results.push_back(std::move(r));
  }
  if (message.has_error()) {
    out.error_code = message.error().code();
    out.error_message = message.error().message();
    out.retryable = message.error().retryable();
  }
  return out;
}

FrameDecoder::FrameDecoder(std::size_t max_frame_bytes) : max_frame_bytes_(max_frame_bytes) {}

void FrameDecoder::feed(std::string_view bytes) {
  // Drop consumed bytes before growing, so the buffer stays one frame large.
  if (offset_ > 0) {
    buffer_.erase(0, offset_);
    offset_ = 0;
  }
  buffer_.append(bytes);
  // Check the pending length prefix now, before the frame's bytes pile up.
  (void)pending_length();
}

std::optional<std::uint32_t> FrameDecoder::pending_length() const {
  if (buffer_.size() - offset_ < 4) return std::nullopt;
  const auto* p = reinterpret_cast<const unsigned char*>(buffer_.data() + offset_);
  const std::uint32_t length = (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) |
                               (std::uint32_t{p[2]} << 8) | std::uint32_t{p[3]};
  if (length > max_frame_bytes_) {
    throw Error(Code::invalid_input,
                fmt::format("frame {}: length {} exceeds the maximum of {} bytes; framing lost",
                            frames_ + 1, length, max_frame_bytes_));
  }
  return length;
}

std::optional<std::string> FrameDecoder::next() {
  const std::optional<std::uint32_t> length = pending_length();
  if (!length || buffer_.size() - offset_ - 4 < *length) return std::nullopt;
  std::string frame = buffer_.substr(offset_ + 4, *length);
  offset_ += 4 + *length;
  ++frames_;
  return frame;
}

bool FrameDecoder::mid_frame() const noexcept {
  return buffer_.size() > offset_;
}

std::string encode_frame(std::string_view payload) {
  if (payload.size() > std::numeric_limits<std::uint32_t>::max()) {
    throw Error(Code::invalid_argument,
                fmt::format("frame of {} bytes does not fit a 4-byte length", payload.size()));
  }
  const auto length = static_cast<std::uint32_t>(payload.size());
  std::string out;
  out.reserve(4 + payload.size());
  out.push_back(static_cast<char>(length >> 24));
  out.push_back(static_cast<char>((length >> 16) & 0xff));
  out.push_back(static_cast<char>((length >> 8) & 0xff));
  out.push_back(static_cast<char>(length & 0xff));
  out.append(payload);
  return out;
}

namespace {

std::string quoted(const json& value) {
  std::string text = value.dump(-1, ' ', false, json::error_handler_t::replace);
  if (text.size() > 80) text = text.substr(0, 77) + "...";
  return text;
}

const json& field_of(const json& object, const char* name, json::value_t type) {
  const json& value = object.at(name);
  const bool ok =
      type == json::value_t::number_unsigned ? value.is_number_unsigned() : value.type() == type;
  if (!ok) {
    const char* expected = type == json::value_t::string            ? "a string"
                           : type == json::value_t::number_unsigned ? "a non-negative integer"
                                                                    : "an object";
    throw Error(Code::invalid_input,
                fmt::format("field \"{}\" must be {}, found {}", name, expected, quoted(value)));
  }
  return value;
}

}  // namespace

DocWrite parse_write_line(std::string_view line) {
  const json object = internal::parse_json(line);
  if (!object.is_object()) {
    throw Error(Code::invalid_input,
                fmt::format("expected a JSON object per line, found {}", object.type_name()));
  }
  DocWrite w;
  for (const auto& [key, value] : object.items()) {
    if (key == "topic") {
      w.topic = field_of(object, "topic", json::value_t::string).get<std::string>();
    } else if (key == "doc_key") {
      w.doc_key = field_of(object, "doc_key", json::value_t::string).get<std::string>();
    } else if (key == "scope") {
      w.scope = field_of(object, "scope", json::value_t::string).get<std::string>();
    } else if (key == "op") {
      const auto op = field_of(object, "op", json::value_t::string).get<std::string>();
      if (op == "upsert") {
        w.op = Op::upsert;
      } else if (op == "delete") {
        w.op = Op::delete_;
      } else {
        throw Error(
            Code::invalid_input,
            fmt::format("field \"op\" must be \"upsert\" or \"delete\", found {}", quoted(value)));
      }
    } else if (key == "payload") {
      if (!value.is_object()) {
        throw Error(
            Code::invalid_input,
            fmt::format("field \"payload\" must be a JSON object, found {}", quoted(value)));
      }
      w.payload = value.dump(-1, ' ', false, json::error_handler_t::strict);
    } else if (key == "source_stream") {
      w.source_stream = field_of(object, "source_stream", json::value_t::string).get<std::string>();
    } else if (key == "source_seq" || key == "expected_version") {
      const auto number =
          field_of(object, key.c_str(), json::value_t::number_unsigned).get<std::uint64_t>();
      if (number > kMaxInt64) {
        throw Error(Code::invalid_input,
                    fmt::format("field \"{}\" is above 2^63-1: {}", key, number));
      }
      (key == "source_seq" ? w.source_seq : w.expected_version) = static_cast<std::int64_t>(number);
    } else {
      throw Error(Code::invalid_input, fmt::format("unknown field \"{}\"", key));
    }
  }
  return w;
}

std::string result_line(std::uint64_t line, const WriteResult& r) {
  nlohmann::ordered_json out = {{"line", line}, {"outcome", to_string(r.outcome)}};
  if (r.reason != RejectReason::none) out["reason"] = to_string(r.reason);
  if (!r.detail.empty()) out["detail"] = r.detail;
  out["doc_version"] = r.doc_version;
  out["watermark"] = r.watermark;
  return out.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace oasync
