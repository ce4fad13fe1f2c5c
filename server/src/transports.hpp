// The HTTP transports: each frames what the subscription core gives, and
// holds no rule of its own. The router has authenticated the caller, checked
// the topic against its token, and parsed the request; each answers it and
// says whether the connection stays open. They throw oasync::Error for a
// failed read before anything is sent (the router answers it).
#pragma once

#include <string>

#include <boost/asio/awaitable.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/url/url_view.hpp>

#include "answers.hpp"
#include "auth.hpp"
#include "context.hpp"
#include "stream_request.hpp"

namespace oasync::serve {

// long_poll.cpp: a catch-up (what there is from the offset), or a long-poll
// (waits for something, then 204 at limits.long_poll_seconds).
boost::asio::awaitable<Keep> answer_catch_up(Context& context, boost::beast::tcp_stream& stream,
                                             const Request& req, const StreamRequest& s,
                                             Subscription& subscription);

// sse.cpp: Server-Sent Events (data and control events) until
// limits.sse_seconds, the token's expiry or revocation, or shutdown.
boost::asio::awaitable<Keep> answer_sse(Context& context, boost::beast::tcp_stream& stream,
                                        const Request& req, const StreamRequest& s,
                                        Subscription& subscription);

// docs.cpp: HEAD /v1/topics/{topic}, the topic's metadata.
boost::asio::awaitable<Keep> answer_head(Context& context, boost::beast::tcp_stream& stream,
                                         const Request& req, const std::string& topic);

// docs.cpp: GET /sync/v1/doc/{key}[?topic=T], one doc of the caller's view.
boost::asio::awaitable<Keep> answer_doc(Context& context, boost::beast::tcp_stream& stream,
                                        const Request& req, const boost::urls::url_view& url,
                                        const Caller& caller, const std::string& key);

// channel_socket.cpp: GET /sync/v1/socket/websocket, the sync:v1 channel
// (Phoenix Channels V2 over a WebSocket). Checks the upgrade (vsn=2.0.0,
// encoding, the token in phoenix's authToken), then takes the connection
// over until the socket closes.
boost::asio::awaitable<Keep> answer_socket(Context& context, boost::beast::tcp_stream& stream,
                                           const Request& req, const boost::urls::url_view& url);

}  // namespace oasync::serve
