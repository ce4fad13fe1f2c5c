// The server's shared pieces, as the router and the transports see them.
// They live as long as the server; every use is on the I/O thread, except
// the hub's and the pool's own (they lock or post back).
#pragma once

#include <functional>
#include <string>

#include "answers.hpp"
#include "auth.hpp"
#include "budget.hpp"
#include "db_pool.hpp"
#include "hub.hpp"
#include "metrics.hpp"
#include "oasync/serve/serve.hpp"
#include "streams.hpp"

namespace oasync::serve {

struct Context {
  const ServeConfig& config;
  const std::function<void(const std::string&)>& log;
  Metrics& metrics;
  Hub& hub;
  DbPool& pool;
  Streams& streams;
  const Auth& auth;
  const Answers& answers;
  Budget& budget;
  // Set once shutdown begins (I/O thread only).
  const bool& stopping;
};

}  // namespace oasync::serve
