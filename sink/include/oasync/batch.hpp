// A batch of doc writes and its per-write results: the sink's input and output.
//
// These are plain values. The wire forms (proto/openagents/sync/v1/sink.proto
// and the NDJSON lines of `oasync sink --input`) convert to and from them in
// oasync/wire.hpp.
//
// Adding an Outcome or a RejectReason: add it here, to its to_string, and to
// sink.proto and wire.cpp's conversions. The compiler flags every switch that
// misses it (-Werror=switch), and the unit test "every outcome and reason
// survives the proto round trip" flags a proto enum that was forgotten.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace oasync {

// Limits every write must satisfy, whatever its topic.
inline constexpr std::size_t kMaxTopicBytes = 128;
inline constexpr std::size_t kMaxDocKeyBytes = 512;
inline constexpr std::size_t kMaxScopeBytes = 128;

// What a write does to its doc. Named as on the wire and in SQL ("upsert",
// "delete"); `delete_` only because `delete` is a C++ keyword.
enum class Op { upsert, delete_ };

// "upsert" / "delete".
const char* to_string(Op op) noexcept;
// Parses "upsert" / "delete"; nullopt for anything else.
std::optional<Op> parse_op(std::string_view text) noexcept;

// The new state of one read-model doc.
struct DocWrite {
  // Registered topic.
  std::string topic;
  // Key starting with the topic's doc-key prefix.
  std::string doc_key;
  // Tenant key such as "org:42"; may be empty.
  std::string scope;
  // upsert stores payload; delete_ turns the doc into a tombstone.
  Op op = Op::upsert;
  // A JSON object, as text. Required for upserts, ignored for removes.
  std::string payload;
  // The runtime event this state reflects (optional). A write whose
  // source_seq is at or below the doc's stored one, for the same
  // source_stream, is a duplicate.
  std::string source_stream;
  std::optional<std::int64_t> source_seq;
  // Compare-and-set: apply only if the doc's version equals this (0: the doc
  // must not exist).
  std::optional<std::int64_t> expected_version;
};

// Where a projector stands; stored in the batch's transaction.
struct ProducerCheckpoint {
  std::string producer_id;
  // Fencing epoch: a batch with a lower epoch than the stored one is refused.
  std::int64_t epoch = 0;
  // Position in the runtime log after this batch.
  std::int64_t position = 0;
};

// Ordered writes applied in one transaction.
struct Batch {
  std::vector<DocWrite> writes;
  std::optional<ProducerCheckpoint> checkpoint;
};

enum class Outcome { applied, unchanged, duplicate, conflict, rejected };

enum class RejectReason {
  none,
  topic_not_registered,
  key_prefix_mismatch,
  invalid_topic,
  invalid_key,
  invalid_scope,
  payload_not_object,
  payload_too_large,
  invalid_write,
  // The input line or frame that carried the write could not be decoded.
  malformed,
};

struct WriteResult {
  Outcome outcome = Outcome::rejected;
  // Set when outcome is rejected.
  RejectReason reason = RejectReason::none;
  // Human-readable detail for rejections and conflicts; empty otherwise.
  std::string detail;
  // applied: the new version; otherwise the doc's current version (0 when it
  // does not exist).
  std::int64_t doc_version = 0;
  // applied: the event's watermark; otherwise 0.
  std::int64_t watermark = 0;
};

// Stable lowercase names ("applied", "payload_too_large"), used by the NDJSON
// results and the CLI summaries; "unknown" for a value out of range.
const char* to_string(Outcome outcome) noexcept;
const char* to_string(RejectReason reason) noexcept;

// Whether `text` may be stored as a topic, doc key, scope or stream name:
// valid UTF-8 without NUL. The sink rejects anything else, and a reader that
// takes such names from a client (oasync serve) refuses them before any
// query.
bool storable_text(std::string_view text) noexcept;

}  // namespace oasync
