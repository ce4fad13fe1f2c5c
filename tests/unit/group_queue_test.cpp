// GroupQueue: group commit's hand-over between reader and committer.
#include <doctest/doctest.h>

#include <thread>

#include "group_queue.hpp"

using oasync::cli::GroupQueue;
using namespace std::chrono_literals;

TEST_CASE("items waiting together leave together, bounded by weight, in order") {
  GroupQueue<int> q(100);
  for (int i = 0; i < 5; ++i) q.push(i, 3);
  CHECK(q.take(7, 0ms) == std::vector<int>{0, 1});
  CHECK(q.take(100, 0ms) == std::vector<int>{2, 3, 4});
  q.push(9, 50);
  CHECK(q.take(7, 0ms) == std::vector<int>{9});  // the first item always goes
  q.close();
  CHECK(q.take(7, 0ms).empty());
}

TEST_CASE("a full queue holds the producer back until the committer takes") {
  GroupQueue<int> q(4);
  q.push(1, 4);
  std::atomic<bool> pushed{false};
  std::thread producer([&] {
    q.push(2, 1);
    pushed = true;
  });
  std::this_thread::sleep_for(50ms);
  CHECK_FALSE(pushed.load());
  CHECK(q.take(10, 0ms) == std::vector<int>{1});
  producer.join();
  CHECK(pushed.load());
  CHECK(q.take(10, 0ms) == std::vector<int>{2});
}

TEST_CASE("with a delay, the first item waits for company up to the bound") {
  GroupQueue<int> q(100);
  q.push(1, 1);
  std::thread late([&] {
    std::this_thread::sleep_for(20ms);
    q.push(2, 1);
  });
  const auto group = q.take(2, 2000ms);  // returns as soon as weight 2 is reached
  late.join();
  CHECK(group == std::vector<int>{1, 2});
}
