// oasync::verify: an fsck for the journal. It reads each topic in one
// consistent snapshot, in pages (bounded memory on a topic of any size), and
// reports every place where the journal or the docs break a promise:
//
//   watermarks   the retained events are exactly purged_through+1 .. head:
//                no gap, no event at or below the floor, none above the head;
//   versions     per doc, the retained events' versions rise by exactly 1
//                ((doc_key, doc_version) unique), and start at 1 while nothing
//                was purged;
//   docs         each doc row agrees with its latest retained event: version,
//                watermark, tombstone flag, hash (and payload, when the event
//                carries one); every retained event has its doc row;
//   exits        each retained event that moved a doc out of a scope has its
//                scope_exits row, and each exit row its event;
//   counters     the topic's live_docs and tombstones counters (what
//                `oasync inspect` prints) match the doc rows;
//   hashes       every stored payload is canonical JSON and payload_hash is its
//                SHA-256 (all of them, or a random sample);
//   prefixes     docs and events carry their topic's doc-key prefix;
//   topics       no doc or event belongs to an unregistered topic.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <pqxx/connection_base>

namespace oasync {

struct VerifyOptions {
  // Topics to check; empty means all registered topics, plus the
  // unregistered-topic check.
  std::vector<std::string> topics;
  // Recompute the hashes of this many random docs and events per topic
  // instead of all of them.
  std::optional<std::int64_t> sample;
  // Check only events after this watermark (and docs changed after it).
  std::int64_t since = 0;
  // Rows read per query.
  int page_size = 10000;
};

// One broken promise, with its place.
struct Problem {
  std::string topic;
  // One of: watermarks, versions, docs, exits, counters, hashes, prefixes,
  // topics.
  std::string check;
  // Where: "watermark 17", "doc_key \"run_summary:a\"".
  std::string where;
  std::string expected;
  std::string found;
};

struct CheckCount {
  // Items looked at (events, docs, hashes).
  std::int64_t checked = 0;
  std::int64_t problems = 0;
};

struct VerifyReport {
  std::int64_t topics = 0;
  // Counts per check name, in a stable order.
  std::map<std::string, CheckCount> checks;
  double seconds = 0;
  bool clean() const;
};

// Runs every check, calling on_problem for each problem as it is found.
// Throws oasync::Error when it cannot read (then nothing is concluded).
VerifyReport verify(pqxx::connection_base& conn, const VerifyOptions& options,
                    const std::function<void(const Problem&)>& on_problem);

}  // namespace oasync
