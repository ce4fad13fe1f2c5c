// A reader's view of a topic, and the State Protocol messages it receives
// (STATE-PROTOCOL.md of @durable-streams/state, and the JSON Schema it
// publishes, state-protocol.schema.json): change messages
//   {"type": TOPIC, "key": DOC_KEY, "value": PAYLOAD or null for a delete,
//    "headers": {"operation": "insert"|"update"|"delete"}}
// with "version": V added to the headers only for a reader that asked for it
// (versions=true: the schema allows no other header, so a validating client
// refuses those), and controls
//   {"headers": {"control": "snapshot-start"|"snapshot-end"|"reset"}}.
// An "update" may name a key the reader never saw inserted (a doc re-created
// after a delete; a doc the snapshot hand-over delivers from the journal):
// clients apply updates as upserts.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "oasync/reader.hpp"

namespace oasync::serve {

// How a view's messages are encoded.
enum class Format {
  state_json,  // State Protocol JSON messages (the Durable Streams)
  sync_proto,  // serialized ServerMessages of sync.proto (the sync:v1 channel)
};

// Which headers a change message carries.
enum class Headers {
  operation_only,  // {"operation": ...}: all that the published schema allows
  with_version,    // and "version": the doc's version (versions=true)
};

// The scopes a token reads: its tenant's, and the unscoped docs ("") when the
// server is configured to show them; and the headers its request asked for.
struct View {
  std::string scope;
  bool unscoped = false;
  Headers headers = Headers::operation_only;
  Format format = Format::state_json;
  // sync_proto: an upsert whose payload is larger is sent without it, with
  // fetch_required set (the client fetches the doc). 0: no limit.
  std::int64_t max_push_payload = 0;

  bool contains(std::string_view s) const { return s == scope || (unscoped && s.empty()); }
  // The scopes to read one by one: the tenant's, then "" if shown.
  std::vector<std::string> parts() const;
};

// The message an event is for `view`, or nullopt when the view does not see
// it. From a read with Detail::routing (every scope's events) or of one of
// the view's scopes:
//   - an upsert in the view: "insert" when it creates the doc or brings it
//     into the view, else "update"; skipped when its payload was withheld (a
//     pointer doc that has left the scope since: the move, later in the
//     stream, removes it);
//   - a tombstone in the view, or an upsert that took the doc out of the
//     view (or an exit row of a scoped read): "delete", with "value": null.
// In Format::sync_proto, an Update with the same rules: OP_UPSERT (the
// payload filled in, also for a pointer topic), or OP_DELETE, whose scope is
// the view's scope the doc left.
std::optional<std::string> message_for(const Event& event, const View& view);

// A message's bytes, shared by every reader that sends them.
using Message = std::shared_ptr<const std::string>;
Message shared(std::string bytes);

// What the messages kept by one topic's buffered events may take in all: at
// most `limit` bytes, each counted with its allocation. Beyond it, readers
// encode for themselves until buffered events (and their messages) go.
struct EncodingBudget {
  explicit EncodingBudget(std::int64_t limit) : limit(limit) {}
  const std::int64_t limit;
  std::atomic<std::int64_t> used{0};
};

// An event in the hub's buffer, which many readers take: its message for a
// view (message_for) is encoded once per form (the encoding the view asks
// for, and how the event changes the view: an upsert, a move out or a
// delete, with insert and update apart in JSON) and the bytes are shared by
// every reader of that form, whatever its tenant, socket or stream. It keeps
// at most kMaxForms forms, the first ones asked for, and only while
// `budget` has room; a reader of another form encodes for itself.
// Thread-safe.
class SharedEvent : public Event {
 public:
  static constexpr std::size_t kMaxForms = 2;
  // What a kept message costs beside its bytes: its string, the shared
  // pointer's block and its slot.
  static constexpr std::int64_t kFormOverhead = 96;
  SharedEvent(Event event, std::shared_ptr<EncodingBudget> budget);
  ~SharedEvent();
  SharedEvent(const SharedEvent&) = delete;
  SharedEvent& operator=(const SharedEvent&) = delete;
  std::optional<Message> message(const View& view) const;

 private:
  struct Form {
    Format format;
    Headers headers;
    std::int64_t max_push_payload;
    int change;
    bool operator==(const Form&) const = default;
  };
  std::shared_ptr<EncodingBudget> budget_;
  mutable std::mutex mutex_;
  mutable std::vector<std::pair<Form, Message>> forms_;
  mutable std::int64_t kept_bytes_ = 0;
};

// The message a snapshot's doc is for `view`: an "insert" (a Doc).
std::string snapshot_message(const Doc& doc, const View& view);

// The controls around a snapshot taken at `snapshot` (its epoch and head):
// "snapshot-start" and "snapshot-end" (a SnapshotHeader and a SnapshotEnd).
enum class Control { snapshot_start, snapshot_end };
std::string control_message(Control control, const View& view, const TopicPosition& snapshot);

// What a reader whose offset went stale (`stale`; its cursor at
// `cursor_watermark` of `cursor_epoch`, "" when not known) is told before its
// fresh snapshot: the "reset" control, or an Error with code
// ERROR_CODE_STALE_CURSOR naming the reason, floor, head and epoch.
std::string reset_message(const View& view, const ResumeCheck& stale,
                          const std::string& cursor_epoch, std::int64_t cursor_watermark);

// A JSON array of `messages` (each already JSON text).
std::string json_array(const std::vector<Message>& messages);

}  // namespace oasync::serve
