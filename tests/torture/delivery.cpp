#include "delivery.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "follower_check.hpp"
#include "process.hpp"
#include "recorder.hpp"
#include "tokens.hpp"

namespace oasync::test::delivery {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

const char* to_string(Sabotage s) {
  switch (s) {
    case Sabotage::none:
      return "none";
    case Sabotage::skip:
      return "skip";
    case Sabotage::leak:
      return "leak";
    case Sabotage::repeat:
      return "repeat";
    case Sabotage::channel_skip:
      return "channel-skip";
  }
  return "none";
}

serve::LimitsConfig torture_limits() {
  serve::LimitsConfig l;
  l.max_connections = 400;
  l.idle_timeout_seconds = 10;
  l.send_timeout_seconds = 4;
  l.long_poll_seconds = 3;
  l.sse_seconds = 7;
  l.page_events = 200;
  l.snapshot_page_docs = 10;
  l.live_buffer_events = 1000;
  l.db_pool = 3;
  l.revocation_poll_ms = 500;
  l.poll_ms = 250;
  l.drain_seconds = 3;
  l.page_bytes = 256 << 10;
  l.response_bytes = 8 << 20;
  l.live_buffer_bytes = 8 << 20;
  l.channel_idle_seconds = 10;
  l.channel_heartbeat_seconds = 2;
  l.socket_queue_bytes = 1 << 20;
  return l;
}

std::int64_t expected_peak_rss_bytes(const serve::LimitsConfig& limits, int followed_topics) {
  constexpr std::int64_t kBase = 48LL << 20;     // the process and its sessions, idle
  constexpr std::int64_t kMargin = 48LL << 20;   // allocator slack
  constexpr std::int64_t kRequestBytes = 16384;  // max_request_bytes, the default
  return kBase + 2 * limits.response_bytes + 3 * limits.live_buffer_bytes * followed_topics +
         3 * limits.db_pool * limits.page_bytes + 2 * kRequestBytes * limits.max_connections +
         kMargin;
}

namespace {

std::string tenant(int k) {
  return fmt::format("org:{}", k);
}

std::string hs256_token(const std::string& secret, const json& claims) {
  return test::hs256_token(secret, claims.dump());
}

int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    close(fd);
    throw std::runtime_error("no free port");
  }
  close(fd);
  return ntohs(a.sin_port);
}

// A connected socket to 127.0.0.1:port, or -1. A small receive buffer makes
// a client that never reads hold the server's writes soon.
int connect_to(int port, int receive_buffer = 0) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (receive_buffer > 0) {
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer);
  }
  // Never block the fault thread for long: a server that does not answer is
  // one of the things this run provokes.
  timeval timeout{2, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

bool exited(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/status", pid));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("State:", 0) == 0) return line.find('Z') != std::string::npos;
  }
  return true;
}

std::int64_t vm_hwm(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/status", pid));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  }
  return 0;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A sync:v1 WebSocket handshake for 127.0.0.1 offering `token` as phoenix's
// authToken (standard base64 without padding, in Sec-WebSocket-Protocol).
std::string socket_handshake(const std::string& token) {
  return fmt::format(
      "GET /sync/v1/socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
      "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
      "Sec-WebSocket-Protocol: phoenix, base64url.bearer.phx.{}\r\n\r\n",
      base64_unpadded(token));
}

// A client's WebSocket text frame holding `text`, masked (with a zero key,
// which leaves the bytes as they are).
std::string client_text_frame(const std::string& text) {
  std::string frame = "\x81";
  if (text.size() < 126) {
    frame += static_cast<char>(0x80 | text.size());
  } else {
    frame += static_cast<char>(0x80 | 126);
    frame += static_cast<char>((text.size() >> 8) & 0xff);
    frame += static_cast<char>(text.size() & 0xff);
  }
  frame += std::string(4, '\0');
  return frame + text;
}

}  // namespace

struct Delivery::Impl {
  Options options;
  Report report;
  Counts& counts;
  serve::LimitsConfig limits = torture_limits();
  std::string dir, secret, secret_file, config_file;
  int port = 0, proxy_port = 0;
  std::mutex server_mutex;
  std::unique_ptr<Child> server, proxy, followers;
  std::vector<FollowerSpec> specs;
  std::mt19937_64 rng;
  JournalRecorder recorder;
  std::atomic<bool> stop_recording{false};
  std::thread recording;

  Impl(Options o, Report r, Counts& c)
      : options(std::move(o)),
        report(std::move(r)),
        counts(c),
        rng(options.seed * 31 + 7),
        recorder(options.database_url, options.topics) {}

  std::string e2e_dir() const { return source_dir() + "/tests/e2e"; }

  void write_config() {
    config_file = dir + "/serve.yaml";
    std::ofstream(config_file) << fmt::format(
        "serve:\n  listen: 127.0.0.1\n  port: {}\n  auth:\n    algorithm: HS256\n"
        "    key_file: {}\n    leeway_seconds: 0\n  limits:\n"
        "    max_connections: {}\n    idle_timeout_seconds: {}\n    send_timeout_seconds: {}\n"
        "    long_poll_seconds: {}\n    sse_seconds: {}\n    page_events: {}\n"
        "    snapshot_page_docs: {}\n    live_buffer_events: {}\n    db_pool: {}\n"
        "    revocation_poll_ms: {}\n    poll_ms: {}\n    drain_seconds: {}\n"
        "    page_bytes: {}\n    response_bytes: {}\n    live_buffer_bytes: {}\n"
        "    channel_idle_seconds: {}\n    channel_heartbeat_seconds: {}\n"
        "    socket_queue_bytes: {}\n",
        port, secret_file, limits.max_connections, limits.idle_timeout_seconds,
        limits.send_timeout_seconds, limits.long_poll_seconds, limits.sse_seconds,
        limits.page_events, limits.snapshot_page_docs, limits.live_buffer_events, limits.db_pool,
        limits.revocation_poll_ms, limits.poll_ms, limits.drain_seconds, limits.page_bytes,
        limits.response_bytes, limits.live_buffer_bytes, limits.channel_idle_seconds,
        limits.channel_heartbeat_seconds, limits.socket_queue_bytes);
  }

  // Starts the server (again) and waits until it accepts; retried while
  // PostgreSQL restarts. REQUIRES: server_mutex held.
  void start_server() {
    for (int attempt = 0; attempt < 100; ++attempt) {
      server = std::make_unique<Child>(
          std::vector<std::string>{oasync_binary(), "--config", config_file, "--database-url",
                                   options.database_url, "serve"},
          std::map<std::string, std::string>{{"PGAPPNAME", "oasync-serve-torture"}});
      for (int i = 0; i < 200 && !exited(server->pid()); ++i) {
        if (const int fd = connect_to(port); fd >= 0) {
          close(fd);
          return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(25));
      }
      ++counts.server_start_retries;
      server.reset();
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    throw std::runtime_error("oasync serve did not start");
  }

  void sample_rss() {
    std::lock_guard lock(server_mutex);
    sample_rss_locked();
  }
  // REQUIRES: server_mutex held.
  void sample_rss_locked() {
    if (!server || exited(server->pid())) return;
    const std::int64_t rss = vm_hwm(server->pid());
    std::int64_t peak = counts.peak_rss.load();
    while (rss > peak && !counts.peak_rss.compare_exchange_weak(peak, rss)) {
    }
  }

  std::string token(int org, const json& topics, const std::string& session, int seconds = 60) {
    const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
    return hs256_token(secret, json{{"sub", "raw"},
                                    {"org_id", std::to_string(org)},
                                    {"session_id", session},
                                    {"scopes", topics},
                                    {"exp", now + seconds}});
  }

  std::string request(int topic, int org, const std::string& query) {
    const std::string& name = options.topics[static_cast<std::size_t>(topic)];
    return fmt::format(
        "GET /v1/topics/{}?{} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\r\n",
        name, query, token(org, json::array({name}), "raw-client"));
  }
};

Delivery::Delivery(Options options, Report report)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(report), counts_)) {}

Delivery::~Delivery() {
  impl_->stop_recording = true;
  if (impl_->recording.joinable()) impl_->recording.join();
  std::lock_guard lock(impl_->server_mutex);
  impl_->followers.reset();
  impl_->proxy.reset();
  impl_->server.reset();
  if (!impl_->dir.empty()) std::system(("rm -rf '" + impl_->dir + "'").c_str());
}

void Delivery::start() {
  Impl& d = *impl_;
  if (std::ifstream(d.e2e_dir() + "/node_modules/@durable-streams/client/package.json").fail()) {
    throw std::runtime_error("tests/e2e/node_modules is missing: run scripts/setup (npm ci)");
  }
  char dir[] = "/tmp/oasync-delivery.XXXXXX";
  if (mkdtemp(dir) == nullptr) throw std::runtime_error("mkdtemp failed");
  d.dir = dir;
  std::string secret;
  for (int i = 0; i < 64; ++i) secret += "0123456789abcdef"[d.rng() % 16];
  d.secret = secret;
  d.secret_file = d.dir + "/secret";
  std::ofstream(d.secret_file) << secret << "\n";
  d.port = free_port();
  d.write_config();
  d.recording = std::thread([&d] { d.recorder.run(d.stop_recording); });
  counts_.expected_rss =
      expected_peak_rss_bytes(d.limits, static_cast<int>(d.options.topics.size()));
  {
    std::lock_guard lock(d.server_mutex);
    d.start_server();
  }

  // The proxy: damages one response of follower "p0" (tenant 0, topic 0,
  // long-poll) when a sabotage asks.
  const std::string proxy_config = d.dir + "/proxy.json";
  std::ofstream(proxy_config) << json{
      {"upstreamPort", d.port},
      {"mode",
       d.options.sabotage == Sabotage::channel_skip ? "none" : to_string(d.options.sabotage)},
      {"target", "p0"},
      {"armAfterMs", 1500},
      {"logFile",
       d.dir + "/sabotage.log"}}.dump();
  d.proxy = std::make_unique<Child>(
      std::vector<std::string>{"node", d.e2e_dir() + "/torture-proxy.mjs", proxy_config});
  std::string line;
  if (!d.proxy->read_line(line, 20000) || line.rfind("listening on ", 0) != 0) {
    throw std::runtime_error("the sabotaging proxy did not start: " + d.proxy->stderr_text());
  }
  d.proxy_port = std::stoi(line.substr(13));

  // One direct follower per topic and tenant, long-poll or SSE, some with
  // on_stale=reset; and one per tenant on topic 0 through the proxy.
  const int topics = static_cast<int>(d.options.topics.size());
  for (int t = 0; t < topics; ++t) {
    for (int k = 0; k < d.options.tenants; ++k) {
      FollowerSpec f;
      f.name = fmt::format("f{}{}", t, k);
      f.topic = t;
      f.org = k;
      f.live = (t + k) % 2 == 0 ? "long-poll" : "sse";
      f.on_stale = (t * d.options.tenants + k) % 3 == 1 ? "reset" : "report";
      d.specs.push_back(f);
    }
  }
  for (int k = 0; k < d.options.tenants; ++k) {
    FollowerSpec f;
    f.name = fmt::format("p{}", k);
    f.topic = 0;
    f.org = k;
    f.live = "long-poll";
    f.on_stale = "report";
    f.proxied = true;
    d.specs.push_back(f);
  }
  // sync:v1 sockets: one per tenant with a channel per topic (protobuf), and
  // one more for tenant 1 with encoding=json.
  for (int s = 0; s <= d.options.tenants; ++s) {
    const bool json_socket = s == d.options.tenants;
    for (int t = 0; t < topics; ++t) {
      FollowerSpec f;
      f.org = json_socket ? 1 % d.options.tenants : s;
      f.socket = json_socket ? "cj" : fmt::format("c{}", s);
      f.name = fmt::format("{}.{}", f.socket, t);
      f.topic = t;
      f.live = "channel";
      f.encoding = json_socket ? "json" : "protobuf";
      d.specs.push_back(f);
    }
  }
  json followers = json::array();
  for (FollowerSpec& f : d.specs) {
    f.out = d.dir + "/" + f.name + ".ndjson";
    f.session_file = d.dir + "/" + (f.channel() ? f.socket : f.name) + ".session";
    const std::string& topic = d.options.topics[static_cast<std::size_t>(f.topic)];
    json spec = {{"name", f.name},         {"topic", topic}, {"org", f.org},
                 {"live", f.live},         {"out", f.out},   {"sessionFile", f.session_file},
                 {"tokenSeconds", {3, 12}}};
    if (f.channel()) {
      spec["url"] = fmt::format("ws://127.0.0.1:{}/sync/v1/socket", d.port);
      spec["socket"] = f.socket;
      spec["encoding"] = f.encoding;
    } else {
      spec["url"] = f.proxied ? fmt::format("http://127.0.0.1:{}/{}/v1/topics/{}", d.proxy_port,
                                            f.name, topic)
                              : fmt::format("http://127.0.0.1:{}/v1/topics/{}", d.port, topic);
      spec["onStale"] = f.on_stale;
    }
    followers.push_back(std::move(spec));
  }
  const std::string follower_config = d.dir + "/followers.json";
  json follower_settings = {{"secretFile", d.secret_file}, {"followers", followers}};
  if (d.options.sabotage == Sabotage::channel_skip) {
    // Tenant 0's channel of topic 0 (not the pointer topic, where an upsert
    // may be missing).
    follower_settings["sabotage"] = {
        {"target", "c0.0"}, {"armAfterMs", 1500}, {"logFile", d.dir + "/sabotage.log"}};
  }
  std::ofstream(follower_config) << follower_settings.dump();
  d.followers = std::make_unique<Child>(
      std::vector<std::string>{"node", d.e2e_dir() + "/torture-follower.mjs", follower_config});
}

void Delivery::run_faults(const std::atomic<bool>& stop) {
  Impl& d = *impl_;
  struct Held {
    int fd;
    Clock::time_point until;
  };
  std::vector<Held> held;
  const auto pause = [&](int ms) {
    for (int slept = 0; slept < ms && !stop; slept += 50) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      if (slept % 200 == 0) d.sample_rss();
    }
    return !stop;
  };
  const auto restart = [&](int signal) {
    std::lock_guard lock(d.server_mutex);
    d.sample_rss_locked();
    d.server->kill(signal);
    if (signal == SIGTERM) {
      // A drain ends within drain_seconds (and a little).
      const auto deadline = Clock::now() + std::chrono::seconds(d.limits.drain_seconds + 5);
      while (!exited(d.server->pid()) && Clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      if (!exited(d.server->pid())) {
        d.report(fmt::format("oasync serve did not exit within {} s of SIGTERM",
                             d.limits.drain_seconds + 5),
                 Finding::delivery);
        d.server->kill(SIGKILL);
      } else if (const int code = d.server->wait(); code != 0) {
        d.report(fmt::format("oasync serve exited {} after SIGTERM: {}", code,
                             d.server->stderr_text().substr(0, 400)),
                 Finding::delivery);
      }
    }
    d.server->wait();
    d.start_server();
  };
  // A repeat needs a restart early, while the proxy is armed.
  bool first = d.options.sabotage == Sabotage::repeat;
  pause(first ? 2500 : 1000);
  while (!stop) {
    const int topics = static_cast<int>(d.options.topics.size());
    const int pick = first ? 0 : static_cast<int>(d.rng() % 100);
    first = false;
    try {
      if (pick < 10) {
        restart(SIGKILL);
        ++counts_.server_kills;
      } else if (pick < 16) {
        restart(SIGTERM);
        ++counts_.server_drains;
      } else if (pick < 30) {
        // The hub: the serve session that runs the hub's own statements
        // (topic positions, revoked sessions). It may be between them.
        bool found = false;
        for (int i = 0; i < 40 && !found && !stop; ++i) {
          pqxx::connection conn(d.options.database_url);
          pqxx::nontransaction tx(conn);
          const auto r = tx.exec(
              "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = "
              "'oasync-serve-torture' AND (query LIKE '%ORDER BY t.topic COLLATE%' OR query LIKE "
              "'%FROM oasync.revoked_sessions%' OR query LIKE 'LISTEN%')");
          found = !r.empty();
          if (!found) std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        ++(found ? counts_.hub_terminations : counts_.hub_not_found);
      } else if (pick < 50) {
        const FollowerSpec& f = d.specs[d.rng() % d.specs.size()];
        const std::string session = slurp(f.session_file);
        if (!session.empty()) {
          const ProcessResult r =
              run_oasync({"--database-url", d.options.database_url, "sessions", "revoke", session});
          if (r.exit_code == 0) ++counts_.revocations;
        }
      } else if (pick < 68) {
        // Sockets that join every topic and never read: their snapshots and
        // updates wait in the socket's queue until the server ends them as
        // slow consumers (or they are closed).
        for (int i = 0; i < 2; ++i) {
          const int fd = connect_to(d.port, 4096);
          if (fd < 0) continue;
          const int k = static_cast<int>(d.rng() % static_cast<std::uint64_t>(d.options.tenants));
          const std::string hello =
              socket_handshake(d.token(k, json(d.options.topics), "raw-socket"));
          char head[1024];
          if (::send(fd, hello.data(), hello.size(), MSG_NOSIGNAL) < 0 ||
              ::recv(fd, head, sizeof head, 0) <= 0) {
            close(fd);
            continue;
          }
          std::string joins;
          for (int t = 0; t < topics; ++t) {
            joins += client_text_frame(
                json::array({std::to_string(t + 1), std::to_string(t + 1),
                             "sync:v1:" + d.options.topics[static_cast<std::size_t>(t)], "phx_join",
                             json::object()})
                    .dump());
          }
          (void)::send(fd, joins.data(), joins.size(), MSG_NOSIGNAL);
          held.push_back({fd, Clock::now() + std::chrono::milliseconds(2000 + d.rng() % 8000)});
          ++counts_.slow_sockets;
        }
      } else if (pick < 75) {
        // Clients that send a request and never read: SSE and catch-ups.
        for (int i = 0; i < 4; ++i) {
          const int fd = connect_to(d.port, 4096);
          if (fd < 0) continue;
          const int t = static_cast<int>(d.rng() % static_cast<std::uint64_t>(topics));
          const int k = static_cast<int>(d.rng() % static_cast<std::uint64_t>(d.options.tenants));
          const std::string req = d.request(t, k, i % 2 == 0 ? "offset=-1&live=sse" : "offset=-1");
          if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) < 0) {
            close(fd);
            continue;
          }
          held.push_back({fd, Clock::now() + std::chrono::milliseconds(2000 + d.rng() % 8000)});
          ++counts_.slow_clients;
        }
      } else {
        // Clients that disconnect mid-response.
        for (int i = 0; i < 3; ++i) {
          const int fd = connect_to(d.port);
          if (fd < 0) continue;
          const int t = static_cast<int>(d.rng() % static_cast<std::uint64_t>(topics));
          const int k = static_cast<int>(d.rng() % static_cast<std::uint64_t>(d.options.tenants));
          const std::string req = d.request(t, k, i == 0 ? "offset=-1&live=sse" : "offset=-1");
          if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) >= 0) {
            char buf[64];
            (void)::recv(fd, buf, sizeof buf, 0);
            ++counts_.cut_clients;
          }
          linger l{1, 0};  // a reset, not a clean close
          setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
          close(fd);
        }
      }
    } catch (const std::exception&) {
      // PostgreSQL is restarting, or the backend was terminated: next round.
    }
    const auto now = Clock::now();
    held.erase(std::remove_if(held.begin(), held.end(),
                              [&](const Held& h) {
                                if (h.until > now) return false;
                                close(h.fd);
                                return true;
                              }),
               held.end());
    pause(300 + static_cast<int>(d.rng() % 1200));
  }
  for (const Held& h : held) close(h.fd);
  std::lock_guard lock(d.server_mutex);
  d.sample_rss_locked();
  if (!d.server || exited(d.server->pid())) d.start_server();
}

void Delivery::finish(const std::map<std::string, Head>& heads, int timeout_seconds) {
  Impl& d = *impl_;
  std::string lines;
  for (const auto& [topic, at] : heads) {
    lines += fmt::format("finish {} {} {} {}\n", topic, at.epoch_counter, at.head, at.epoch);
  }
  d.followers->write(lines);
  for (int i = 0; i < timeout_seconds * 10 && !exited(d.followers->pid()); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (i % 5 == 0) d.sample_rss();
  }
  if (!exited(d.followers->pid())) {
    d.report(
        fmt::format("the followers did not catch up with the heads within {} s", timeout_seconds),
        Finding::delivery);
    d.followers->kill(SIGKILL);
  }
  if (const int code = d.followers->wait(); code != 0) {
    d.report(
        fmt::format("the followers exited {}: {}", code, d.followers->stderr_text().substr(0, 600)),
        Finding::delivery);
  }
  d.sample_rss();
}

std::string Delivery::sabotage_done() const {
  std::string s = slurp(impl_->dir + "/sabotage.log");
  while (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

void Delivery::check(const std::vector<TopicJournal>& journals) {
  Impl& d = *impl_;
  std::map<std::pair<int, int>, std::map<std::string, json>> snapshots;  // (topic, org) -> docs
  const auto snapshot_of = [&](int t, int org) -> const std::map<std::string, json>& {
    auto& docs = snapshots[{t, org}];
    if (!docs.empty()) return docs;
    const ProcessResult r =
        run_oasync({"--database-url", d.options.database_url, "snapshot",
                    d.options.topics[static_cast<std::size_t>(t)], "--scope", tenant(org)});
    std::istringstream in(r.out);
    std::string line;
    while (std::getline(in, line)) {
      const json m = json::parse(line, nullptr, false);
      if (m.is_object() && m.contains("doc_key") && !m.value("deleted", false)) {
        docs[m["doc_key"].get<std::string>()] = m;
      }
    }
    return docs;
  };

  d.stop_recording = true;
  if (d.recording.joinable()) d.recording.join();
  std::vector<TopicJournal> merged;
  for (std::size_t t = 0; t < journals.size(); ++t) {
    d.recorder.set_final(t, journals[t].floor, journals[t].head);
    merged.push_back(d.recorder.merged(t, journals[t]));
  }
  counts_.recorder_missed = d.recorder.missed();
  for (const FollowerSpec& f : d.specs) {
    const TopicJournal& j = merged[static_cast<std::size_t>(f.topic)];
    const bool pointer = f.topic == d.options.pointer_topic;
    const std::string scope = tenant(f.org);
    const std::string who = fmt::format("follower {} ({}, {}, {}{}{})", f.name, j.topic, scope,
                                        f.live, f.on_stale == "reset" ? ", on_stale=reset" : "",
                                        f.proxied ? ", via the proxy" : "");
    std::uint64_t problems = 0;
    check_follower(
        {f, j, pointer, d.recorder, counts_,
         [&]() -> const std::map<std::string, json>& { return snapshot_of(f.topic, f.org); },
         [&](const std::string& what, Finding kind) {
           if (++problems <= 5) d.report(who + ": " + what, kind);
         }});
    if (problems > 5)
      d.report(fmt::format("{}: {} problems in all", who, problems), Finding::delivery);
  }
  const std::int64_t peak = counts_.peak_rss.load();
  if (peak > counts_.expected_rss) {
    d.report(fmt::format("oasync serve's peak RSS {} MiB is above the expected {} MiB", peak >> 20,
                         counts_.expected_rss >> 20),
             Finding::delivery);
  }
}

}  // namespace oasync::test::delivery
