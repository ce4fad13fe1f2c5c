// The torture run's record of the data topics' journals, read as they
// commit (delivery.hpp's checks compare what followers received with it).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <pqxx/pqxx>

#include "delivery.hpp"

namespace oasync::test::delivery {

// Reads each data topic's new events every 100 ms, before purge removes
// them (it keeps the last 2 s), so that responses far below the final floor
// are checked too. A range purged before it was read is a gap: responses
// that overlap it are not compared. It also notes each epoch it sees with its
// counter: a channel's positions name the epoch, offsets its counter.
class JournalRecorder {
 public:
  JournalRecorder(std::string url, std::vector<std::string> topics)
      : url_(std::move(url)),
        topics_(std::move(topics)),
        journals_(topics_.size()),
        gaps_(topics_.size()),
        epochs_(topics_.size()) {}

  void run(const std::atomic<bool>& stop) {
    while (!stop) {
      poll();
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    poll();
  }

  // The recorded events, with the final journal's added.
  TopicJournal merged(std::size_t t, const TopicJournal& final_journal) {
    std::lock_guard lock(mutex_);
    TopicJournal out = final_journal;
    for (const auto& [w, e] : journals_[t]) out.events.emplace(w, e);
    return out;
  }
  bool covers(std::size_t t, std::int64_t after, std::int64_t through) {
    std::lock_guard lock(mutex_);
    for (const auto& [lo, hi] : gaps_[t]) {
      if (lo <= through && hi > after) return false;
    }
    return through <= std::max(read_through_[t], final_through_[t]);
  }
  void set_final(std::size_t t, std::int64_t floor, std::int64_t head) {
    std::lock_guard lock(mutex_);
    // What the recorder missed below the final floor is a gap too.
    if (read_through_[t] < floor) gaps_[t].push_back({read_through_[t] + 1, floor});
    final_through_[t] = head;
  }
  // The counter of an epoch of topic t, if it was seen.
  std::optional<std::int64_t> epoch_counter(std::size_t t, const std::string& epoch) const {
    std::lock_guard lock(mutex_);
    const auto it = epochs_[t].find(epoch);
    return it == epochs_[t].end() ? std::nullopt : std::optional<std::int64_t>(it->second);
  }
  std::int64_t missed() const {
    std::lock_guard lock(mutex_);
    std::int64_t n = 0;
    for (const auto& g : gaps_)
      for (const auto& [lo, hi] : g) n += hi - lo + 1;
    return n;
  }

 private:
  void poll() {
    try {
      pqxx::connection conn(url_);
      pqxx::nontransaction tx(conn);
      for (std::size_t t = 0; t < topics_.size(); ++t) {
        const pqxx::result epoch = tx.exec_params(
            "SELECT epoch::text, epoch_counter FROM oasync.topics WHERE topic = $1", topics_[t]);
        if (!epoch.empty()) {
          std::lock_guard lock(mutex_);
          epochs_[t][epoch[0][0].as<std::string>()] = epoch[0][1].as<std::int64_t>();
        }
        std::int64_t last = read_through_[t];
        for (;;) {
          const pqxx::result rows = tx.exec_params(
              "SELECT watermark, doc_key, doc_version, op = 'delete', scope, previous_scope, "
              "(SELECT purged_through FROM oasync.topics WHERE topic = $1) FROM oasync.events "
              "WHERE topic = $1 AND watermark > $2 ORDER BY watermark LIMIT 5000",
              topics_[t], last);
          if (rows.empty()) break;
          std::lock_guard lock(mutex_);
          for (const auto& row : rows) {
            const std::int64_t w = row[0].as<std::int64_t>();
            if (w != last + 1) gaps_[t].push_back({last + 1, w - 1});
            JournalEvent e;
            e.doc_key = row[1].as<std::string>();
            e.version = row[2].as<std::int64_t>();
            e.deleted = row[3].as<bool>();
            e.scope = row[4].as<std::string>();
            if (!row[5].is_null()) e.previous_scope = row[5].as<std::string>();
            journals_[t].emplace(w, std::move(e));
            last = w;
          }
          read_through_[t] = last;
          if (rows.size() < 5000) break;
        }
      }
    } catch (const std::exception&) {
      // PostgreSQL restarting: the next poll reads on.
    }
  }

  std::string url_;
  std::vector<std::string> topics_;
  mutable std::mutex mutex_;
  std::vector<std::map<std::int64_t, JournalEvent>> journals_;
  std::vector<std::vector<std::pair<std::int64_t, std::int64_t>>> gaps_;
  std::map<std::size_t, std::int64_t> read_through_, final_through_;
  std::vector<std::map<std::string, std::int64_t>> epochs_;  // epoch -> counter, per topic
};

}  // namespace oasync::test::delivery
