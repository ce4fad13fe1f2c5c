// A small, bounded pool of database sessions for the reads a single request
// needs (catch-up pages, snapshot pages, docs). libpqxx is synchronous: the
// reads run on the pool's threads, each with a session of its own, never on
// the I/O thread, which awaits them.
#pragma once

#include <atomic>
#include <exception>
#include <functional>
#include <memory>
#include <string>

#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "oasync/error.hpp"
#include "oasync/reader.hpp"

namespace oasync::serve {

class DbPool {
 public:
  // `threads` sessions to `database_url`, opened on first use (and again
  // after a failure); at most `queue` reads waiting for one.
  DbPool(std::string database_url, int threads, std::int64_t queue);
  ~DbPool();

  // Waits for the running and queued jobs to finish. Call it once the
  // executors they answer to stop running, before those are destroyed.
  void stop() { pool_.join(); }

  // Whether another read may wait for a session now (else: 503).
  bool has_room() const { return waiting_ < queue_; }

  // Runs `job` with a session's Reader on a pool thread; the awaiting
  // coroutine resumes on its own executor with the result, or the exception.
  // (Not a coroutine itself: it returns the awaitable of the operation. Name
  // the job before awaiting it; GCC 12 mishandles temporaries in co_await.)
  template <typename T>
  boost::asio::awaitable<T> run(std::function<T(Reader&)> job) {
    ++waiting_;
    auto initiate = [this, job = std::move(job)](auto handler) mutable {
      boost::asio::post(
          pool_, [this, job = std::move(job), handler = std::move(handler)]() mutable {
            std::exception_ptr failure;
            T value{};
            try {
              value = job(reader());
            } catch (const Error& e) {
              failure = std::current_exception();
              if (e.code() == Code::database) forget();
            } catch (...) {
              failure = std::current_exception();
              forget();
            }
            --waiting_;
            auto ex = boost::asio::get_associated_executor(handler);
            boost::asio::dispatch(
                ex, [handler = std::move(handler), failure, value = std::move(value)]() mutable {
                  handler(failure, std::move(value));
                });
          });
    };
    return boost::asio::async_initiate<decltype(boost::asio::use_awaitable),
                                       void(std::exception_ptr, T)>(std::move(initiate),
                                                                    boost::asio::use_awaitable);
  }

 private:
  // This thread's session, opened if needed; forget() drops it after a
  // failure, so that the next job reconnects.
  Reader& reader();
  void forget();

  std::string database_url_;
  std::int64_t queue_;
  std::atomic<std::int64_t> waiting_{0};
  boost::asio::thread_pool pool_;
};

}  // namespace oasync::serve
