// One delivery follower of the torture run (delivery.hpp), and the check of
// what it recorded against the journal: every response or batch, its
// versions, scopes and stale answers, and its final state.
#pragma once

#include <functional>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "delivery.hpp"
#include "recorder.hpp"

namespace oasync::test::delivery {

struct FollowerSpec {
  std::string name;
  int topic = 0;
  int org = 0;
  std::string live;      // long-poll, sse, or channel (a sync:v1 channel)
  std::string on_stale;  // reset or report (Durable Streams)
  bool proxied = false;
  std::string socket;    // a channel's socket, shared by its tenant's topics
  std::string encoding;  // a channel socket's: protobuf or json
  std::string out, session_file;
  bool channel() const { return live == "channel"; }
};

// What check_follower needs: the follower, its topic's journal (the final
// one with what the recorder read before purges), whether the topic is in
// pointer mode, the recorder (its gaps and epochs), the counts to add to,
// the tenant's `oasync snapshot --scope` docs by key, and where to report.
struct FollowerCheck {
  const FollowerSpec& follower;
  const TopicJournal& journal;
  bool pointer = false;
  JournalRecorder& recorder;
  Counts& counts;
  std::function<const std::map<std::string, nlohmann::json>&()> snapshot;
  std::function<void(const std::string&, Finding)> problem;
};

// Reads the follower's NDJSON file (tests/e2e/torture-follower.mjs) and
// reports each problem the header of delivery.hpp lists.
void check_follower(const FollowerCheck& c);

}  // namespace oasync::test::delivery
