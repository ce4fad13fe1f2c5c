// Building doc writes in tests without noise.
#pragma once

#include <optional>
#include <string>

#include "oasync/batch.hpp"

namespace oasync::test {

inline constexpr const char* kRuns = "runtime.run_summaries";
inline constexpr const char* kWorkerEvents = "runtime.codex_worker_events";  // pointer mode

inline DocWrite upsert(const std::string& id, const std::string& payload,
                       std::optional<std::int64_t> seq = std::nullopt,
                       const std::string& topic = kRuns,
                       const std::string& prefix = "run_summary:") {
  DocWrite w;
  w.topic = topic;
  w.doc_key = prefix + id;
  w.payload = payload;
  if (seq) {
    w.source_stream = "run:" + id;
    w.source_seq = seq;
  }
  return w;
}

inline DocWrite remove_doc(const std::string& id, const std::string& topic = kRuns,
                           const std::string& prefix = "run_summary:") {
  DocWrite w;
  w.topic = topic;
  w.doc_key = prefix + id;
  w.op = Op::delete_;
  return w;
}

inline Batch batch_of(std::initializer_list<DocWrite> writes) {
  Batch b;
  b.writes = writes;
  return b;
}

}  // namespace oasync::test
