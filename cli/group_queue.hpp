// GroupQueue: hands items from a reader thread to the committing thread in
// groups (group commit). Items that arrive while a transaction is in flight
// wait here and join the next group.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <utility>
#include <vector>

namespace oasync::cli {

template <typename Item>
class GroupQueue {
 public:
  // `capacity` bounds the total weight waiting (e.g. writes): a producer that
  // runs ahead blocks in push() instead of growing memory.
  explicit GroupQueue(std::size_t capacity) : capacity_(capacity) {}

  GroupQueue(const GroupQueue&) = delete;
  GroupQueue& operator=(const GroupQueue&) = delete;

  // Adds an item of the given weight (at least 1); blocks while the queue is
  // full. An item heavier than the capacity is still accepted alone.
  void push(Item item, std::size_t weight) {
    weight = weight == 0 ? 1 : weight;
    std::unique_lock lock(mutex_);
    not_full_.wait(lock,
                   [&] { return waiting_weight_ == 0 || waiting_weight_ + weight <= capacity_; });
    items_.emplace_back(std::move(item), weight);
    waiting_weight_ += weight;
    not_empty_.notify_one();
  }

  // No more items will come.
  void close() {
    std::lock_guard lock(mutex_);
    closed_ = true;
    not_empty_.notify_one();
  }

  // Waits for at least one item, then takes items in order while their total
  // weight stays within max_weight (the first item always goes). When
  // max_delay is positive, waits up to that long for more items to fill the
  // group. Returns an empty group once the queue is closed and drained.
  std::vector<Item> take(std::size_t max_weight, std::chrono::milliseconds max_delay) {
    std::unique_lock lock(mutex_);
    not_empty_.wait(lock, [&] { return !items_.empty() || closed_; });
    if (max_delay.count() > 0 && !items_.empty()) {
      const auto deadline = std::chrono::steady_clock::now() + max_delay;
      not_empty_.wait_until(lock, deadline,
                            [&] { return closed_ || waiting_weight_ >= max_weight; });
    }
    std::vector<Item> group;
    std::size_t taken = 0;
    while (!items_.empty() && (group.empty() || taken + items_.front().second <= max_weight)) {
      taken += items_.front().second;
      waiting_weight_ -= items_.front().second;
      group.push_back(std::move(items_.front().first));
      items_.pop_front();
    }
    not_full_.notify_all();
    return group;
  }

 private:
  std::size_t capacity_;
  std::mutex mutex_;
  std::condition_variable not_empty_;
  std::condition_variable not_full_;
  std::deque<std::pair<Item, std::size_t>> items_;
  std::size_t waiting_weight_ = 0;
  bool closed_ = false;
};

}  // namespace oasync::cli
