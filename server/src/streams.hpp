// A topic's stream as a reader's view sees it: what the next response from
// an offset carries, from the hub's buffer when it can, else from the
// database (the reader's own scopes only: a tenant's catch-up costs in
// proportion to its events).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "db_pool.hpp"
#include "hub.hpp"
#include "metrics.hpp"
#include "oasync/serve/serve.hpp"
#include "offset.hpp"
#include "view.hpp"

namespace oasync::serve {

// What one response (or one SSE data event) carries.
struct Chunk {
  // A buffered event's message is shared with the other readers of its form
  // (SharedEvent); the rest are the reader's own.
  std::vector<Message> messages;
  // Stream-Next-Offset: where the reader stands after these messages.
  std::string next;
  // Whether `next` is the head (Stream-Up-To-Date).
  bool up_to_date = false;
  // Set when the offset cannot resume (then there are no messages).
  std::optional<ResumeCheck> stale;
  // The journal offset `next` is, when it is one (for waiting on the hub),
  // and the epoch it belongs to (its UUID).
  std::optional<Offset> journal;
  std::string epoch;
};

class Streams {
 public:
  Streams(Hub& hub, DbPool& pool, Metrics& metrics, const LimitsConfig& limits);

  // The next chunk from `offset`: "-1" (a snapshot, then the journal after
  // its head), "now" (the head), or an offset this server issued. Throws
  // oasync::Error: invalid_argument for any other offset, not_found for an
  // unregistered topic.
  boost::asio::awaitable<Chunk> read(const std::string& topic, const View& view,
                                     const std::string& offset);

  // The answer to `stale`, the check of `offset`, in reset mode: the view's
  // reset message (reset_message, quoting `offset_epoch` as the cursor's
  // epoch, or the topic's when the offset is of its epoch and it is ""),
  // then the first page of a fresh snapshot.
  boost::asio::awaitable<Chunk> reset(const std::string& topic, const View& view,
                                      const std::string& offset, const ResumeCheck& stale,
                                      const std::string& offset_epoch);

  // Where a position comes from: the hub's last look when it has one, or
  // the database now (the hub hears of no epoch reset until its next poll).
  enum class Source { hub_first, database };
  // The topic's position; nullopt when the topic is not registered. With
  // Source::hub_first, callers that find the hub without one share one
  // database read (a burst of joins of a topic the hub has not looked at yet
  // costs one read, not one each).
  boost::asio::awaitable<std::optional<TopicPosition>> position(const std::string& topic,
                                                                Source source = Source::hub_first);

 private:
  boost::asio::awaitable<Chunk> snapshot(const std::string& topic, const View& view,
                                         const Offset& from, bool first);
  boost::asio::awaitable<Chunk> journal(const std::string& topic, const View& view,
                                        const Offset& from);
  void finish(Chunk& chunk, const TopicPosition& position, std::int64_t epoch_counter,
              std::int64_t through);
  // How many rows a database read of `topic` asks for, at most `limit`: about
  // twice a page at the bytes per row its last reads had, so that the
  // database does not read thousands of large rows for a page of a few (the
  // byte bound cuts the page; this bounds the work behind it).
  std::int64_t rows_for(const std::string& topic, std::int64_t limit) const;
  void note_rows(const std::string& topic, std::int64_t bytes, std::size_t rows);

  Hub& hub_;
  DbPool& pool_;
  Metrics& metrics_;
  LimitsConfig limits_;
  // Bytes per row of each topic's latest database read (I/O thread only).
  std::unordered_map<std::string, std::int64_t> row_bytes_;
  // A position read of a topic in flight, which later callers wait for (I/O
  // thread only).
  struct PositionRead;
  std::unordered_map<std::string, std::shared_ptr<PositionRead>> position_reads_;
};

}  // namespace oasync::serve
