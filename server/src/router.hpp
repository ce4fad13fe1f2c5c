// The routes of oasync serve's HTTP surface (serve.hpp lists them): which
// answer a request gets, its token checked (auth.hpp) before any read, and
// the one place where a failed read becomes an HTTP status.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/beast/core/tcp_stream.hpp>

#include "answers.hpp"
#include "auth.hpp"
#include "context.hpp"

namespace oasync::serve {

// The answer to a refused token: 401 with WWW-Authenticate, or 503 with
// Retry-After while the server cannot judge tokens yet.
Refusal unauthorized(const AuthRefusal& why);

// Answers `req`; says whether the connection may serve another request.
boost::asio::awaitable<Keep> route(Context& context, boost::beast::tcp_stream& stream,
                                   const Request& req);

}  // namespace oasync::serve
