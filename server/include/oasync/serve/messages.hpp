// The client contract's messages (proto/openagents/sync/v1/sync.proto) made
// from what the reader returns: the one mapping that every emitter shares
// (`oasync tail`, `snapshot` and `doc get` with --format proto, and the
// sync:v1 channel of `oasync serve`).
#pragma once

#include <cstdint>
#include <string>

#include "oasync/reader.hpp"
#include "openagents/sync/v1/sync.pb.h"

namespace oasync::messages {

namespace pb = openagents::sync::v1;

pb::StaleReason to_proto(StaleReason reason);
void to_proto(const TopicPosition& position, pb::TopicPosition* out);
// An event as it was written: its own scope, and its payload as read (a
// pointer topic's fetched payload sets fetch_required, as `oasync tail`
// reports it).
void to_proto(const Event& event, pb::Update* out);
void to_proto(const Doc& doc, pb::Doc* out);

// What a stale cursor is told, in words: which rule failed, floor and head,
// and that a snapshot resyncs.
std::string stale_text(const ResumeCheck& check, std::int64_t cursor_watermark);
// The ERROR_CODE_STALE_CURSOR error of a stale cursor (`cursor_epoch` and
// `cursor_watermark` as the client presented them).
void to_proto(const ResumeCheck& check, const std::string& cursor_epoch,
              std::int64_t cursor_watermark, pb::Error* out);

}  // namespace oasync::messages
