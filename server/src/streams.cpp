#include "streams.hpp"

#include <algorithm>
#include <chrono>
#include <exception>

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <fmt/format.h>

#include "oasync/error.hpp"

namespace oasync::serve {

using boost::asio::awaitable;

Streams::Streams(Hub& hub, DbPool& pool, Metrics& metrics, const LimitsConfig& limits)
    : hub_(hub), pool_(pool), metrics_(metrics), limits_(limits) {}

struct Streams::PositionRead {
  explicit PositionRead(const boost::asio::any_io_executor& ex)
      : done(ex, std::chrono::steady_clock::time_point::max()) {}
  boost::asio::steady_timer done;  // cancelled when the read ends
  std::optional<TopicPosition> position;
  std::exception_ptr error;
};

awaitable<std::optional<TopicPosition>> Streams::position(const std::string& topic, Source source) {
  hub_.follow(topic);
  const bool shared = source == Source::hub_first;
  if (shared) {
    if (auto p = hub_.position(topic)) co_return p;
    if (const auto it = position_reads_.find(topic); it != position_reads_.end()) {
      const std::shared_ptr<PositionRead> read = it->second;
      boost::system::error_code ec;
      co_await read->done.async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, ec));
      if (read->error) std::rethrow_exception(read->error);
      co_return read->position;
    }
  }
  const auto read = std::make_shared<PositionRead>(co_await boost::asio::this_coro::executor);
  if (shared) position_reads_[topic] = read;
  ++metrics_.request_queries;
  const std::uint64_t looks = hub_.looks(topic);
  try {
    std::function<ResumeCheck(Reader&)> job = [topic](Reader& r) { return r.check(topic, "", 0); };
    const ResumeCheck check = co_await pool_.run(std::move(job));
    if (check.reason != StaleReason::unknown_topic) {
      read->position = check.position;
      // The hub's first look, if it has not looked yet: the next readers at
      // this head need no database read of their own.
      hub_.seed(topic, check.position, looks);
    }
  } catch (...) {
    read->error = std::current_exception();
  }
  if (const auto it = position_reads_.find(topic);
      it != position_reads_.end() && it->second == read)
    position_reads_.erase(it);
  read->done.cancel();
  if (read->error) std::rethrow_exception(read->error);
  co_return read->position;
}

// `position`: the topic's, as of the read, in epoch `epoch_counter`.
void Streams::finish(Chunk& chunk, const TopicPosition& position, std::int64_t epoch_counter,
                     std::int64_t through) {
  Offset next;
  next.epoch_counter = epoch_counter;
  next.watermark = through;
  chunk.next = encode(next);
  chunk.journal = next;
  chunk.epoch = position.epoch;
  chunk.up_to_date = through >= position.head;
}

std::int64_t Streams::rows_for(const std::string& topic, std::int64_t limit) const {
  const auto it = row_bytes_.find(topic);
  if (it == row_bytes_.end() || it->second <= 0) return limit;
  return std::clamp<std::int64_t>(2 * limits_.page_bytes / it->second + 1, 16, limit);
}

void Streams::note_rows(const std::string& topic, std::int64_t bytes, std::size_t rows) {
  if (rows > 0)
    row_bytes_[topic] = std::max<std::int64_t>(1, bytes / static_cast<std::int64_t>(rows));
}

awaitable<Chunk> Streams::read(const std::string& topic, const View& view,
                               const std::string& offset) {
  hub_.follow(topic);
  // (Named, not temporary: GCC 12 destroys temporaries of a co_await
  // expression too early.)
  const Offset start;
  if (offset == "-1") co_return co_await snapshot(topic, view, start, true);
  if (offset == "now") {
    const auto p = co_await position(topic);
    if (!p) throw Error(Code::not_found, fmt::format("topic \"{}\" is not registered", topic));
    Chunk chunk;
    finish(chunk, *p, p->epoch_counter, p->head);
    co_return chunk;
  }
  const auto o = decode(offset);
  if (!o ||
      (o->kind == Offset::Kind::snapshot && o->part >= static_cast<int>(view.parts().size()))) {
    throw Error(Code::invalid_argument,
                fmt::format("offset \"{}\" was not issued by this server (use -1 or now)",
                            offset.substr(0, 120)));
  }
  if (o->kind == Offset::Kind::snapshot) co_return co_await snapshot(topic, view, *o, false);
  co_return co_await journal(topic, view, *o);
}

awaitable<Chunk> Streams::reset(const std::string& topic, const View& view,
                                const std::string& offset, const ResumeCheck& stale,
                                const std::string& offset_epoch) {
  const Offset start;
  Chunk chunk = co_await snapshot(topic, view, start, true);
  const auto o = decode(offset);
  const bool same_epoch = o && o->epoch_counter == stale.position.epoch_counter;
  chunk.messages.insert(chunk.messages.begin(),
                        shared(reset_message(view, stale,
                                             !offset_epoch.empty() ? offset_epoch
                                             : same_epoch          ? stale.position.epoch
                                                                   : std::string(),
                                             o ? o->watermark : 0)));
  co_return chunk;
}

awaitable<Chunk> Streams::snapshot(const std::string& topic, const View& view, const Offset& from,
                                   bool first) {
  const std::vector<std::string> parts = view.parts();
  const std::string scope = parts[static_cast<std::size_t>(from.part)];
  const auto size = static_cast<int>(rows_for(topic, limits_.snapshot_page_docs));
  ++metrics_.request_queries;
  std::function<Reader::SnapshotPage(Reader&)> job = [topic, scope, after = from.after_key, size,
                                                      bytes = limits_.page_bytes](Reader& r) {
    return r.snapshot_page(topic, scope, after, size, bytes);
  };
  const Reader::SnapshotPage page = co_await pool_.run(std::move(job));
  if (page.position.epoch.empty()) {
    throw Error(Code::not_found, fmt::format("topic \"{}\" is not registered", topic));
  }
  std::int64_t page_bytes = 0;
  for (const Doc& d : page.docs) {
    page_bytes += 64 + static_cast<std::int64_t>(d.payload.size() + d.doc_key.size());
  }
  note_rows(topic, page_bytes, page.docs.size());
  Chunk chunk;
  const std::int64_t epoch = first ? page.position.epoch_counter : from.epoch_counter;
  const std::int64_t head = first ? page.position.head : from.watermark;
  if (page.position.epoch_counter != epoch || page.position.purged_through > head) {
    // The snapshot's epoch is gone, or the journal after its head was
    // purged: it cannot hand over any more.
    ResumeCheck stale;
    stale.reason = page.position.epoch_counter != epoch ? StaleReason::epoch_changed
                                                        : StaleReason::retention_floor_breach;
    stale.position = page.position;
    chunk.stale = stale;
    co_return chunk;
  }
  // The snapshot's position: its epoch, and the head it hands over at.
  TopicPosition at = page.position;
  at.head = head;
  if (first) chunk.messages.push_back(shared(control_message(Control::snapshot_start, view, at)));
  for (const Doc& d : page.docs) {
    // Later pages skip what changed after the head: the journal brings it.
    if (d.deleted || d.last_watermark > head) continue;
    chunk.messages.push_back(shared(snapshot_message(d, view)));
  }
  Offset next;
  next.kind = Offset::Kind::snapshot;
  next.epoch_counter = epoch;
  next.watermark = head;
  next.page = from.page + 1;
  if (page.cut || static_cast<int>(page.docs.size()) >= size) {
    next.part = from.part;
    next.after_key = page.docs.back().doc_key;
  } else if (static_cast<std::size_t>(from.part) + 1 < parts.size()) {
    next.part = from.part + 1;
  } else {
    chunk.messages.push_back(shared(control_message(Control::snapshot_end, view, at)));
    finish(chunk, page.position, epoch, head);
    co_return chunk;
  }
  chunk.next = encode(next);
  co_return chunk;
}

awaitable<Chunk> Streams::journal(const std::string& topic, const View& view, const Offset& from) {
  Chunk chunk;
  const auto known = hub_.position(topic);
  // The buffer serves what is live; a cursor below the floor goes to the
  // database, which says it is stale (the hub hears of a purge at once: purge
  // notifies).
  if (known && known->epoch_counter == from.epoch_counter && from.watermark <= known->head &&
      from.watermark >= known->purged_through) {
    if (const auto b = hub_.buffered(topic, from.epoch_counter, from.watermark, limits_.page_events,
                                     view.parts())) {
      // At most page_bytes (one larger event alone): the page then ends at
      // the last event taken.
      std::int64_t through = b->through, bytes = 0;
      for (const auto& e : b->events) {
        if (bytes >= limits_.page_bytes) {
          through = e->watermark - 1;
          break;
        }
        if (auto m = e->message(view)) {
          bytes += static_cast<std::int64_t>((*m)->size());
          chunk.messages.push_back(std::move(*m));
        }
      }
      finish(chunk, b->position, from.epoch_counter, through);
      co_return chunk;
    }
  }
  // Behind the buffer (or not buffered yet): read the view's scopes.
  std::optional<std::string> epoch;
  if (known && known->epoch_counter == from.epoch_counter) {
    epoch = known->epoch;
  } else {
    ++metrics_.request_queries;
    std::function<std::optional<std::string>(Reader&)> job =
        [topic, counter = from.epoch_counter](Reader& r) { return r.epoch_for(topic, counter); };
    epoch = co_await pool_.run(std::move(job));
  }
  const std::vector<std::string> parts = view.parts();
  metrics_.request_queries += static_cast<std::int64_t>(parts.size());
  std::function<std::vector<Page>(Reader&)> job =
      [topic, parts, after = from.watermark, max = rows_for(topic, limits_.page_events),
       bytes = limits_.page_bytes,
       // Another epoch's number: a text that is no UUID reads as epoch_changed.
       e = epoch.value_or("epoch " + std::to_string(from.epoch_counter))](Reader& r) {
        std::vector<Page> out;
        for (const std::string& scope : parts) {
          ReadRequest request;
          request.topic = topic;
          request.epoch = e;
          request.after = after;
          request.scope = scope;
          request.max_events = max;
          request.max_bytes = bytes;
          request.detail = Detail::routing;
          out.push_back(r.read(request));
          if (out.back().stale) break;
        }
        return out;
      };
  const std::vector<Page> pages = co_await pool_.run(std::move(job));
  for (const Page& p : pages) {
    if (p.stale) {
      if (p.stale->reason == StaleReason::unknown_topic) {
        throw Error(Code::not_found, fmt::format("topic \"{}\" is not registered", topic));
      }
      chunk.stale = p.stale;
      co_return chunk;
    }
  }
  std::int64_t read_bytes = 0;
  std::size_t read_rows = 0;
  for (const Page& p : pages) {
    for (const Event& e : p.events) read_bytes += footprint(e);
    read_rows += p.events.size();
  }
  note_rows(topic, read_bytes, read_rows);
  // Merge the parts up to where all of them are complete.
  std::int64_t through = pages.front().through;
  for (const Page& p : pages) through = std::min(through, p.through);
  std::vector<const Event*> events;
  for (const Page& p : pages) {
    for (const Event& e : p.events) {
      if (e.watermark <= through) events.push_back(&e);
    }
  }
  std::stable_sort(events.begin(), events.end(),
                   [](const Event* a, const Event* b) { return a->watermark < b->watermark; });
  for (std::size_t i = 0; i < events.size(); ++i) {
    // A move between the view's own scopes shows in both: the exit of one
    // and the upsert into the other. Only the upsert counts.
    if (i + 1 < events.size() && events[i]->watermark == events[i + 1]->watermark) {
      const Event* keep = events[i]->op == Op::upsert ? events[i] : events[i + 1];
      if (auto m = message_for(*keep, view)) chunk.messages.push_back(shared(std::move(*m)));
      ++i;
      continue;
    }
    if (auto m = message_for(*events[i], view)) chunk.messages.push_back(shared(std::move(*m)));
  }
  const TopicPosition& now = pages.front().position;
  finish(chunk, now, now.epoch_counter, through);
  co_return chunk;
}

}  // namespace oasync::serve
