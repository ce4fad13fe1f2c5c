#include "oasync/serve/messages.hpp"

#include <fmt/format.h>

namespace oasync::messages {

pb::StaleReason to_proto(StaleReason reason) {
  switch (reason) {
    case StaleReason::retention_floor_breach:
      return pb::STALE_REASON_RETENTION_FLOOR_BREACH;
    case StaleReason::cursor_ahead:
      return pb::STALE_REASON_CURSOR_AHEAD;
    case StaleReason::epoch_changed:
      return pb::STALE_REASON_EPOCH_CHANGED;
    default:
      return pb::STALE_REASON_UNSPECIFIED;
  }
}

void to_proto(const TopicPosition& p, pb::TopicPosition* out) {
  out->set_topic(p.topic);
  out->set_epoch(p.epoch);
  out->set_head(static_cast<std::uint64_t>(p.head));
  out->set_purged_through(static_cast<std::uint64_t>(p.purged_through));
}

void to_proto(const Event& e, pb::Update* out) {
  out->set_topic(e.topic);
  out->set_doc_key(e.doc_key);
  out->set_doc_version(static_cast<std::uint64_t>(e.doc_version));
  out->set_payload(e.payload);
  out->set_watermark(static_cast<std::uint64_t>(e.watermark));
  out->set_epoch(e.epoch);
  out->set_scope(e.scope);
  out->set_op(e.op == Op::delete_ ? pb::OP_DELETE : pb::OP_UPSERT);
  out->set_payload_hash(e.payload_hash);
  out->set_fetch_required(e.payload_fetched);
}

void to_proto(const Doc& d, pb::Doc* out) {
  out->set_topic(d.topic);
  out->set_doc_key(d.doc_key);
  out->set_scope(d.scope);
  out->set_doc_version(static_cast<std::uint64_t>(d.doc_version));
  out->set_deleted(d.deleted);
  out->set_payload(d.payload);
  out->set_payload_hash(d.payload_hash);
  out->set_last_watermark(static_cast<std::uint64_t>(d.last_watermark));
}

std::string stale_text(const ResumeCheck& check, std::int64_t cursor_watermark) {
  const TopicPosition& p = check.position;
  return fmt::format(
      "cursor {} of topic \"{}\" cannot resume: {} (floor {}, head {}); resync with a snapshot",
      cursor_watermark, p.topic, to_string(check.reason), p.purged_through, p.head);
}

void to_proto(const ResumeCheck& check, const std::string& cursor_epoch,
              std::int64_t cursor_watermark, pb::Error* out) {
  const TopicPosition& p = check.position;
  out->set_code(pb::ERROR_CODE_STALE_CURSOR);
  out->set_message(stale_text(check, cursor_watermark));
  pb::StaleCursor* s = out->mutable_stale();
  s->set_topic(p.topic);
  s->set_reason(to_proto(check.reason));
  s->set_floor(static_cast<std::uint64_t>(p.purged_through));
  s->set_head(static_cast<std::uint64_t>(p.head));
  s->set_epoch(p.epoch);
  s->set_cursor_watermark(static_cast<std::uint64_t>(cursor_watermark));
  s->set_cursor_epoch(cursor_epoch);
}

}  // namespace oasync::messages
