// Reprojection by diff: the runtime's projector, replaying the authority log,
// emits the complete desired doc set of a topic; a Reprojection compares it
// with the stored docs by canonical hash and applies only the differences
// through the sink's own write path:
//   - new or changed docs get new versions and events;
//   - docs missing from the input become tombstones (in finish());
//   - unchanged docs are untouched: no version, no event, no row write.
// Clients keep their cursors and receive only real changes. Input streams in
// batches: memory is bounded by the batch size, whatever the number of docs
// (the keys seen so far live in a temporary table on the server).
//
// Beside a live projector: the desired set reflects the authority log up to
// some point, so a doc changed after that point is newer than the input. The
// reprojection takes the topic's head when it starts (or the watermark given
// as ReprojectOptions::as_of) and leaves alone every doc whose last change is
// above it, including docs created after it (counted as skipped). Each change
// and delete it makes carries the version it compared against as
// expected_version, so a write that lands between comparing and applying
// makes it a conflict, which is counted as skipped too, never overwritten.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <pqxx/connection>

#include "oasync/batch.hpp"
#include "oasync/options.hpp"

namespace oasync {

struct ReprojectOptions {
  DryRun dry_run = DryRun::no;
  // Docs compared and written per transaction; bounds memory.
  std::int64_t batch_size = 1000;
  // The watermark the desired set corresponds to: docs changed after it are
  // left alone. nullopt: the topic's head when the reprojection starts.
  std::optional<std::int64_t> as_of;
};

struct ReprojectCounts {
  std::int64_t unchanged = 0;
  std::int64_t changed = 0;
  std::int64_t created = 0;  // new docs, and tombstones brought back
  std::int64_t deleted = 0;  // live docs missing from the input, now tombstones
  // Docs changed after as_of, before or while the reprojection ran: left as
  // the live projector wrote them.
  std::int64_t skipped = 0;
};

class Reprojection {
 public:
  // Opens its own connection and takes the starting point (as_of). Throws
  // oasync::Error (not_found) for an unregistered topic.
  Reprojection(const std::string& conninfo, std::string topic, ReprojectOptions options = {});
  ~Reprojection();
  Reprojection(const Reprojection&) = delete;
  Reprojection& operator=(const Reprojection&) = delete;

  // The watermark the reprojection compares against (see ReprojectOptions).
  std::int64_t as_of() const;

  // Adds one desired doc (an upsert of `topic`; an empty topic means it).
  // `where` names the input position for errors ("line 17"). Throws
  // oasync::Error for another topic, a delete, an invalid payload, or a
  // doc_key given twice; nothing is deleted after such an error.
  void add(DocWrite write, const std::string& where);

  // Applies what is buffered, then turns every live doc that the input did
  // not list into a tombstone. Returns the counts. `progress(phase, count)`
  // is called after each batch.
  ReprojectCounts finish(const std::function<void(const char*, std::int64_t)>& progress = {});

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace oasync
