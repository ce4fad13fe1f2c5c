// Internal: the sink's decisions as pure functions over values, with no
// database. Sink::Impl (sink.cpp) validates, locks the docs, calls resolve(),
// locks the topics, calls number_events() and writes what they returned;
// reproject asks unchanged() the same question the sink does. The unit tests
// (tests/unit/write_rules_test.cpp) pin every rule here, table by table.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "oasync/batch.hpp"
#include "oasync/topics.hpp"

namespace oasync::internal {

// What the sink needs of a registered topic. config_revision tells whether a
// cached copy is current: the sink compares it under the topic's row lock.
struct TopicInfo {
  std::string prefix;
  PayloadMode mode = PayloadMode::inline_payload;
  std::int64_t max_payload_bytes = 0;
  std::int64_t config_revision = 0;
};

// Registered topics by name.
using Registry = std::map<std::string, TopicInfo, std::less<>>;

// A write that passed validation, with its canonical payload.
struct ValidWrite {
  const DocWrite* write = nullptr;
  std::string canonical;  // empty for deletes
  std::string hash;       // SHA-256 of canonical (32 bytes); empty for deletes
};

// Checks one write: sizes, NUL bytes, UTF-8, numbers (no registry needed),
// then topic, key prefix, payload shape and size against `registry`. Returns
// the valid write, or its rejection (outcome rejected, reason, detail).
std::variant<ValidWrite, WriteResult> validate_write(const DocWrite& write,
                                                     const Registry& registry);

// The producer checkpoints a group of batches stores: one per producer, the
// last one wins. Throws oasync::Error (invalid_argument) for a checkpoint
// without a producer id or with a negative number, and (fenced) when a batch
// carries a lower epoch than an earlier batch of the same producer.
std::map<std::string, ProducerCheckpoint> collect_checkpoints(
    const std::vector<const Batch*>& batches);

using DocKey = std::pair<std::string, std::string>;  // (topic, doc_key)

// A doc's state: as locked in the database, then as a batch changes it.
// Version 0 means the doc does not exist (its row, if any, only holds a
// source position: see Resolution::positions).
struct DocState {
  std::string scope;
  std::int64_t version = 0;
  bool deleted = false;
  std::string hash;  // SHA-256 of the payload (32 bytes); empty for tombstones, absent docs
  std::string source_stream;
  std::optional<std::int64_t> source_seq;
  // The row is a placeholder this transaction inserted for a doc that did not
  // exist; unless a write creates the doc, it is removed again.
  bool placeholder = false;

  bool live() const { return version > 0 && !deleted; }
};

// Whether a write would leave the doc as it is: an upsert whose canonical hash
// and scope equal a live doc's, or a delete of a doc that is absent or
// already a tombstone.
bool unchanged(const DocState& doc, Op op, std::string_view hash, std::string_view scope);

// An applied write's journal event.
struct PlannedEvent {
  std::string topic;
  std::string doc_key;
  std::int64_t version = 0;
  // The doc's scope after the event. A delete keeps the doc's scope: the
  // readers of that scope see the tombstone.
  std::string scope;
  // The scope the doc had before, when the event moved it (a live doc or a
  // tombstone in another scope); its readers see the doc go.
  std::optional<std::string> previous_scope;
  Op op = Op::upsert;
  std::string payload;  // canonical JSON; empty for deletes
  std::string hash;     // 32 bytes; empty for deletes
  // Index of the write (in resolve()'s input) that made it.
  std::size_t write = 0;
  // Its place among the batch's events of its topic: 1, 2, ... (set by
  // number_events()); the watermark is the topic's head before the batch
  // plus this.
  std::int64_t sequence = 0;
  // Set by place_events(); 0 before.
  std::int64_t watermark = 0;
};

// A doc the batch changed: its final state, the index of its last event, and
// what it was before (for the topic's counters of live docs and tombstones).
struct PlannedDoc {
  DocKey key;
  DocState state;
  std::size_t last_event = 0;
  bool was_live = false;
  bool was_tombstone = false;
};

// A doc whose stream position advanced without an event (an unchanged write
// that carried a source_seq): its row records the new position. A doc that
// does not exist keeps its placeholder as a version-0 tombstone holding it.
struct PlannedPosition {
  DocKey key;
  std::string source_stream;
  std::int64_t source_seq = 0;
  bool deleted = false;
};

struct Resolution {
  // One per input write, in input order. Applied results carry watermark 0
  // until number_events() runs.
  std::vector<WriteResult> results;
  // The applied writes' events, in input order.
  std::vector<PlannedEvent> events;
  // Every doc with at least one event, in (topic, doc_key) order.
  std::vector<PlannedDoc> docs;
  // Docs without an event whose source position advanced, in key order.
  std::vector<PlannedPosition> positions;
  // Placeholders that no write created and no position needs: the write
  // statement removes them again.
  std::vector<DocKey> unused_placeholders;
};

// Decides every write in input order against the locked doc states, each
// write seeing the effect of the ones before it (several writes to one doc in
// one batch are applied one after another):
//   duplicate  the write has a source_seq, the doc has one from the same
//              source_stream, and the write's is not higher;
//   conflict   expected_version is set and differs from the doc's version
//              (0: the doc must not exist);
//   unchanged  see unchanged(); a source_seq it carries still becomes the
//              doc's position, so an older write of that stream that comes
//              later is a duplicate;
//   applied    the doc's version rises by 1, its tombstone flag, hash, scope
//              (an upsert's; a delete keeps the doc's) and (when the write
//              has a source_seq) source position become the write's, and one
//              event is planned.
// The checks run in that order. REQUIRES: `locked` holds a state for the
// (topic, doc_key) of every write (version 0 for docs that do not exist).
Resolution resolve(std::map<DocKey, DocState> locked, std::vector<ValidWrite> writes);

// What the batch does to a topic: how many events it appends, and how its
// counts of live docs and tombstones change.
struct TopicChange {
  std::int64_t events = 0;
  std::int64_t live_docs = 0;
  std::int64_t tombstones = 0;
};

// Numbers each topic's events 1, 2, ... in event order (PlannedEvent::
// sequence) and returns, per topic with events, what the batch changes.
std::map<std::string, TopicChange> number_events(Resolution& resolution);

// Hands out watermarks once the heads are known: each event gets its topic's
// head before the batch (`bases`) plus its sequence, and its applied result
// the same watermark. REQUIRES: number_events() ran, and `bases` holds every
// topic with events.
void place_events(Resolution& resolution, const std::map<std::string, std::int64_t>& bases);

}  // namespace oasync::internal
