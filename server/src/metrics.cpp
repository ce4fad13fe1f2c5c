#include "metrics.hpp"

#include <fmt/format.h>

namespace oasync::serve {
namespace {

// A label value, escaped as the text format asks.
std::string label(const std::string& value) {
  std::string out;
  for (const char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

void family(std::string& out, const char* name, const char* type, const char* help) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

}  // namespace

void Metrics::count_stale(const std::string& reason) {
  std::lock_guard lock(mutex_);
  ++stale_[reason];
}

void Metrics::count_reset(const std::string& reason) {
  std::lock_guard lock(mutex_);
  ++resets_[reason];
}

void Metrics::count_auth_refused(const std::string& reason) {
  std::lock_guard lock(mutex_);
  ++auth_refused_[reason];
}

void Metrics::count_socket_closed(const std::string& reason) {
  std::lock_guard lock(mutex_);
  ++socket_closes_[reason];
}

void Metrics::add_subscriber(const std::string& topic, int delta) {
  std::lock_guard lock(mutex_);
  subscribers_[topic] += delta;
}

std::string Metrics::text() const {
  std::string out;
  family(out, "oasync_serve_connections", "gauge", "Open client connections.");
  out += fmt::format("oasync_serve_connections {}\n", connections.load());
  family(out, "oasync_serve_responses", "gauge", "Responses in progress, by mode.");
  out += fmt::format("oasync_serve_responses{{mode=\"catch_up\"}} {}\n", catch_up.load());
  out += fmt::format("oasync_serve_responses{{mode=\"long_poll\"}} {}\n", long_poll.load());
  out += fmt::format("oasync_serve_responses{{mode=\"sse\"}} {}\n", sse.load());
  family(out, "oasync_serve_connections_refused_total", "counter",
         "Connections refused at the connection limit.");
  out += fmt::format("oasync_serve_connections_refused_total {}\n", connections_refused.load());
  family(out, "oasync_serve_wakes_total", "counter", "Commits the hub woke up for.");
  out += fmt::format("oasync_serve_wakes_total {}\n", wakes.load());
  family(out, "oasync_serve_wake_queries_total", "counter",
         "Database queries the hub ran for wakes (positions, and one read per changed topic).");
  out += fmt::format("oasync_serve_wake_queries_total {}\n", wake_queries.load());
  family(out, "oasync_serve_request_queries_total", "counter",
         "Database queries run for single requests (catch-up, snapshots, docs).");
  out += fmt::format("oasync_serve_request_queries_total {}\n", request_queries.load());
  family(out, "oasync_serve_messages_total", "counter", "State Protocol messages delivered.");
  out += fmt::format("oasync_serve_messages_total {}\n", messages.load());
  family(out, "oasync_serve_delivery_lag_seconds", "gauge",
         "Latest delay between the hub reading a commit and starting its delivery.");
  out += fmt::format("oasync_serve_delivery_lag_seconds {:.6f}\n",
                     static_cast<double>(delivery_lag_us.load()) / 1e6);
  family(out, "oasync_serve_slow_subscribers_total", "counter",
         "Subscribers ended because a write to them took longer than send_timeout_seconds.");
  out += fmt::format("oasync_serve_slow_subscribers_total {}\n", slow_subscribers.load());
  family(out, "oasync_serve_budget_refused_total", "counter",
         "Requests answered 503 because the response budget had no room in time.");
  out += fmt::format("oasync_serve_budget_refused_total {}\n", budget_refused.load());
  family(out, "oasync_serve_response_bytes", "gauge",
         "Bytes of responses being built or written (the response budget in use).");
  out += fmt::format("oasync_serve_response_bytes {}\n", response_bytes.load());
  family(out, "oasync_serve_sockets", "gauge", "Open sync:v1 WebSockets.");
  out += fmt::format("oasync_serve_sockets {}\n", sockets.load());
  family(out, "oasync_serve_channels", "gauge", "Joined sync:v1 channels.");
  out += fmt::format("oasync_serve_channels {}\n", channels.load());
  family(out, "oasync_serve_socket_queued_bytes", "gauge",
         "Bytes queued for sync:v1 sockets and not yet written.");
  out += fmt::format("oasync_serve_socket_queued_bytes {}\n", socket_queued_bytes.load());
  std::lock_guard lock(mutex_);
  family(out, "oasync_serve_subscribers", "gauge", "Live subscribers, by topic.");
  for (const auto& [topic, n] : subscribers_) {
    out += fmt::format("oasync_serve_subscribers{{topic=\"{}\"}} {}\n", label(topic), n);
  }
  family(out, "oasync_serve_stale_total", "counter", "410 answers, by reason.");
  for (const auto& [reason, n] : stale_) {
    out += fmt::format("oasync_serve_stale_total{{reason=\"{}\"}} {}\n", label(reason), n);
  }
  family(out, "oasync_serve_resets_total", "counter", "Resets sent (on_stale=reset), by reason.");
  for (const auto& [reason, n] : resets_) {
    out += fmt::format("oasync_serve_resets_total{{reason=\"{}\"}} {}\n", label(reason), n);
  }
  family(out, "oasync_serve_auth_refused_total", "counter", "Refused tokens, by reason.");
  for (const auto& [reason, n] : auth_refused_) {
    out += fmt::format("oasync_serve_auth_refused_total{{reason=\"{}\"}} {}\n", label(reason), n);
  }
  family(out, "oasync_serve_sockets_closed_total", "counter",
         "sync:v1 sockets the server closed, by reason.");
  for (const auto& [reason, n] : socket_closes_) {
    out += fmt::format("oasync_serve_sockets_closed_total{{reason=\"{}\"}} {}\n", label(reason), n);
  }
  return out;
}

}  // namespace oasync::serve
