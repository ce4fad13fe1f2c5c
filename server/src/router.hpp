// The routes of oasync serve's HTTP surface (serve.hpp lists them): which
// answer a request gets, its token checked (auth.hpp) before any read, and
// the one place where a failed read becomes an HTTP status.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/beast/core/tcp_stream.hpp>

#include "answers.hpp"
#include "context.hpp"

namespace oasync::serve {

// Answers `req`; says whether the connection may serve another request.
boost::asio::awaitable<Keep> route(Context& context, boost::beast::tcp_stream& stream,
                                   const Request& req);

}  // namespace oasync::serve
