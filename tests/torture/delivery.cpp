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

#include "process.hpp"
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

// A journal offset (server/src/offset.hpp): epoch counter and watermark;
// nullopt for snapshot offsets and "-1".
struct JournalOffset {
  std::int64_t epoch = 0;
  std::int64_t watermark = 0;
};
std::optional<JournalOffset> journal_offset(const std::string& o) {
  if (o.size() != 16 + 1 + 20 + 2 || o[16] != '_' || o[37] != '_' || o[38] != 'j') {
    return std::nullopt;
  }
  try {
    return JournalOffset{std::stoll(o.substr(0, 16)), std::stoll(o.substr(17, 20))};
  } catch (const std::exception&) {
    return std::nullopt;
  }
}
// A snapshot offset's head.
std::optional<std::int64_t> snapshot_head(const std::string& o) {
  if (o.size() < 40 || o[16] != '_' || o[37] != '_' || o[38] != 'i') return std::nullopt;
  try {
    return std::stoll(o.substr(17, 20));
  } catch (const std::exception&) {
    return std::nullopt;
  }
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

struct FollowerSpec {
  std::string name;
  int topic = 0;
  int org = 0;
  std::string live;      // long-poll, sse, or channel (a sync:v1 channel)
  std::string on_stale;  // reset or report (Durable Streams)
  bool proxied = false;
  std::string socket;    // a channel's socket, shared by its tenant's topics
  std::string encoding;  // a channel socket's: protobuf or json
  std::string out, session_file;
  bool channel() const { return live == "channel"; }
};

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

// Reads each data topic's new events every 100 ms, before purge removes
// them (it keeps the last 2 s), so that responses far below the final floor
// are checked too. A range purged before it was read is a gap: responses
// that overlap it are not compared. It also notes each epoch it sees with its
// counter: a channel's positions name the epoch, offsets its counter.
class JournalRecorder {
 public:
  JournalRecorder(std::string url, std::vector<std::string> topics)
      : url_(std::move(url)),
        topics_(std::move(topics)),
        journals_(topics_.size()),
        gaps_(topics_.size()),
        epochs_(topics_.size()) {}

  void run(const std::atomic<bool>& stop) {
    while (!stop) {
      poll();
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    poll();
  }

  // The recorded events, with the final journal's added.
  TopicJournal merged(std::size_t t, const TopicJournal& final_journal) {
    std::lock_guard lock(mutex_);
    TopicJournal out = final_journal;
    for (const auto& [w, e] : journals_[t]) out.events.emplace(w, e);
    return out;
  }
  bool covers(std::size_t t, std::int64_t after, std::int64_t through) {
    std::lock_guard lock(mutex_);
    for (const auto& [lo, hi] : gaps_[t]) {
      if (lo <= through && hi > after) return false;
    }
    return through <= std::max(read_through_[t], final_through_[t]);
  }
  void set_final(std::size_t t, std::int64_t floor, std::int64_t head) {
    std::lock_guard lock(mutex_);
    // What the recorder missed below the final floor is a gap too.
    if (read_through_[t] < floor) gaps_[t].push_back({read_through_[t] + 1, floor});
    final_through_[t] = head;
  }
  // The counter of an epoch of topic t, if it was seen.
  std::optional<std::int64_t> epoch_counter(std::size_t t, const std::string& epoch) const {
    std::lock_guard lock(mutex_);
    const auto it = epochs_[t].find(epoch);
    return it == epochs_[t].end() ? std::nullopt : std::optional<std::int64_t>(it->second);
  }
  std::int64_t missed() const {
    std::lock_guard lock(mutex_);
    std::int64_t n = 0;
    for (const auto& g : gaps_)
      for (const auto& [lo, hi] : g) n += hi - lo + 1;
    return n;
  }

 private:
  void poll() {
    try {
      pqxx::connection conn(url_);
      pqxx::nontransaction tx(conn);
      for (std::size_t t = 0; t < topics_.size(); ++t) {
        const pqxx::result epoch = tx.exec_params(
            "SELECT epoch::text, epoch_counter FROM oasync.topics WHERE topic = $1", topics_[t]);
        if (!epoch.empty()) {
          std::lock_guard lock(mutex_);
          epochs_[t][epoch[0][0].as<std::string>()] = epoch[0][1].as<std::int64_t>();
        }
        std::int64_t last = read_through_[t];
        for (;;) {
          const pqxx::result rows = tx.exec_params(
              "SELECT watermark, doc_key, doc_version, op = 'delete', scope, previous_scope, "
              "(SELECT purged_through FROM oasync.topics WHERE topic = $1) FROM oasync.events "
              "WHERE topic = $1 AND watermark > $2 ORDER BY watermark LIMIT 5000",
              topics_[t], last);
          if (rows.empty()) break;
          std::lock_guard lock(mutex_);
          for (const auto& row : rows) {
            const std::int64_t w = row[0].as<std::int64_t>();
            if (w != last + 1) gaps_[t].push_back({last + 1, w - 1});
            JournalEvent e;
            e.doc_key = row[1].as<std::string>();
            e.version = row[2].as<std::int64_t>();
            e.deleted = row[3].as<bool>();
            e.scope = row[4].as<std::string>();
            if (!row[5].is_null()) e.previous_scope = row[5].as<std::string>();
            journals_[t].emplace(w, std::move(e));
            last = w;
          }
          read_through_[t] = last;
          if (rows.size() < 5000) break;
        }
      }
    } catch (const std::exception&) {
      // PostgreSQL restarting: the next poll reads on.
    }
  }

  std::string url_;
  std::vector<std::string> topics_;
  mutable std::mutex mutex_;
  std::vector<std::map<std::int64_t, JournalEvent>> journals_;
  std::vector<std::vector<std::pair<std::int64_t, std::int64_t>>> gaps_;
  std::map<std::size_t, std::int64_t> read_through_, final_through_;
  std::vector<std::map<std::string, std::int64_t>> epochs_;  // epoch -> counter, per topic
};

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

namespace {

// One change message as a follower recorded it.
struct Message {
  std::string key, op;
  std::optional<std::int64_t> version;
  std::optional<std::string> sc;
  std::string control;  // set for a control message
};

Message parse_message(const json& m) {
  Message out;
  if (m.size() == 1) {
    out.control = m[0].get<std::string>().substr(1);
    return out;
  }
  out.key = m[0].is_string() ? m[0].get<std::string>() : "";
  out.op = m[1].is_string() ? m[1].get<std::string>() : "";
  if (m[2].is_number_integer()) out.version = m[2].get<std::int64_t>();
  if (m[3].is_string()) out.sc = m[3].get<std::string>();
  return out;
}

// The tenant's view of (after, through]: (key, operation, version) as the
// server maps events (server/src/view.cpp), with whether the message may be
// missing (a pointer topic's upsert whose doc had left the scope when read).
struct Expected {
  std::string key, op;
  std::int64_t version = 0;
  bool may_skip = false;
};
std::vector<Expected> view_of(const TopicJournal& j, const std::string& scope, bool pointer,
                              std::int64_t after, std::int64_t through) {
  std::vector<Expected> out;
  for (auto it = j.events.upper_bound(after); it != j.events.end() && it->first <= through; ++it) {
    const JournalEvent& e = it->second;
    if (e.scope == scope) {
      if (e.deleted) {
        out.push_back({e.doc_key, "delete", e.version, false});
      } else {
        const bool entered = e.previous_scope && *e.previous_scope != scope;
        out.push_back(
            {e.doc_key, e.version == 1 || entered ? "insert" : "update", e.version, pointer});
      }
    } else if (!e.deleted && e.previous_scope && *e.previous_scope == scope) {
      out.push_back({e.doc_key, "delete", e.version, false});
    }
  }
  return out;
}

// Whether a received operation is the view's: a channel's update says
// "upsert" for both an insert and an update.
bool same_operation(const std::string& want, const std::string& got) {
  return want == got || (got == "upsert" && (want == "insert" || want == "update"));
}

// Whether the versions of `key` strictly between `from` and `to` can have been
// withheld from `scope`'s view of a pointer topic: each of them that the
// journal retained is an upsert of `scope`, and a later version (after `to`,
// which `scope` received) took the doc out of `scope`, as a withheld upsert's
// read requires. A version the journal no longer holds cannot be judged and
// passes; the response's own check against the journal covers what it can.
bool withheld_between(const TopicJournal& j, const std::string& scope, const std::string& key,
                      std::int64_t from, std::int64_t to) {
  if (to <= from + 1) return false;
  bool left_later = false;
  for (const auto& [watermark, e] : j.events) {
    if (e.doc_key != key || e.version <= from) continue;
    const bool in_scope = !e.deleted && e.scope == scope;
    if (e.version < to && !in_scope) return false;
    if (e.version > to && !in_scope) left_later = true;
  }
  return left_later;
}

}  // namespace

void Delivery::check(const std::vector<TopicJournal>& journals) {
  Impl& d = *impl_;
  const auto channel_offset = [&](std::size_t t, const json& position) -> std::string {
    const auto counter = d.recorder.epoch_counter(t, position.value("e", ""));
    std::int64_t watermark = 0;
    try {
      watermark = std::stoll(position.value("w", ""));
    } catch (const std::exception&) {
      return "";
    }
    if (!counter) return "";
    return fmt::format("{:016}_{:020}_j", *counter, watermark);
  };
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
    std::ifstream in(f.out);
    std::string text;
    std::uint64_t problems = 0;
    const auto problem = [&](const std::string& what, Finding kind = Finding::delivery) {
      if (++problems <= 5) d.report(who + ": " + what, kind);
    };
    struct DocSeen {
      std::int64_t version;
      bool deleted;
    };
    std::map<std::string, DocSeen> docs;
    std::string last_offset = "-1";
    bool resyncing = false;  // a 410 or a reset, until its snapshot ends
    // The epoch and floor the last 410 named: a resync may go stale again
    // only when one of them moved (an epoch reset or a purge during its
    // snapshot), never in a loop with nothing changed.
    std::string stale_epoch;
    std::optional<std::int64_t> stale_floor;
    bool got_final = false;
    int line_number = 0;
    while (std::getline(in, text)) {
      ++line_number;
      json line = json::parse(text, nullptr, false);
      if (!line.is_object()) {
        problem(fmt::format("line {} is not JSON", line_number));
        continue;
      }
      if (f.channel()) {
        // A channel's positions as offsets: "" when the epoch was never seen.
        bool unmapped = false;
        for (const char* field : {"f", "o"}) {
          if (line.contains(field) && line[field].is_object()) {
            line[field] = channel_offset(static_cast<std::size_t>(f.topic), line[field]);
            unmapped = unmapped || line[field] == "";
          }
        }
        if (unmapped) ++counts_.unmapped_epochs;
      }
      const std::string k = line.value("k", "");
      if (k == "bad") {
        problem(line.value("msg", ""));
        continue;
      }
      if (k == "s") {
        ++counts_.sessions;
        if (f.channel()) ++counts_.channel_joins;
        if (line.value("o", "") == "-1") docs.clear();
        continue;
      }
      if (k == "e") {
        const int status = line.value("status", 0);
        if (status == 401) {
          ++counts_.refused_tokens;
        } else if (status == 410) {
          ++counts_.stale_410;
          if (f.channel()) ++counts_.channel_stale;
          const std::string reason = line.value("reason", "");
          const auto num = [&](const char* field) -> std::optional<std::int64_t> {
            try {
              return std::stoll(line.value(field, ""));
            } catch (const std::exception&) {
              return std::nullopt;
            }
          };
          const auto floor = num("floor"), head = num("head");
          const std::string epoch = line.value("epoch", "");
          if (resyncing && epoch == stale_epoch && floor <= stale_floor) {
            problem(fmt::format(
                "went stale again (floor {}, epoch {}) before its resync reached the snapshot's "
                "end, with nothing changed since the last 410",
                floor.value_or(-1), epoch));
          }
          resyncing = true;
          stale_epoch = epoch;
          stale_floor = floor;
          const std::string at = line.value("o", "");
          const auto jo = journal_offset(at);
          if (!floor || !head || line.value("epoch", "").empty()) {
            problem(fmt::format("a 410 at {} without Oasync-Floor/Head/Epoch", at));
          } else if (*floor > *head || *floor > j.floor || *head > j.head) {
            problem(
                fmt::format("a 410 at {} names floor {} and head {}; the final floor and head "
                            "are {} and {}",
                            at, *floor, *head, j.floor, j.head));
          } else if (reason == "cursor_ahead") {
            problem(fmt::format("a 410 cursor_ahead at {} (head {}), an offset the server gave", at,
                                *head));
          } else if (reason == "retention_floor_breach") {
            const std::optional<std::int64_t> w =
                jo ? std::optional<std::int64_t>(jo->watermark) : snapshot_head(at);
            if (w && *w >= *floor && jo) {
              problem(
                  fmt::format("a 410 retention_floor_breach at watermark {}, not below the "
                              "floor {} it names",
                              *w, *floor));
            }
          } else if (reason == "epoch_changed") {
            if (jo && jo->epoch >= j.epoch_counter) {
              problem(fmt::format("a 410 epoch_changed at {}, in the topic's last epoch ({})", at,
                                  j.epoch_counter));
            }
          } else {
            problem(fmt::format("a 410 with reason \"{}\"", reason));
          }
        } else if (status == 403) {
          problem("refused with 403 (its token names the topic)");
        }
        continue;
      }
      if (k == "final") {
        got_final = true;
        const auto& expected = snapshot_of(f.topic, f.org);
        const json& state = line["state"];
        std::uint64_t missing = 0, extra = 0, different = 0;
        std::string example;
        for (const auto& [key, doc] : expected) {
          if (!state.contains(key)) {
            ++missing;
            if (example.empty()) example = key + " missing";
          } else if (state[key][0] != doc["doc_version"] || state[key][1] != doc["payload"]) {
            ++different;
            if (example.empty()) {
              example = fmt::format("{}: v{} {} here, v{} {} in the snapshot", key,
                                    state[key][0].dump(), state[key][1].dump(),
                                    doc["doc_version"].dump(), doc["payload"].dump());
            }
          }
        }
        for (const auto& [key, v] : state.items()) {
          if (expected.count(key) == 0) {
            ++extra;
            if (example.empty()) example = key + " not in the snapshot";
          }
        }
        if (missing + extra + different != 0) {
          problem(
              fmt::format("its final state ({} docs at {}) differs from oasync snapshot "
                          "--scope {} ({} docs): {} missing, {} extra, {} different ({})",
                          state.size(), line.value("o", ""), scope, expected.size(), missing, extra,
                          different, example));
        }
        continue;
      }
      if (k != "b") continue;
      ++counts_.responses;
      if (f.channel()) ++counts_.channel_batches;
      const std::string from = line.value("f", ""), to = line.value("o", "");
      // ("": a channel position of an epoch the recorder never saw.)
      const bool known = !from.empty() && !to.empty() && !last_offset.empty();
      if (known && from != "-1" && (to < from || (to == from && !line["m"].empty()))) {
        problem(fmt::format("offset went from {} to {}", from, to));
      }
      if (known && from != last_offset && from != "-1") {
        problem(fmt::format("a response from {} after the offset {}", from, last_offset));
      }
      last_offset = to;
      std::vector<Message> messages;
      bool controls = false;
      for (const json& m : line["m"]) messages.push_back(parse_message(m));
      for (const Message& m : messages) {
        if (!m.control.empty()) {
          controls = true;
          if (m.control == "reset") {
            ++counts_.resets;
            if (resyncing && f.on_stale == "reset") {
              problem("a second reset before the first resync's snapshot ended");
            }
            resyncing = true;
            docs.clear();
          } else if (m.control == "snapshot-start") {
            docs.clear();
          } else if (m.control == "snapshot-end") {
            resyncing = false;
          }
          continue;
        }
        ++counts_.messages;
        if (m.sc && *m.sc != scope) {
          problem(fmt::format("received {} with a payload of {}", m.key, *m.sc),
                  Finding::scope_leak);
        }
        if (m.op != "delete" && !m.sc) {
          problem(fmt::format("an {} of {} without a payload", m.op, m.key));
        }
        if (!m.version) {
          problem(fmt::format("a change of {} without headers.version", m.key));
          continue;
        }
        const auto it = docs.find(m.key);
        if (it != docs.end()) {
          const DocSeen prev = it->second;
          // A pointer topic's upsert is withheld when its doc had left the scope
          // when it was read, so the versions between may be missing, but only
          // if each of them is such an upsert of this scope.
          const bool jump_allowed =
              prev.deleted || (pointer && m.op == "delete") ||
              (pointer && withheld_between(j, scope, m.key, prev.version, *m.version));
          if (jump_allowed ? *m.version <= prev.version : *m.version != prev.version + 1) {
            problem(fmt::format("{} v{} ({}) after v{}{} (response {} .. {})", m.key, *m.version,
                                m.op, prev.version, prev.deleted ? " (deleted)" : "", from, to));
          }
        }
        docs[m.key] = DocSeen{*m.version, m.op == "delete"};
      }
      // The response against the journal: exactly the view of (W1, W2].
      const auto jf = journal_offset(from), jt = journal_offset(to);
      if (controls || !jf || !jt ||
          !d.recorder.covers(static_cast<std::size_t>(f.topic), jf->watermark, jt->watermark)) {
        ++counts_.unchecked_responses;
        continue;
      }
      const std::vector<Expected> expected =
          view_of(j, scope, pointer, jf->watermark, std::min(jt->watermark, j.head));
      std::size_t e = 0, m = 0;
      while (m < messages.size()) {
        const Message& got = messages[m];
        while (e < expected.size() && expected[e].may_skip &&
               (expected[e].key != got.key || expected[e].version != got.version.value_or(-1))) {
          ++e;
          ++counts_.pointer_skips;
        }
        if (e == expected.size()) {
          problem(fmt::format("{} ({} v{}) in the response {} .. {} is not in its view there",
                              got.key, got.op, got.version.value_or(-1), from, to),
                  got.sc && *got.sc != scope ? Finding::scope_leak : Finding::delivery);
          break;
        }
        const Expected& want = expected[e];
        if (want.key != got.key || !same_operation(want.op, got.op) ||
            want.version != got.version.value_or(-1)) {
          problem(fmt::format("the response {} .. {} has {} {} v{} where the view has {} {} v{}",
                              from, to, got.op, got.key, got.version.value_or(-1), want.op,
                              want.key, want.version));
          break;
        }
        ++counts_.deliveries_checked;
        ++e;
        ++m;
      }
      if (m == messages.size()) {
        for (; e < expected.size(); ++e) {
          if (!expected[e].may_skip) {
            problem(fmt::format("the response {} .. {} misses {} {} v{} of its view", from, to,
                                expected[e].op, expected[e].key, expected[e].version));
            break;
          }
          ++counts_.pointer_skips;
        }
      }
    }
    if (!got_final) problem("wrote no final state (it did not reach the head)");
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
