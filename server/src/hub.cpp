#include "hub.hpp"

#include <algorithm>
#include <chrono>

#include <fmt/format.h>
#include <boost/asio/post.hpp>
#include <pqxx/pqxx>

#include "oasync/connection.hpp"
#include "oasync/error.hpp"
#include "oasync/listener.hpp"
#include "oasync/sessions.hpp"

namespace oasync::serve {

using Clock = std::chrono::steady_clock;

std::int64_t footprint(const Event& event) {
  return 64 + static_cast<std::int64_t>(event.payload.size() + event.doc_key.size() +
                                        event.scope.size());
}

Hub::Hub(std::string database_url, const LimitsConfig& limits, Metrics& metrics,
         std::function<void(const std::string&)> log)
    : database_url_(std::move(database_url)),
      limits_(limits),
      metrics_(metrics),
      log_(std::move(log)) {}

Hub::~Hub() {
  stop();
}

void Hub::start() {
  thread_ = std::thread([this] { loop(); });
}

void Hub::stop() {
  stopping_ = true;
  if (thread_.joinable()) thread_.join();
}

void Hub::follow(const std::string& topic) {
  std::lock_guard lock(mutex_);
  feeds_.try_emplace(topic);
}

std::optional<TopicPosition> Hub::position(const std::string& topic) const {
  std::lock_guard lock(mutex_);
  const auto it = feeds_.find(topic);
  if (it == feeds_.end()) return std::nullopt;
  return it->second.position;
}

std::uint64_t Hub::looks(const std::string& topic) const {
  std::lock_guard lock(mutex_);
  const auto it = feeds_.find(topic);
  return it == feeds_.end() ? 0 : it->second.looks;
}

void Hub::seed(const std::string& topic, const TopicPosition& position, std::uint64_t looks_then) {
  if (!healthy_) return;
  std::lock_guard lock(mutex_);
  const auto it = feeds_.find(topic);
  if (it == feeds_.end()) return;
  Feed& f = it->second;
  if (f.position || f.looking || f.looks != looks_then) return;
  f.epoch_counter = position.epoch_counter;
  f.start_after = f.end = position.head;
  f.clear_events();
  f.position = position;
  // A subscriber that read the database before this read may be behind its
  // head, with nothing in the buffer to wake it for (as at a first look).
  wake(f);
}

std::optional<Hub::Buffered> Hub::buffered(const std::string& topic, std::int64_t epoch_counter,
                                           std::int64_t after, std::int64_t max,
                                           const std::vector<std::string>& scopes) const {
  std::lock_guard lock(mutex_);
  const auto it = feeds_.find(topic);
  if (it == feeds_.end() || !it->second.position) return std::nullopt;
  const Feed& f = it->second;
  if (f.epoch_counter != epoch_counter || after < f.start_after || after > f.end) {
    return std::nullopt;
  }
  Buffered out;
  out.position = *f.position;
  out.through = f.end;
  // Each scope's events after `after`, merged in watermark order (an event
  // under two of the scopes, a move between them, once).
  using List = std::deque<std::shared_ptr<const SharedEvent>>;
  std::vector<std::pair<List::const_iterator, List::const_iterator>> lists;
  for (const std::string& s : scopes) {
    const auto l = f.of_scope.find(s);
    if (l == f.of_scope.end()) continue;
    const auto first =
        std::upper_bound(l->second.begin(), l->second.end(), after,
                         [](std::int64_t w, const auto& e) { return w < e->watermark; });
    if (first != l->second.end()) lists.emplace_back(first, l->second.end());
  }
  for (;;) {
    std::shared_ptr<const SharedEvent> next;
    for (const auto& [at, end] : lists) {
      if (at != end && (!next || (*at)->watermark < next->watermark)) next = *at;
    }
    if (!next) break;
    if (static_cast<std::int64_t>(out.events.size()) >= max) {
      out.through = out.events.back()->watermark;
      break;
    }
    for (auto& [at, end] : lists) {
      if (at != end && (*at)->watermark == next->watermark) ++at;
    }
    out.events.push_back(std::move(next));
  }
  return out;
}

void Hub::Feed::push(std::shared_ptr<const SharedEvent> e) {
  of_scope[e->scope].push_back(e);
  if (e->previous_scope && *e->previous_scope != e->scope) {
    of_scope[*e->previous_scope].push_back(e);
  }
  bytes += footprint(*e);
  events.push_back(std::move(e));
}

void Hub::Feed::pop_front() {
  const std::shared_ptr<const SharedEvent> e = std::move(events.front());
  events.pop_front();
  bytes -= footprint(*e);
  start_after = e->watermark;
  const auto drop = [&](const std::string& scope) {
    const auto l = of_scope.find(scope);
    if (l == of_scope.end() || l->second.empty() || l->second.front() != e) return;
    l->second.pop_front();
    if (l->second.empty()) of_scope.erase(l);
  };
  drop(e->scope);
  if (e->previous_scope) drop(*e->previous_scope);
}

void Hub::Feed::clear_events() {
  events.clear();
  of_scope.clear();
  bytes = 0;
}

std::uint64_t Hub::generation(const std::string& topic) const {
  std::lock_guard lock(mutex_);
  const auto it = feeds_.find(topic);
  return it == feeds_.end() ? 0 : it->second.generation;
}

bool Hub::wait(const std::string& topic, std::uint64_t seen,
               const std::shared_ptr<Waiter>& waiter) {
  std::lock_guard lock(mutex_);
  Feed& f = feeds_[topic];
  // The last change that concerns this waiter.
  std::uint64_t last = waiter->scopes.empty() ? f.generation : f.everyone_at;
  for (const std::string& s : waiter->scopes) {
    if (const auto it = f.scope_at.find(s); it != f.scope_at.end())
      last = std::max(last, it->second);
  }
  if (last > seen) return false;
  // Waiters that timed out on a quiet topic are dropped now and then, so the
  // lists stay about as long as the number actually waiting.
  if (f.waiting >= f.compact_at) {
    const auto expired = [](const std::weak_ptr<Waiter>& w) { return w.expired(); };
    std::erase_if(f.waiters_of_all, expired);
    f.waiting = f.waiters_of_all.size();
    for (auto it = f.waiters_of.begin(); it != f.waiters_of.end();) {
      std::erase_if(it->second, expired);
      f.waiting += it->second.size();
      it = it->second.empty() ? f.waiters_of.erase(it) : std::next(it);
    }
    f.compact_at = std::max<std::size_t>(64, 2 * f.waiting);
  }
  if (waiter->scopes.empty()) {
    f.waiters_of_all.push_back(waiter);
    ++f.waiting;
  }
  for (const std::string& s : waiter->scopes) {
    f.waiters_of[s].push_back(waiter);
    ++f.waiting;
  }
  return true;
}

bool Hub::revoked(const std::string& session_id) const {
  std::lock_guard lock(mutex_);
  return revoked_.count(session_id) > 0;
}

void Hub::wake(Feed& feed, const std::set<std::string>* touched) {
  ++feed.generation;
  if (touched == nullptr) {
    feed.everyone_at = feed.generation;
  } else {
    for (const std::string& s : *touched) feed.scope_at[s] = feed.generation;
  }
  wake_waiters(feed, touched);
}

void Hub::wake_waiters(Feed& feed, const std::set<std::string>* touched) {
  // (A waiter of several scopes may be woken twice: the second does nothing.)
  const auto wake_list = [&feed](std::vector<std::weak_ptr<Waiter>>& list) {
    for (const auto& w : list) {
      if (const auto waiter = w.lock()) {
        boost::asio::post(waiter->executor, [waiter] { waiter->timer.cancel(); });
      }
    }
    feed.waiting -= std::min(feed.waiting, list.size());
    list.clear();
  };
  wake_list(feed.waiters_of_all);
  if (touched == nullptr) {
    for (auto& [scope, list] : feed.waiters_of) wake_list(list);
    feed.waiters_of.clear();
    return;
  }
  for (const std::string& s : *touched) {
    if (const auto it = feed.waiters_of.find(s); it != feed.waiters_of.end()) {
      wake_list(it->second);
      feed.waiters_of.erase(it);
    }
  }
}

void Hub::refresh(Reader& reader) {
  ++metrics_.wakes;
  std::set<std::string> followed;
  {
    std::lock_guard lock(mutex_);
    for (auto& [topic, feed] : feeds_) {
      followed.insert(topic);
      // A look begins: no seed until it has ended (see seed()).
      feed.looking = true;
      ++feed.looks;
    }
  }
  if (followed.empty()) return;
  ++metrics_.wake_queries;
  std::map<std::string, TopicPosition> now;
  for (auto& p : reader.positions()) now.emplace(p.topic, std::move(p));
  for (const std::string& topic : followed) {
    const auto found = now.find(topic);
    std::int64_t read_from = 0, epoch_counter = 0;
    bool restarted = false;  // the buffer dropped what it held
    std::shared_ptr<EncodingBudget> encodings;
    {
      std::lock_guard lock(mutex_);
      Feed& f = feeds_[topic];
      f.looking = false;
      ++f.looks;
      if (!f.encodings) f.encodings = std::make_shared<EncodingBudget>(limits_.live_buffer_bytes);
      encodings = f.encodings;
      if (found == now.end()) {
        // Not registered (any more): nothing to buffer; wake whoever waits,
        // also when this is the hub's first look (a topic removed between a
        // subscriber's read and the look): they read again, and hear so.
        if (f.position || f.has_waiters()) {
          f.position.reset();
          f.clear_events();
          wake(f);
        }
        continue;
      }
      const TopicPosition& p = found->second;
      const bool first = !f.position;
      if (first || f.epoch_counter != p.epoch_counter || p.head < f.end) {
        // A new epoch (or a first look): the buffer starts at the head.
        // Everyone wakes, a first look included: a subscriber that read the
        // database before it may be behind the head this look found, with
        // nothing left in the buffer to wake it for.
        f.epoch_counter = p.epoch_counter;
        f.start_after = f.end = p.head;
        f.clear_events();
        f.position = p;
        wake(f);
        continue;
      }
      if (p.head == f.end) {
        f.position = p;
        continue;
      }
      if (p.head - f.end > limits_.live_buffer_events) {
        // Too far behind to buffer it all: keep the newest.
        f.clear_events();
        f.start_after = f.end = p.head - limits_.live_buffer_events;
        restarted = true;
      }
      read_from = f.end;
      epoch_counter = f.epoch_counter;
    }
    // Read (read_from, head] once, for every subscriber of the topic.
    const TopicPosition& p = found->second;
    ReadRequest request;
    request.topic = topic;
    request.epoch = p.epoch;
    request.after = read_from;
    request.through = p.head;
    request.max_events = std::min<std::int64_t>(limits_.live_buffer_events, 5000);
    request.max_bytes = limits_.live_buffer_bytes;
    request.detail = Detail::routing;
    std::vector<std::shared_ptr<const SharedEvent>> fresh;
    std::int64_t fresh_bytes = 0;
    ++metrics_.wake_queries;
    // At most live_buffer_bytes per wake: the rest comes at the next one.
    const Page end = reader.read_pages(request, [&](Page& page) {
      for (Event& e : page.events) {
        fresh_bytes += footprint(e);
        fresh.push_back(std::make_shared<const SharedEvent>(std::move(e), encodings));
      }
      return fresh_bytes < limits_.live_buffer_bytes;
    });
    std::lock_guard lock(mutex_);
    Feed& f = feeds_[topic];
    if (f.epoch_counter != epoch_counter || f.end != read_from) continue;  // changed meanwhile
    // The scopes the new events concern: their subscribers alone wake,
    // unless the buffer started over (then everyone reads again).
    std::set<std::string> touched;
    bool everyone = restarted;
    if (end.stale) {
      // Purged below the buffer (or the epoch moved): start over at the head.
      f.clear_events();
      f.start_after = f.end = p.head;
      everyone = true;
    } else {
      for (const auto& e : fresh) {
        touched.insert(e->scope);
        if (e->previous_scope) touched.insert(*e->previous_scope);
      }
      for (auto& e : fresh) f.push(std::move(e));
      f.end = end.through;
      while (static_cast<std::int64_t>(f.events.size()) > limits_.live_buffer_events ||
             (f.bytes > limits_.live_buffer_bytes && !f.events.empty())) {
        f.pop_front();
      }
    }
    f.position = p;
    f.position->head = f.end;
    wake(f, everyone ? nullptr : &touched);
  }
}

void Hub::poll_revocations(pqxx::connection_base& conn) {
  // revoked_at is its transaction's start, not its commit: a revocation can
  // commit after a later one was already read. Each poll reads back over
  // the last kOverlapSeconds, and counts only sessions it did not know.
  constexpr double kOverlapSeconds = 300;
  const auto revoked = revoked_sessions(conn, revoked_after_ - kOverlapSeconds);
  std::lock_guard lock(mutex_);
  bool added = false;
  for (const auto& r : revoked) {
    added = revoked_.insert(r.session_id).second || added;
    revoked_after_ = std::max(revoked_after_, r.revoked_at);
  }
  revocations_read_ = true;
  if (!added) return;
  for (auto& [topic, feed] : feeds_) wake(feed);
}

void Hub::wake_all() {
  std::lock_guard lock(mutex_);
  for (auto& [topic, feed] : feeds_) wake(feed);
}

void Hub::loop() {
  auto backoff = std::chrono::milliseconds(100);
  while (!stopping_) {
    try {
      auto conn = connect(database_url_);
      Reader reader(*conn);
      CommitListener listener(*conn);
      poll_revocations(*conn);
      healthy_ = true;
      backoff = std::chrono::milliseconds(100);
      auto next_revocation_poll = Clock::now();
      while (!stopping_) {
        const auto began = Clock::now();
        refresh(reader);
        if (Clock::now() >= next_revocation_poll) {
          poll_revocations(*conn);
          next_revocation_poll =
              Clock::now() + std::chrono::milliseconds(limits_.revocation_poll_ms);
        }
        // Short waits, so that stop() is quick; a notification ends it early.
        const auto budget = std::chrono::milliseconds(
            std::min<std::int64_t>(limits_.poll_ms, limits_.revocation_poll_ms));
        const auto until = Clock::now() + budget;
        while (!stopping_ && Clock::now() < until) {
          if (listener.wait(std::chrono::milliseconds(100))) {
            // Commits close together are read together.
            std::this_thread::sleep_until(began +
                                          std::chrono::milliseconds(limits_.wake_coalesce_ms));
            break;
          }
        }
      }
    } catch (const std::exception& e) {
      if (healthy_.exchange(false) || backoff == std::chrono::milliseconds(100)) {
        log_(fmt::format("hub: {}; reconnecting", e.what()));
      }
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
    }
  }
}

}  // namespace oasync::serve
