// oasync::Reader: the journal as clients see it, through the SQL functions a
// delivery service calls too (resume_check, topic_position and snapshot_docs
// of migrations/0002_read_functions.sql, read_events of
// 0004_streaming_read_events.sql, get_doc of 0005_get_doc.sql), so that every
// reader applies the same resume rule.
//
// The resume rule: a cursor (epoch, W) may resume iff the epoch matches and
// purged_through <= W <= head. Otherwise the client must resync (snapshot).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <pqxx/connection_base>

#include "oasync/batch.hpp"

namespace oasync {

namespace internal::pg {
class Pipeline;
}

// Where a topic stands.
struct TopicPosition {
  std::string topic;
  std::string epoch;
  std::int64_t head = 0;
  std::int64_t purged_through = 0;
  // Grows with every new epoch, across topics (migrations/0009_serve.sql):
  // what served offsets start with.
  std::int64_t epoch_counter = 0;
};

// Why a cursor cannot resume (StaleReason::none when it can).
enum class StaleReason { none, retention_floor_breach, cursor_ahead, epoch_changed, unknown_topic };

// "retention_floor_breach", ...; "" for none.
const char* to_string(StaleReason reason) noexcept;

struct ResumeCheck {
  StaleReason reason = StaleReason::none;
  TopicPosition position;
  bool resumable() const { return reason == StaleReason::none; }
};

// One journal event.
struct Event {
  std::string topic;
  std::string epoch;
  std::int64_t watermark = 0;
  std::string doc_key;
  std::int64_t doc_version = 0;
  std::string scope;
  Op op = Op::upsert;
  // Canonical JSON; empty for deletes. For pointer topics, the doc's current
  // payload (payload_fetched is then true).
  std::string payload;
  bool payload_fetched = false;
  // SHA-256 of the payload as written by the event (32 raw bytes); empty for
  // deletes.
  std::string payload_hash;
  // Detail::routing only: the scope this event moved the doc out of, ""
  // included (a move out of the unscoped docs); nullopt when it moved
  // nothing.
  std::optional<std::string> previous_scope;
};

// A read-model doc as stored.
struct Doc {
  std::string topic;
  std::string doc_key;
  std::string scope;
  std::int64_t doc_version = 0;
  bool deleted = false;
  std::string payload;       // canonical JSON; empty for tombstones
  std::string payload_hash;  // 32 raw bytes; empty for tombstones
  std::int64_t last_watermark = 0;
};

// What a read returns of each event.
enum class Detail {
  // The rows of oasync.read_events, as the SQL contract defines them.
  contract,
  // Also each event's previous_scope, and a fetched payload (pointer topics)
  // only while the doc is still in the event's scope: every scope's view at
  // once, for a server that routes one read's events to many tenants. Costs
  // a primary-key lookup per event.
  routing,
};

// What Reader::read reads: the first max_events events of `topic` with
// after < watermark <= through (of `scope`'s view, when set).
struct ReadRequest {
  std::string topic;
  // The cursor's epoch; empty skips the epoch comparison.
  std::string epoch;
  // The cursor: the last watermark the reader has.
  std::int64_t after = 0;
  // The highest watermark to read; nullopt: the head, as of the read. Above
  // the head the read is refused (Code::invalid_argument), since moving a
  // cursor there would skip the events written there later.
  std::optional<std::int64_t> through;
  // Only this scope's view, when set: its events, and the moves of docs out
  // of it as deletes (see oasync.read_events, migrations/0006_contract.sql).
  std::optional<std::string> scope;
  // The most events one page holds.
  std::int64_t max_events = 5000;
  // When set, a page also ends once its events hold this many bytes (their
  // payload text, and 64 bytes each for the rest); the first event always
  // comes, whatever its size. What bounds a reader's memory per page.
  std::optional<std::int64_t> max_bytes = std::nullopt;
  Detail detail = Detail::contract;
};

// A page of events, or the reason the cursor went stale while reading.
struct Page {
  std::vector<Event> events;
  // The cursor after this page: the last event's watermark when the page is
  // full, else the end of the range read (through, or the head as of the
  // read). A scope's cursor moves past the other scopes' events too.
  std::int64_t through = 0;
  // The topic as of the read; its epoch is the current one (a cursor of an
  // epoch that a timeline fork replaced continues in it).
  TopicPosition position;
  // Set when the cursor could not resume (then the page is empty).
  std::optional<ResumeCheck> stale;
  // Whether max_bytes ended the page before max_events did.
  bool cut = false;
};

class Reader {
 public:
  // Uses the caller's connection, which must outlive the Reader. Sets the
  // connection's planner settings for the session (enable_seqscan and
  // enable_bitmapscan off, jit off): the reads then walk the indexes in
  // order, whatever the statistics say (tests/integration/plans_test.cpp).
  explicit Reader(pqxx::connection_base& connection);

  ~Reader();
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  // Applies the resume rule to (epoch, watermark); an empty epoch skips the
  // epoch comparison, and text that is not a UUID is another epoch
  // (epoch_changed). A cursor of an epoch that a timeline fork replaced
  // resumes at or below the fork; position.epoch is then the new epoch.
  ResumeCheck check(const std::string& topic, const std::string& epoch, std::int64_t watermark);

  // Reads one page (see ReadRequest) in one statement, one round trip: the
  // resume rule, the topic's position and the rows come from one snapshot.
  Page read(const ReadRequest& request);

  // Reads consecutive pages from request.after until one is not full (the
  // head, as of its read, or request.through) and hands each to `on_page`,
  // while the next one is already being read: the database reads page k+1
  // while the caller writes page k out. `on_page` returns false to stop, and
  // must not use the connection. Returns the last page's position and cursor
  // (`through`), without its events; or, with `stale` set, the reason a page
  // could not be read (request.after is then the stale cursor).
  Page read_pages(const ReadRequest& request, const std::function<bool(Page&)>& on_page);

  struct SnapshotHeader {
    TopicPosition position;
    std::optional<std::int64_t> since;
  };
  // A consistent snapshot of a topic in one REPEATABLE READ transaction,
  // delivered in pages of page_size docs (bounded memory): first the header
  // (epoch and head to tail from), then every live doc, or with `since`
  // every doc changed after it, tombstones included. Returns the reason when
  // the topic is unknown or `since` is below the delta-resync floor.
  StaleReason snapshot(const std::string& topic, const std::optional<std::string>& scope,
                       std::optional<std::int64_t> since, int page_size,
                       const std::function<void(const SnapshotHeader&)>& on_header,
                       const std::function<void(const Doc&)>& on_doc);

  // Every registered topic's position, in name order: one statement.
  std::vector<TopicPosition> positions();

  // The epoch (UUID) that `epoch_counter` numbers in `topic`: the current
  // one, or one that a timeline fork replaced (whose cursors may still
  // resume at or below the fork); nullopt for any other number.
  std::optional<std::string> epoch_for(const std::string& topic, std::int64_t epoch_counter);

  // One page of a topic's live docs in key order after `after_key` ("" for
  // the first), of `scope` when set, with the topic's position, from one
  // snapshot: stateless paging, as a server does it. Docs changed after the
  // first page's head may show in later pages; a caller that goes on from
  // that head skips them (last_watermark above it). position.epoch is empty
  // when the topic is not registered.
  // With `max_bytes`, a page also ends once its docs hold that many bytes
  // (as ReadRequest::max_bytes counts them; the first doc always comes), and
  // `cut` says so: the next page starts after its last key.
  struct SnapshotPage {
    TopicPosition position;
    std::vector<Doc> docs;
    bool cut = false;
  };
  SnapshotPage snapshot_page(const std::string& topic, const std::optional<std::string>& scope,
                             const std::string& after_key, int page_size,
                             std::optional<std::int64_t> max_bytes = std::nullopt);

  // The docs with this key, tombstones included, in topic order: one per
  // topic that has it (only `topic`'s when given), so at most one when
  // `topic` is set. Empty when there is none. Each with its topic's position
  // in the same snapshot: following the topic from that head misses none of
  // the doc's later changes.
  struct FoundDoc {
    Doc doc;
    TopicPosition position;
  };
  std::vector<FoundDoc> find_doc(const std::string& doc_key,
                                 const std::optional<std::string>& topic);

 private:
  enum class ReadAhead { no, yes };
  Page read_pages(ReadRequest request, const std::function<bool(Page&)>& on_page,
                  ReadAhead read_ahead);

  pqxx::connection_base& conn_;
  // The page read's prepared statement, per session (sink/src/pg.hpp).
  std::unique_ptr<internal::pg::Pipeline> pipeline_;
};

}  // namespace oasync
