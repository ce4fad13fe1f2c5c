// The sync:v1 channel: one WebSocket speaking Phoenix Channels V2
// (phoenix.hpp), one channel per topic ("sync:v1:{topic}"), each a reader of
// the subscription core with its caller's view in Format::sync_proto. What a
// view receives, and when a position is stale, are the core's rules; this
// file holds the socket's own: joins and leaves, the outgoing queue (bounded
// in bytes, its bytes held in the response budget until written), turns for
// the channels, heartbeats, and closes, each with a reason the client reads
// before the close frame.
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/websocket.hpp>
#include <nlohmann/json.hpp>

#include "channel_frames.hpp"
#include "oasync/batch.hpp"
#include "oasync/error.hpp"
#include "offset.hpp"
#include "phoenix.hpp"
#include "router.hpp"
#include "subscription.hpp"
#include "transports.hpp"

namespace oasync::serve {
namespace {

using namespace channel;

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;

using asio::awaitable;
using asio::use_awaitable;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr std::string_view kTopicPrefix = "sync:v1:";

// Why the server closes a socket: the reason the client reads (first in a
// "disconnect" message on the "phoenix" topic, then in the close frame), and
// the close code.
struct Close {
  websocket::close_code code;
  std::string reason;
  std::string message;
};

// A push waiting to be written, and the budget its bytes hold until then.
struct Outgoing {
  Push push;
  Budget::Lease lease;
};

// One joined topic.
struct Channel {
  std::string topic;  // the oasync topic
  std::string name;   // "sync:v1:" + topic
  std::string join_ref;
  std::unique_ptr<Subscription> subscription;
  bool stopped = false;
  // Reached the head once: from then on, a wait for room that outlasts
  // send_timeout_seconds means the socket cannot keep up.
  bool live = false;
  // Where the view has been delivered through.
  std::optional<Cursor> delivered;
  // While it waits for a turn: the timer its turn cancels, and since when.
  std::shared_ptr<asio::steady_timer> turn;
  bool granted = false;
  Clock::time_point waiting_since{};
};

class Socket : public std::enable_shared_from_this<Socket> {
 public:
  Socket(Context& context, beast::tcp_stream stream, Caller caller, Encoding encoding)
      : context_(context),
        limits_(context.config.limits),
        ws_(std::move(stream)),
        caller_(std::move(caller)),
        encoding_(encoding),
        writer_wake_(ws_.get_executor()),
        reader_wake_(ws_.get_executor()),
        tick_(ws_.get_executor()),
        children_done_(ws_.get_executor()) {
    caller_.view.format = Format::sync_proto;
    caller_.view.max_push_payload = limits_.channel_payload_bytes;
  }

  // Completes the upgrade of `req`, then serves the socket until it closes
  // and everything it started has ended.
  awaitable<void> run(const Request& req, bool offered_phoenix) {
    const Counted counted(context_.metrics.sockets);
    websocket::stream_base::timeout timeouts{};
    // The opening and closing handshakes; idling is watched below.
    timeouts.handshake_timeout = std::chrono::seconds(limits_.request_head_seconds);
    timeouts.idle_timeout = websocket::stream_base::none();
    timeouts.keep_alive_pings = false;
    ws_.set_option(timeouts);
    ws_.set_option(
        websocket::stream_base::decorator([offered_phoenix](websocket::response_type& r) {
          // phoenix.js offers "phoenix" beside its token: answered with exactly
          // it (never the token), or browsers fail the handshake.
          if (offered_phoenix) r.set(beast::http::field::sec_websocket_protocol, "phoenix");
        }));
    ws_.read_message_max(static_cast<std::size_t>(limits_.max_request_bytes));
    ws_.auto_fragment(false);
    boost::system::error_code ec;
    co_await ws_.async_accept(req, asio::redirect_error(use_awaitable, ec));
    if (ec) co_return;
    last_received_ = Clock::now();
    spawn(write_loop());
    spawn(watch());
    try {
      co_await read_loop();
    } catch (const std::exception& e) {
      // A fault of ours in handling a frame: logged; the socket ends below.
      context_.log(fmt::format("sync:v1 socket failed: {}", e.what()));
    }
    // Gone (or closed): everything it started ends, then the connection.
    closed_ = true;
    stop_all();
    writer_wake_.cancel();
    tick_.cancel();
    beast::get_lowest_layer(ws_).socket().close(ec);
    while (children_ > 0) {
      children_done_.expires_at(Clock::time_point::max());
      co_await children_done_.async_wait(asio::redirect_error(use_awaitable, ec));
    }
    context_.metrics.socket_queued_bytes -= queued_bytes_;
    queued_bytes_ = 0;
  }

 private:
  // Counts a coroutine the socket started while it runs.
  class Child {
   public:
    explicit Child(Socket& socket) : socket_(socket) { ++socket_.children_; }
    ~Child() {
      if (--socket_.children_ == 0) socket_.children_done_.cancel();
    }
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;

   private:
    Socket& socket_;
  };

  void spawn(awaitable<void> work) {
    asio::co_spawn(ws_.get_executor(), std::move(work), asio::detached);
  }

  bool ending() const { return closed_ || closing_.has_value(); }

  // --- Reading -------------------------------------------------------------

  awaitable<void> read_loop() {
    beast::flat_buffer buffer;
    for (;;) {
      boost::system::error_code ec;
      // A client that sends faster than it takes its answers is read no
      // further until they are written: replies are bounded by the queue.
      while (queued_bytes_ > limits_.socket_queue_bytes && !ending()) {
        reader_wake_.expires_at(Clock::time_point::max());
        co_await reader_wake_.async_wait(asio::redirect_error(use_awaitable, ec));
      }
      co_await ws_.async_read(buffer, asio::redirect_error(use_awaitable, ec));
      if (ec) co_return;  // closed, cut, or too large (Beast closes with 1009)
      last_received_ = Clock::now();
      ++frames_in_;
      if (!ws_.got_text()) {
        close({websocket::close_code::unknown_data, "bad_frame",
               fmt::format("frame {}: binary frames are not read here; send JSON text frames",
                           frames_in_)});
      } else if (!ending()) {
        const std::string text = beast::buffers_to_string(buffer.data());
        co_await handle(text);
      }
      buffer.consume(buffer.size());
    }
  }

  awaitable<void> handle(const std::string& text) {
    std::string error;
    const auto frame = phoenix::parse(text, error);
    if (!frame) {
      close({websocket::close_code::protocol_error, "bad_frame",
             fmt::format("frame {}: {}", frames_in_, error)});
      co_return;
    }
    const phoenix::Frame& f = *frame;
    if (f.topic == "phoenix" && f.event == "heartbeat") {
      send_text(phoenix::reply(f, "ok", json::object()));
      co_return;
    }
    if (f.event == "phx_join") {
      co_await join(f);
      co_return;
    }
    const auto it = channels_.find(f.topic);
    if (f.event == "phx_leave") {
      // A leave with an older join_ref (sent after a join timed out) leaves
      // nothing: the newer join stands.
      if (it != channels_.end() && (!f.join_ref || *f.join_ref == it->second->join_ref)) {
        const std::shared_ptr<Channel> channel = it->second;
        stop(*channel);
        channels_.erase(it);
        send_text(phoenix::reply(f, "ok", json::object()));
        send_text(phoenix::frame(channel->join_ref, channel->join_ref, channel->name, "phx_close",
                                 json::object()));
      } else {
        send_text(phoenix::reply(f, "ok", json::object()));
      }
      co_return;
    }
    if (it == channels_.end()) {
      send_text(phoenix::reply(
          f, "error", {{"reason", "unmatched_topic"}, {"message", "join the topic first"}}));
    } else {
      send_text(phoenix::reply(f, "error",
                               {{"reason", "unknown_event"},
                                {"message", "a sync:v1 channel takes no events but phx_leave"}}));
    }
  }

  awaitable<void> join(const phoenix::Frame& f) {
    const auto refuse = [&](std::string_view reason, const std::string& message) {
      send_text(phoenix::reply(f, "error", {{"reason", reason}, {"message", message}}));
    };
    if (!f.ref || !f.join_ref) {
      refuse("bad_params", "a join needs a ref and a join_ref");
      co_return;
    }
    if (const Status s = status_of(context_, caller_); ended(s)) {
      close_unauthorized(s);
      co_return;
    }
    if (f.topic.substr(0, kTopicPrefix.size()) != kTopicPrefix) {
      refuse("unmatched_topic",
             fmt::format("no channel \"{}\" here: join sync:v1:TOPIC", f.topic.substr(0, 80)));
      co_return;
    }
    const std::string topic = f.topic.substr(kTopicPrefix.size());
    if (topic.empty() || !storable_text(topic)) {
      refuse("bad_params", "the topic is not UTF-8 text without NUL");
      co_return;
    }
    if (!Auth::allowed(caller_, topic)) {
      refuse("forbidden_topic", fmt::format("the token may not read topic \"{}\"", topic));
      co_return;
    }
    std::string error;
    const auto cursor = cursor_of(f.payload, error);
    if (!cursor) {
      refuse("bad_params", error);
      co_return;
    }
    const bool replacing = channels_.count(f.topic) > 0;
    if (!replacing &&
        static_cast<std::int64_t>(channels_.size()) >= limits_.max_channels_per_socket) {
      refuse("too_many_channels",
             fmt::format("a socket joins at most {} channels", limits_.max_channels_per_socket));
      co_return;
    }
    if (!context_.pool.has_room()) {
      refuse("unavailable", "too many reads waiting for the database; the join is retried");
      co_return;
    }
    std::optional<TopicPosition> position;
    try {
      position = co_await context_.streams.position(topic);
      // A position of another epoch than the hub's may be of one the hub has
      // not seen yet (an epoch reset sends no notification): the database
      // says.
      if (position && *cursor && (*cursor)->epoch != position->epoch) {
        position = co_await context_.streams.position(topic, Streams::Source::database);
      }
    } catch (const Error& e) {
      context_.log(fmt::format("sync:v1 join of \"{}\" failed: {}", topic, e.what()));
      refuse("unavailable", "the database is unavailable; the join is retried");
      co_return;
    }
    if (ending()) co_return;
    if (!position) {
      refuse("unknown_topic", fmt::format("topic \"{}\" is not registered", topic));
      co_return;
    }
    // A position in the topic's epoch resumes after it; one of any other
    // epoch (counter 0 is none) reads as epoch_changed: stale, then a fresh
    // snapshot.
    std::string offset = "-1";
    if (*cursor) {
      Offset o;
      o.epoch_counter = (*cursor)->epoch == position->epoch ? position->epoch_counter : 0;
      o.watermark = (*cursor)->watermark;
      offset = encode(o);
    }
    if (const auto old = channels_.find(f.topic); old != channels_.end()) {
      // Joined again: the old join ends first (the client drops its close).
      const std::shared_ptr<Channel> previous = old->second;
      stop(*previous);
      channels_.erase(old);
      send_text(phoenix::frame(previous->join_ref, previous->join_ref, previous->name, "phx_close",
                               json::object()));
    }
    auto channel = std::make_shared<Channel>();
    channel->topic = topic;
    channel->name = f.topic;
    channel->join_ref = *f.join_ref;
    channel->subscription =
        std::make_unique<Subscription>(context_, caller_, topic, offset, OnStale::reset,
                                       *cursor ? (*cursor)->epoch : std::string());
    channels_[f.topic] = channel;
    // The reply goes before anything the channel pushes.
    send_text(phoenix::reply(f, "ok", position_json(*position)));
    spawn(pump(channel));
  }

  // --- A channel's reads -----------------------------------------------------

  // Reads the channel's stream page by page, a turn at a time, and pushes
  // each page as a batch; at the head, waits for the view's next change, or
  // the next heartbeat.
  awaitable<void> pump(std::shared_ptr<Channel> channel) {
    const auto self = shared_from_this();
    const Child child(*this);
    const Counted counted(context_.metrics.channels);
    Subscription& subscription = *channel->subscription;
    const auto heartbeat = std::chrono::seconds(limits_.channel_heartbeat_seconds);
    auto heartbeat_at = Clock::now() + heartbeat;
    bool heartbeat_due = false;
    asio::steady_timer pause(ws_.get_executor());
    while (!channel->stopped && !ending()) {
      if (!co_await turn(channel)) break;
      std::optional<Chunk> chunk;
      bool retry = false;
      std::optional<std::string> failed;  // the reason the channel ends with
      try {
        chunk = co_await subscription.read();
      } catch (const Busy&) {
        ++context_.metrics.budget_refused;
        retry = true;
      } catch (const Error& e) {
        context_.log(fmt::format("sync:v1 read of \"{}\" failed: {}", channel->topic, e.what()));
        if (e.code() == Code::database) {
          retry = true;
        } else {
          failed = e.code() == Code::not_found ? "unknown_topic" : "internal";
        }
      } catch (const std::exception& e) {
        context_.log(fmt::format("sync:v1 read of \"{}\" failed: {}", channel->topic, e.what()));
        failed = "internal";
      }
      end_turn();
      if (channel->stopped || ending()) break;
      if (failed) {
        // Not to be cured by reading again (the topic was removed): the
        // channel errors, phoenix rejoins it, and the join says why.
        const auto it = channels_.find(channel->name);
        if (it != channels_.end() && it->second == channel) channels_.erase(it);
        stop(*channel);
        send_text(phoenix::frame(channel->join_ref, channel->join_ref, channel->name, "phx_error",
                                 {{"reason", *failed}}));
        break;
      }
      if (retry) {
        // The budget is full, or the database failed: again in a second.
        pause.expires_after(std::chrono::seconds(1));
        boost::system::error_code ec;
        co_await pause.async_wait(asio::redirect_error(use_awaitable, ec));
        continue;
      }
      if (!chunk) {
        // Revoked or expired during the read: what it read does not go out.
        close_unauthorized(subscription.status());
        break;
      }
      // The first read to reach the head goes out even without messages: the
      // client then knows it is live (and where), not at the next heartbeat.
      const bool arrived = chunk->up_to_date && !channel->live && chunk->journal;
      if (!chunk->messages.empty() || arrived) {
        push_batch(*channel, *chunk, subscription.take_held());
      } else {
        subscription.sent();
      }
      subscription.advance(*chunk);
      if (chunk->journal) channel->delivered = Cursor{chunk->epoch, chunk->journal->watermark};
      if (heartbeat_due) {
        push_heartbeat(*channel);
        heartbeat_due = false;
        heartbeat_at = Clock::now() + heartbeat;
      }
      if (!chunk->up_to_date) continue;
      channel->live = true;
      if (!co_await subscription.wait(heartbeat_at)) {
        // Nothing for the view since: read (which moves the position past
        // the other tenants' events), then tell the client where it stands.
        heartbeat_due = true;
      }
    }
  }

  // Waits for the channel's turn to read: the queue has room, and the
  // channels that asked first have had theirs. False when the channel or the
  // socket ended meanwhile.
  awaitable<bool> turn(std::shared_ptr<Channel> waiting) {
    Channel& channel = *waiting;
    if (turns_.empty() && has_room()) {
      ++reading_;
      co_return true;
    }
    channel.turn =
        std::make_shared<asio::steady_timer>(ws_.get_executor(), Clock::time_point::max());
    channel.waiting_since = Clock::now();
    const auto timer = channel.turn;
    turns_.push_back(std::move(waiting));
    boost::system::error_code ec;
    co_await timer->async_wait(asio::redirect_error(use_awaitable, ec));
    channel.turn.reset();
    // (A granted turn was counted in reading_ when it was granted.)
    const bool granted = channel.granted;
    channel.granted = false;
    if (channel.stopped || ending()) {
      if (granted) end_turn();
      co_return false;
    }
    co_return granted;
  }

  // A read's turn is over (what it read, if anything, is queued).
  void end_turn() {
    --reading_;
    grant_turns();
  }

  // Room for one more page: the queue, and a page for each read in turn.
  bool has_room() const {
    return queued_bytes_ + (reading_ + 1) * limits_.page_bytes <= limits_.socket_queue_bytes ||
           (queued_bytes_ == 0 && reading_ == 0);
  }

  // Grants the waiting channels their turns, first come first, while there
  // is room (counting each granted read at once).
  void grant_turns() {
    while (!turns_.empty() && (has_room() || turns_.front()->stopped)) {
      const std::shared_ptr<Channel> next = turns_.front();
      turns_.pop_front();
      if (!next->stopped) {
        next->granted = true;
        ++reading_;
      }
      if (next->turn) next->turn->cancel();
    }
  }

  // --- Writing -------------------------------------------------------------

  void enqueue(Outgoing item) {
    if (ending()) return;
    queued_bytes_ += item.push.bytes;
    context_.metrics.socket_queued_bytes += item.push.bytes;
    queue_.push_back(std::move(item));
    writer_wake_.cancel();
  }

  void send_text(std::string text) {
    enqueue(Outgoing{text_push(std::move(text)), Budget::Lease()});
  }

  // What one read gave, as a "batch" push (its lease held until written).
  void push_batch(Channel& channel, Chunk& chunk, Budget::Lease lease) {
    std::optional<Cursor> position;
    if (chunk.journal) position = Cursor{chunk.epoch, chunk.journal->watermark};
    Outgoing item{batch_push(address(channel), chunk.messages, position, encoding_),
                  std::move(lease)};
    // (The JSON encoding is larger than the protobuf the read reserved.)
    item.lease.resize(item.push.bytes);
    enqueue(std::move(item));
  }

  void push_heartbeat(Channel& channel) {
    enqueue(Outgoing{heartbeat_push(address(channel), context_.hub.position(channel.topic),
                                    channel.delivered, encoding_),
                     Budget::Lease()});
  }

  static Address address(const Channel& channel) {
    return Address{channel.join_ref, channel.name, channel.topic};
  }

  awaitable<void> write_loop() {
    const auto self = shared_from_this();
    const Child child(*this);
    std::vector<asio::const_buffer> buffers;
    for (;;) {
      boost::system::error_code ec;
      if (closed_) break;
      if (queue_.empty()) {
        if (closing_) {
          co_await ws_.async_close(websocket::close_reason(closing_->code, closing_->reason),
                                   asio::redirect_error(use_awaitable, ec));
          break;
        }
        writer_wake_.expires_at(Clock::time_point::max());
        co_await writer_wake_.async_wait(asio::redirect_error(use_awaitable, ec));
        continue;
      }
      // Nothing read for a caller that is no longer valid goes out.
      if (const Status s = status_of(context_, caller_); ended(s) && !closing_) {
        close_unauthorized(s);
        continue;
      }
      Outgoing item = std::move(queue_.front());
      queue_.pop_front();
      buffers.clear();
      for (const Part& p : item.push.parts) {
        const std::string_view bytes = bytes_of(p);
        buffers.emplace_back(bytes.data(), bytes.size());
      }
      ws_.binary(item.push.binary);
      writing_since_ = Clock::now();
      co_await ws_.async_write(buffers, asio::redirect_error(use_awaitable, ec));
      writing_since_.reset();
      queued_bytes_ -= item.push.bytes;
      context_.metrics.socket_queued_bytes -= item.push.bytes;
      if (ec) break;
      reader_wake_.cancel();
      grant_turns();
    }
    // The queue is dropped with the socket, and a read loop waiting for it
    // to drain goes on (to its end).
    reader_wake_.cancel();
    for (const Outgoing& o : queue_) {
      queued_bytes_ -= o.push.bytes;
      context_.metrics.socket_queued_bytes -= o.push.bytes;
    }
    queue_.clear();
  }

  // --- Ending --------------------------------------------------------------

  // Every second: the caller's standing, shutdown, a client that sends
  // nothing, and one that takes nothing.
  awaitable<void> watch() {
    const auto self = shared_from_this();
    const Child child(*this);
    const auto send_timeout = std::chrono::seconds(limits_.send_timeout_seconds);
    while (!closed_) {
      tick_.expires_after(std::chrono::seconds(1));
      boost::system::error_code ec;
      co_await tick_.async_wait(asio::redirect_error(use_awaitable, ec));
      if (closed_) break;
      const auto now = Clock::now();
      if (writing_since_ && now - *writing_since_ > send_timeout) {
        // Takes nothing at all: no close frame would get through either.
        ++context_.metrics.slow_subscribers;
        if (!closing_) {
          context_.metrics.count_socket_closed("slow_consumer");
          closing_ = Close{websocket::close_code::try_again_later, "slow_consumer", ""};
          closing_at_ = now;
          stop_all();
        }
        beast::get_lowest_layer(ws_).socket().close(ec);
        reader_wake_.cancel();
        continue;
      }
      if (closing_) {
        // The client has had its close handshake's time (Beast ends it at
        // handshake_timeout), or a write is stuck: cut it.
        if (now - closing_at_ > std::chrono::seconds(limits_.request_head_seconds) + send_timeout) {
          beast::get_lowest_layer(ws_).socket().close(ec);
        }
        continue;
      }
      const Status status = status_of(context_, caller_);
      if (ended(status)) {
        close_unauthorized(status);
      } else if (status == Status::stopping) {
        close({websocket::close_code::service_restart, "draining",
               "the server is restarting; reconnect and resume"});
      } else if (now - last_received_ > std::chrono::seconds(limits_.channel_idle_seconds)) {
        close({websocket::close_code::going_away, "idle",
               fmt::format("nothing received for {} s", limits_.channel_idle_seconds)});
      } else if (behind(now, send_timeout)) {
        ++context_.metrics.slow_subscribers;
        close({websocket::close_code::try_again_later, "slow_consumer",
               "the socket did not keep up with its live updates; reconnect and resume"});
      }
    }
  }

  // Whether a live channel has waited longer than `limit` for room.
  bool behind(Clock::time_point now, Clock::duration limit) const {
    for (const auto& c : turns_) {
      if (c->live && !c->stopped && now - c->waiting_since > limit) return true;
    }
    return false;
  }

  void close_unauthorized(Status status) {
    close({websocket::close_code::policy_error, "unauthorized",
           status == Status::expired ? "the token expired" : "the session was revoked"});
  }

  // Closes with `why`: the queue is dropped, the channels stop, the client
  // gets the reason, then the close frame.
  void close(Close why) {
    if (ending()) return;
    context_.metrics.count_socket_closed(why.reason);
    for (const Outgoing& o : queue_) {
      queued_bytes_ -= o.push.bytes;
      context_.metrics.socket_queued_bytes -= o.push.bytes;
    }
    queue_.clear();
    stop_all();
    send_text(phoenix::frame(std::nullopt, std::nullopt, "phoenix", "disconnect",
                             {{"reason", why.reason}, {"message", why.message}}));
    closing_ = std::move(why);
    closing_at_ = Clock::now();
    writer_wake_.cancel();
    reader_wake_.cancel();
  }

  void stop(Channel& channel) {
    channel.stopped = true;
    if (channel.subscription) channel.subscription->interrupt();
    if (channel.turn) channel.turn->cancel();
    std::erase_if(turns_, [&](const std::shared_ptr<Channel>& c) { return c.get() == &channel; });
  }

  void stop_all() {
    for (auto& [name, channel] : channels_) stop(*channel);
    channels_.clear();
    while (!turns_.empty()) {
      if (turns_.front()->turn) turns_.front()->turn->cancel();
      turns_.pop_front();
    }
  }

  Context& context_;
  const LimitsConfig& limits_;
  websocket::stream<beast::tcp_stream> ws_;
  Caller caller_;
  Encoding encoding_;
  std::map<std::string, std::shared_ptr<Channel>> channels_;  // by channel name
  std::deque<Outgoing> queue_;
  std::int64_t queued_bytes_ = 0;
  asio::steady_timer writer_wake_;
  asio::steady_timer reader_wake_;  // the read loop's, while the queue is full
  asio::steady_timer tick_;         // the watch's
  std::optional<Clock::time_point> writing_since_;
  // Waiting for a turn, first come first (a stopped channel leaves it).
  std::deque<std::shared_ptr<Channel>> turns_;
  std::int64_t reading_ = 0;  // reads in their turn
  std::optional<Close> closing_;
  Clock::time_point closing_at_{};
  bool closed_ = false;
  Clock::time_point last_received_{};
  std::int64_t frames_in_ = 0;
  int children_ = 0;
  asio::steady_timer children_done_;
};

}  // namespace

awaitable<Keep> answer_socket(Context& context, beast::tcp_stream& stream, const Request& req,
                              const boost::urls::url_view& url) {
  const auto refuse = [&](http::status status, const std::string& message) {
    return context.answers.error(req, status, "bad_request", message);
  };
  std::optional<Response> answer;
  const auto params = url.params();
  const auto vsn = params.find("vsn");
  const auto encoding = params.find("encoding");
  if (!websocket::is_upgrade(req)) {
    answer = refuse(http::status::upgrade_required,
                    "this is the sync:v1 WebSocket endpoint: connect with a WebSocket client "
                    "(the phoenix package)");
    answer->set(http::field::upgrade, "websocket");
  } else if (vsn == params.end() || (*vsn).value != "2.0.0") {
    answer = refuse(http::status::bad_request,
                    "the Phoenix serializer version must be vsn=2.0.0 (phoenix.js 1.8 sends it)");
  } else if (encoding != params.end() && (*encoding).value != "protobuf" &&
             (*encoding).value != "json") {
    answer = refuse(http::status::bad_request,
                    fmt::format("encoding must be protobuf or json, not \"{}\"",
                                std::string((*encoding).value).substr(0, 40)));
  } else if (params.find(context.config.auth.query_parameter) != params.end() ||
             params.find("token") != params.end()) {
    // (Under the HTTP side's name, and phoenix's usual socket param.)
    answer = refuse(http::status::bad_request,
                    "send the token as phoenix's authToken (Sec-WebSocket-Protocol), not in the "
                    "query string, which proxies log");
  }
  std::string error;
  const auto offer = phoenix::parse_offer(req[http::field::sec_websocket_protocol], error);
  if (!answer && !offer) answer = refuse(http::status::bad_request, error);
  if (answer) {
    co_await context.answers.send(stream, *answer, Keep::close);
    co_return Keep::close;
  }
  std::string token = offer->token.value_or("");
  const auto header = req[http::field::authorization];
  if (token.empty() && header.size() > 7 && beast::iequals(header.substr(0, 7), "Bearer ")) {
    token = std::string(header.substr(7));
  }
  auto who = context.auth.authenticate(token);
  if (const auto* refused = std::get_if<AuthRefusal>(&who)) {
    Response refusal = context.answers.refusal(req, unauthorized(*refused));
    co_await context.answers.send(stream, refusal, Keep::close);
    co_return Keep::close;
  }
  // The socket takes the connection over; its own timeouts apply.
  stream.expires_never();
  const auto socket = std::make_shared<Socket>(
      context, std::move(stream), std::get<Caller>(std::move(who)),
      encoding != params.end() && (*encoding).value == "json" ? Encoding::json
                                                              : Encoding::protobuf);
  co_await socket->run(req, offer->phoenix);
  co_return Keep::close;
}

}  // namespace oasync::serve
