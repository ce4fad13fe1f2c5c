// The benchmark driver behind scripts/bench. Every scenario runs with its
// baseline in the same invocation, on the same throwaway Postgres, and is
// reported as a ratio: absolute times drift between runs on shared machines,
// ratios hold. Not a test: CI runs only `scripts/bench --quick` as a smoke test.
//
//   oasync_bench [--quick] [--scenario NAME] [--json FILE]
//
// The oasync serve scenarios (serve, channel) run thousands of clients from
// one thread (swarm.hpp): SSE streams and sync:v1 WebSockets, timed alike.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <numeric>
#include <random>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "oasync/canonical_json.hpp"
#include "oasync/migrate.hpp"
#include "oasync/sink.hpp"
#include "oasync/wire.hpp"
#include "process.hpp"
#include "swarm.hpp"
#include "test_db.hpp"
#include "tokens.hpp"

using namespace oasync;
using namespace oasync::test;
using oasync::bench::Commits;
using oasync::bench::Swarm;
using oasync::bench::Transport;
using Clock = std::chrono::steady_clock;

namespace {

const char* const kTopics[] = {"runtime.run_summaries", "runtime.codex_worker_summaries",
                               "runtime.notifications", "runtime.codex_worker_events"};
const char* const kPrefixes[] = {
    "run_summary:", "codex_worker_summary:", "notification:", "codex_worker_event:"};

struct Sizes {
  std::int64_t ingest = 1000000;
  std::int64_t docs = 100000;
  std::int64_t ndjson = 300000;  // the projector's shape: 3 writes per doc
  std::int64_t single = 2000;
  std::int64_t group = 20000;
  std::int64_t hot = 200000;
  std::int64_t fresh = 60000;  // writes per round of the fresh-database scenario
  std::int64_t replay = 1000000;
  int live_seconds = 30;
  int live_rate = 5000;
  std::int64_t purge = 1000000;
  int subscribers = 10000;  // oasync serve: connections of the fan-out scenarios
  int tenants = 1000;
  int serve_seconds = 20;
  int serve_rate = 1000;  // writes a second of the tenants scenarios (serve, channel)
  std::int64_t catch_up = 1000000;
};

struct Row {
  std::string scenario;
  std::string ours;
  std::string baseline;
  double ratio = 0;  // 0: no ratio (reported figures only)
  std::string target;
  bool met = false;
};

// Samples a process's peak RSS (VmHWM of /proc/PID/status, in KiB) until
// stopped. wait4's ru_maxrss cannot be used here: a child spawned from this
// large process inherits its high-water mark through posix_spawn and exec.
class PeakRss {
 public:
  explicit PeakRss(pid_t pid)
      : thread_([this, pid] {
          while (!stop_) {
            std::ifstream status("/proc/" + std::to_string(pid) + "/status");
            std::string line;
            while (std::getline(status, line)) {
              if (line.rfind("VmHWM:", 0) == 0) {
                peak_ = std::max(peak_.load(), std::stol(line.substr(6)));
              }
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
          }
        }) {}
  ~PeakRss() { stop(); }
  long stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    return peak_;
  }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<long> peak_{0};
  std::thread thread_;
};

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
}

// A run-summary-like payload of about 300 bytes.
std::string payload(std::int64_t doc, std::int64_t n) {
  return fmt::format(
      R"({{"doc":{},"model":"codex-1","org_id":"org:{}","run_id":"run_{:08}","status":"running","steps_completed":{},"tokens":{{"input":{},"output":{}}},"updated_at":"2026-11-25T20:00:00Z","worker":"worker_{}","note":"{}"}})",
      doc, doc % 97, doc, n % 50, 1200 * (n % 50), 300 * (n % 50), doc % 16, std::string(90, 'x'));
}

DocWrite write_for(std::int64_t n, std::int64_t docs, int topic_override = -1) {
  const std::int64_t doc = n % docs;
  const int topic = topic_override >= 0 ? topic_override : static_cast<int>(doc % 4);
  DocWrite w;
  w.topic = kTopics[topic];
  w.doc_key = fmt::format("{}{}", kPrefixes[topic], doc);
  w.scope = fmt::format("org:{}", doc % 97);
  w.payload = payload(doc, n);
  return w;
}

// Frames of `per_frame` writes each, numbered from `start`.
std::string frames(std::int64_t start, std::int64_t count, std::int64_t per_frame,
                   std::int64_t docs, int topic = -1) {
  std::string out;
  for (std::int64_t i = 0; i < count; i += per_frame) {
    Batch b;
    for (std::int64_t j = i; j < std::min(count, i + per_frame); ++j) {
      b.writes.push_back(write_for(start + j, docs, topic));
    }
    out += encode_frame(encode_batch(b));
  }
  return out;
}

std::string ndjson(std::int64_t start, std::int64_t count, std::int64_t docs) {
  std::string out;
  for (std::int64_t i = start; i < start + count; ++i) {
    const DocWrite w = write_for(i, docs);
    out += fmt::format(R"({{"topic":"{}","doc_key":"{}","scope":"{}","payload":{}}})", w.topic,
                       w.doc_key, w.scope, w.payload);
    out += "\n";
  }
  return out;
}

// The projector's NDJSON: `count` writes over `docs` docs in random order,
// most of them new (3 writes per doc on average), each with a source stream
// and seq, a scope, and a payload with non-ASCII text and escapes.
struct ProjectorWrite {
  DocWrite write;
  std::string line;
};
std::vector<ProjectorWrite> projector_writes(std::int64_t count, std::int64_t docs) {
  std::mt19937_64 rng(20261126);
  std::uniform_int_distribution<std::int64_t> pick(0, docs - 1);
  std::vector<ProjectorWrite> out;
  out.reserve(static_cast<std::size_t>(count));
  std::vector<std::int64_t> seq(16, 0);
  for (std::int64_t n = 0; n < count; ++n) {
    const std::int64_t doc = pick(rng);
    const auto stream = static_cast<std::size_t>(doc % 16);
    DocWrite w;
    w.topic = kTopics[0];
    w.doc_key = fmt::format("{}{:08}", kPrefixes[0], doc);
    w.scope = fmt::format("org:{}", doc % 97);
    w.source_stream = fmt::format("projector:{}", stream);
    w.source_seq = ++seq[stream];
    w.payload = fmt::format(
        R"({{"run_id":"run_{:08}","status":"läuft","title":"Überprüfung \"{}\" — ✓ 完成","steps":{},"note":"line1\nline2\ttab","tokens":{{"input":{},"output":{}}}}})",
        doc, n, n % 50, 1200 * (n % 50), 300 * (n % 50));
    std::string line = nlohmann::json{
        {"topic", w.topic},
        {"doc_key", w.doc_key},
        {"scope", w.scope},
        {"source_stream", w.source_stream},
        {"source_seq",
         *w.source_seq}}.dump();
    line.pop_back();  // the payload goes in verbatim, as a projector writes it
    line += R"(,"payload":)" + w.payload + "}\n";
    out.push_back({std::move(w), std::move(line)});
  }
  return out;
}

// A CSV field, quoted.
std::string csv_quoted(std::string_view text) {
  std::string out = "\"";
  for (const char ch : text) {
    if (ch == '"') out += '"';
    out += ch;
  }
  return out + "\"";
}

// What the sink stores for a run of writes, as CSV for COPY into tables like
// oasync.events and oasync.docs: every write an event (numbered in order, with
// each doc's version), and each doc's final row.
struct CopyFiles {
  std::string events;
  std::string docs;
};
CopyFiles copy_files(const std::vector<DocWrite>& writes, const std::string& dir) {
  CopyFiles f{dir + "/events.csv", dir + "/docs.csv"};
  std::ofstream events(f.events);
  struct Final {
    const DocWrite* write;
    std::int64_t version;
    std::int64_t watermark;
    std::string hash_hex;
  };
  std::map<std::pair<std::string, std::string>, Final> final_docs;
  std::map<std::string, std::int64_t> heads;
  for (const DocWrite& w : writes) {
    const CanonicalJson c = canonicalize(w.payload);
    const std::string hash = to_hex(c.sha256);
    const std::int64_t watermark = ++heads[w.topic];
    auto& d = final_docs[{w.topic, w.doc_key}];
    d = {&w, d.version + 1, watermark, hash};
    events << w.topic << ',' << watermark << ',' << csv_quoted(w.doc_key) << ',' << d.version << ','
           << csv_quoted(w.scope) << ",upsert," << csv_quoted(c.text) << ",\\x" << hash << '\n';
  }
  std::ofstream docs(f.docs);
  for (const auto& [key, d] : final_docs) {
    const CanonicalJson c = canonicalize(d.write->payload);
    docs << key.first << ',' << csv_quoted(key.second) << ',' << csv_quoted(d.write->scope) << ','
         << d.version << ',' << csv_quoted(c.text) << ",\\x" << d.hash_hex << ',' << d.watermark
         << ',' << csv_quoted(d.write->source_stream) << ','
         << (d.write->source_seq ? std::to_string(*d.write->source_seq) : std::string()) << '\n';
  }
  return f;
}

// Seconds for COPY of `files` into tables made LIKE oasync.events and
// oasync.docs, indexes included, in one psql session: the rows the sink
// writes, at the speed PostgreSQL loads them.
double copy_seconds(const TestDatabase& db, const CopyFiles& files, const std::string& suffix) {
  db.scalar(
      fmt::format("CREATE TABLE public.copy_events_{0} (LIKE oasync.events INCLUDING ALL); "
                  "CREATE TABLE public.copy_docs_{0} (LIKE oasync.docs INCLUDING ALL)",
                  suffix));
  const auto start = Clock::now();
  const auto copy = run_process(
      {"psql", "-qX", "-v", "ON_ERROR_STOP=1", db.url(), "-c",
       fmt::format("\\copy public.copy_events_{} (topic, watermark, doc_key, doc_version, scope, "
                   "op, payload, payload_hash) FROM '{}' WITH (FORMAT csv)",
                   suffix, files.events),
       "-c",
       fmt::format("\\copy public.copy_docs_{} (topic, doc_key, scope, doc_version, payload, "
                   "payload_hash, last_watermark, source_stream, source_seq) FROM '{}' WITH "
                   "(FORMAT csv)",
                   suffix, files.docs)});
  const double seconds = seconds_since(start);
  if (copy.exit_code != 0) throw std::runtime_error("COPY failed: " + copy.err);
  return seconds;
}

bool read_frame(Child& c, std::string& body) {
  std::string header;
  if (!c.read_exact(header, 4, 600000)) return false;
  const auto* p = reinterpret_cast<const unsigned char*>(header.data());
  const std::size_t n = (std::size_t{p[0]} << 24) | (std::size_t{p[1]} << 16) |
                        (std::size_t{p[2]} << 8) | std::size_t{p[3]};
  return c.read_exact(body, n, 600000);
}

// Streams `input` into a sink process and reads all answers; returns seconds
// and the sink's peak RSS.
struct SinkRun {
  double seconds = 0;
  long rss_kib = 0;
  std::int64_t applied = 0;
};

SinkRun run_sink(const std::string& url, const std::string& input, std::size_t answers,
                 const std::vector<std::string>& extra = {}, bool ndjson_mode = false) {
  std::vector<std::string> argv{oasync_binary(), "--database-url", url, "sink"};
  if (ndjson_mode) {
    argv.insert(argv.end(), {"--input", "-"});
  } else {
    argv.push_back("--stdio");
  }
  argv.insert(argv.end(), extra.begin(), extra.end());
  Child sink(argv);
  PeakRss rss(sink.pid());
  const auto start = Clock::now();
  std::thread feeder([&] {
    sink.write(input);
    sink.close_stdin();
  });
  SinkRun run;
  if (!ndjson_mode) {
    std::string body;
    for (std::size_t i = 0; i < answers; ++i) {
      if (!read_frame(sink, body)) throw std::runtime_error("sink stopped answering");
      const auto r = decode_results(body);
      if (r.error_code) throw std::runtime_error("batch failed: " + r.error_message);
      for (const auto& w : r.results) run.applied += w.outcome == Outcome::applied;
    }
  }
  feeder.join();
  run.rss_kib = rss.stop();
  if (sink.wait() != 0) throw std::runtime_error("sink failed: " + sink.stderr_text());
  run.seconds = seconds_since(start);
  return run;
}

// ---- oasync serve ----

// A free TCP port on loopback.
int free_port() {
  boost::asio::io_context ioc;
  boost::asio::ip::tcp::acceptor a(ioc, {boost::asio::ip::make_address("127.0.0.1"), 0});
  return a.local_endpoint().port();
}

// GET `path` from the server; the whole response, head and body.
std::string http_get(int port, const std::string& path) {
  namespace asio = boost::asio;
  asio::io_context ioc;
  asio::ip::tcp::socket socket(ioc);
  boost::system::error_code ec;
  socket.connect({asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)}, ec);
  if (ec) return {};
  const std::string request =
      "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  asio::write(socket, asio::buffer(request), ec);
  std::string out;
  asio::read(socket, asio::dynamic_buffer(out), ec);
  return out;
}

// A counter of /metrics.
std::int64_t metric(int port, const std::string& name) {
  const std::string text = http_get(port, "/metrics");
  const std::size_t at = text.find("\n" + name + " ");
  return at == std::string::npos ? -1 : std::stoll(text.substr(at + name.size() + 2));
}

// An HS256 token of tenant `org` that may read every shipped topic.
std::string bench_token(const std::string& secret, const std::string& org) {
  const nlohmann::json claims = {{"sub", "bench"},
                                 {"org_id", org},
                                 {"session_id", "bench-" + org},
                                 {"scopes", {kTopics[0], kTopics[1], kTopics[2], kTopics[3]}},
                                 {"exp", std::time(nullptr) + 7200}};
  return hs256_token(secret, claims.dump());
}

// CPU seconds (user + system) a process used so far, and its peak RSS.
double cpu_seconds(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  std::istringstream fields(text.substr(text.rfind(')') + 2));
  std::string f;
  long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> f; ++i) {
    if (i == 14) utime = std::stol(f);
    if (i == 15) stime = std::stol(f);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

long peak_rss_kib(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
  }
  return 0;
}

// A running `oasync serve` on loopback, with an HS256 secret.
struct Served {
  std::string secret = "bench-secret-of-more-than-32-bytes-of-length";
  int port = free_port();
  std::string key_file;
  std::unique_ptr<Child> child;

  Served(const std::string& url, const std::string& dir, const std::string& config = "") {
    key_file = dir + "/serve.secret";
    std::ofstream(key_file) << secret;
    std::vector<std::string> argv{oasync_binary()};
    if (!config.empty()) {
      const std::string path = dir + "/serve.yaml";
      std::ofstream(path) << config;
      argv.insert(argv.end(), {"--config", path});
    }
    argv.insert(argv.end(), {"--database-url", url, "serve", "--port", std::to_string(port),
                             "--auth-key-file", key_file});
    child = std::make_unique<Child>(argv);
    for (int i = 0; i < 200; ++i) {
      if (http_get(port, "/healthz").find("200 OK") != std::string::npos) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    throw std::runtime_error("oasync serve did not come up: " + child->stderr_text());
  }
  ~Served() {
    child->kill(SIGTERM);
    child->wait();
  }
  std::string token(const std::string& org) const { return bench_token(secret, org); }
};

// A fresh database for one scenario.
std::unique_ptr<TestDatabase> fresh() {
  return std::make_unique<TestDatabase>(TestDatabase::Setup::with_topics);
}

std::string rate(double per_second) {
  return fmt::format("{:.0f}/s", per_second);
}

class Bench {
 public:
  Bench(Sizes s, std::string workdir) : s_(s), dir_(std::move(workdir)) {}

  std::vector<Row> rows;

  void ingest() {
    // The baseline for both: COPY of the rows the sink stores.
    std::vector<DocWrite> writes;
    writes.reserve(static_cast<std::size_t>(s_.ingest));
    for (std::int64_t n = 0; n < s_.ingest; ++n) writes.push_back(write_for(n, s_.docs));
    double base = 0;
    {
      auto db = fresh();
      const CopyFiles files = copy_files(writes, dir_);
      base = copy_seconds(*db, files, "frames");
      std::remove(files.events.c_str());
      std::remove(files.docs.c_str());
    }
    writes.clear();
    auto db = fresh();
    const std::string input = frames(0, s_.ingest, 1000, s_.docs);
    const SinkRun ours =
        run_sink(db->url(), input, static_cast<std::size_t>((s_.ingest + 999) / 1000));
    sink_rss_kib_ = ours.rss_kib;
    const double ours_rate = static_cast<double>(s_.ingest) / ours.seconds;
    const double base_rate = static_cast<double>(s_.ingest) / base;
    add("batch ingest (binary frames of 1000)", rate(ours_rate),
        "COPY of events and docs " + rate(base_rate), ours_rate / base_rate, ">= 0.8",
        ours_rate / base_rate >= 0.8);

    auto db2 = fresh();
    const SinkRun nd = run_sink(db2->url(), ndjson(0, s_.ingest, s_.docs), 0, {}, true);
    const double nd_rate = static_cast<double>(s_.ingest) / nd.seconds;
    add("batch ingest (NDJSON, same writes)", rate(nd_rate),
        "COPY of events and docs " + rate(base_rate), nd_rate / base_rate, ">= 0.7",
        nd_rate / base_rate >= 0.7);

    // The projector's shape: streams, seqs, scopes, escapes, random docs.
    const std::vector<ProjectorWrite> shaped = projector_writes(s_.ndjson, s_.ndjson / 3);
    std::string lines;
    for (const auto& w : shaped) {
      writes.push_back(w.write);
      lines += w.line;
    }
    double shaped_base = 0;
    {
      auto db3 = fresh();
      const CopyFiles files = copy_files(writes, dir_);
      shaped_base = copy_seconds(*db3, files, "shaped");
      std::remove(files.events.c_str());
      std::remove(files.docs.c_str());
    }
    auto db4 = fresh();
    const SinkRun sh = run_sink(db4->url(), lines, 0, {}, true);
    const double sh_rate = static_cast<double>(s_.ndjson) / sh.seconds;
    const double sh_base = static_cast<double>(s_.ndjson) / shaped_base;
    add("batch ingest (NDJSON, projector shape: streams, scopes, escapes, 3 writes per random doc)",
        rate(sh_rate), "COPY of events and docs " + rate(sh_base), sh_rate / sh_base, ">= 0.7",
        sh_rate / sh_base >= 0.7);
  }

  // p50 of an awaited single-write frame, against pgbench running the same
  // work by hand (1 client, prepared): as five statements, and as one
  // statement between BEGIN and COMMIT. Alternated, twice each.
  void single_write() {
    auto db = fresh();
    db->scalar(R"SQL(
CREATE TABLE public.b_counters (topic text PRIMARY KEY, head bigint NOT NULL);
INSERT INTO public.b_counters VALUES ('t', 0);
CREATE TABLE public.b_docs (LIKE oasync.docs INCLUDING ALL);
CREATE TABLE public.b_events (LIKE oasync.events INCLUDING ALL);
)SQL");
    const std::string p = canonicalize(payload(1, 1)).text;
    const std::string lit = "'" + p + "'";
    std::ofstream(dir_ + "/five.sql")
        << "\\set id random(1, " << s_.docs << ")\n"
        << "BEGIN;\n"
        << "UPDATE public.b_counters SET head = head + 1 WHERE topic = 't';\n"
        << "INSERT INTO public.b_docs (topic, doc_key, scope, doc_version, payload, payload_hash, "
           "last_watermark) VALUES ('t', 'k:' || :id, 'org:1', 1, "
        << lit << ", sha256(" << lit
        << "), (SELECT head FROM public.b_counters WHERE topic = 't')) ON CONFLICT (topic, "
           "doc_key) DO UPDATE SET doc_version = b_docs.doc_version + 1, payload = "
           "excluded.payload, payload_hash = excluded.payload_hash, last_watermark = "
           "excluded.last_watermark;\n"
        << "INSERT INTO public.b_events (topic, watermark, doc_key, doc_version, scope, op, "
           "payload, payload_hash) SELECT 't', head, 'k:' || :id, 1, 'org:1', 'upsert', "
        << lit << ", sha256(" << lit << ") FROM public.b_counters WHERE topic = 't';\n"
        << "COMMIT;\n";
    std::ofstream(dir_ + "/one.sql")
        << "\\set id random(1, " << s_.docs << ")\n"
        << "BEGIN;\n"
        << "WITH h AS (UPDATE public.b_counters SET head = head + 1 WHERE topic = 't' RETURNING "
           "head), d AS (INSERT INTO public.b_docs AS x (topic, doc_key, scope, doc_version, "
           "payload, payload_hash, last_watermark) SELECT 't', 'k:' || :id, 'org:1', 1, "
        << lit << ", sha256(" << lit
        << "), h.head FROM h ON CONFLICT (topic, doc_key) DO UPDATE SET doc_version = "
           "x.doc_version + 1, payload = excluded.payload, payload_hash = excluded.payload_hash, "
           "last_watermark = excluded.last_watermark RETURNING x.doc_version) INSERT INTO "
           "public.b_events (topic, watermark, doc_key, doc_version, scope, op, payload, "
           "payload_hash) SELECT 't', h.head, 'k:' || :id, d.doc_version, 'org:1', 'upsert', "
        << lit << ", sha256(" << lit << ") FROM h, d;\n"
        << "COMMIT;\n";
    std::vector<double> ours, five, one;
    Child sink({oasync_binary(), "--database-url", db->url(), "sink", "--stdio"});
    std::int64_t next = 0;
    const auto run_ours = [&] {
      std::string body;
      for (std::int64_t i = 0; i < s_.single / 2; ++i) {
        const std::string frame = frames(next++, 1, 1, s_.docs);
        const auto t = Clock::now();
        sink.write(frame);
        if (!read_frame(sink, body)) throw std::runtime_error("sink stopped answering");
        ours.push_back(seconds_since(t) * 1000.0);
      }
    };
    const auto run_pgbench = [&](const std::string& script, std::vector<double>& into) {
      const auto pg = run_process(
          {"/bin/sh", "-c",
           "cd \"$0\" && rm -f pgbench_log.* && pgbench -n -M prepared -c 1 -t \"$1\" -f \"$3\" "
           "-l \"$2\" >/dev/null && cat pgbench_log.*",
           dir_, std::to_string(s_.single / 2), db->url(), script});
      if (pg.exit_code != 0) throw std::runtime_error("pgbench failed: " + pg.err);
      std::stringstream lines(pg.out);
      std::string line;
      while (std::getline(lines, line)) {
        std::stringstream f(line);
        long client = 0, tx = 0, us = 0;
        f >> client >> tx >> us;
        into.push_back(static_cast<double>(us) / 1000.0);
      }
    };
    run_ours();
    run_pgbench("five.sql", five);
    run_pgbench("one.sql", one);
    run_pgbench("one.sql", one);
    run_pgbench("five.sql", five);
    run_ours();
    sink.close_stdin();
    sink.wait();
    const double ours_p50 = percentile(ours, 0.5);
    const double five_p50 = percentile(five, 0.5);
    const double one_p50 = percentile(one, 0.5);
    per_write_rate_ =
        1000.0 / (std::accumulate(one.begin(), one.end(), 0.0) / static_cast<double>(one.size()));
    add("single write p50 (1 write/tx, awaited)", fmt::format("{:.3f} ms", ours_p50),
        fmt::format("pgbench, five statements {:.3f} ms", five_p50), ours_p50 / five_p50, "<= 1.0",
        ours_p50 / five_p50 <= 1.0);
    add("single write p50 (1 write/tx, awaited)", fmt::format("{:.3f} ms", ours_p50),
        fmt::format("pgbench, one statement {:.3f} ms", one_p50), ours_p50 / one_p50, "<= 1.0",
        ours_p50 / one_p50 <= 1.0);
    lost_commit_cost(*db);
  }

  // What settling a lost COMMIT costs when nothing is lost: round trip 1
  // learns the transaction's identity and its topics' heads. In-process
  // sinks, with and without (LostCommit::report), alternated.
  void lost_commit_cost(const TestDatabase& db) {
    SinkOptions settle_options, report_options;
    report_options.lost_commit = LostCommit::report;
    auto settle = Sink::open(db.url(), settle_options);
    auto report = Sink::open(db.url(), report_options);
    std::vector<double> settling, reporting;
    std::int64_t n = 0;
    const auto run = [&](Sink& sink, std::vector<double>& into) {
      for (std::int64_t i = 0; i < s_.single / 4; ++i) {
        Batch b;
        DocWrite w;
        w.topic = "runtime.run_summaries";
        w.doc_key = fmt::format("run_summary:lc{}", ++n % s_.docs);
        w.scope = "org:1";
        w.payload = fmt::format(R"({{"n":{}}})", n);
        b.writes.push_back(std::move(w));
        const auto t = Clock::now();
        sink.apply(b);
        into.push_back(seconds_since(t) * 1000.0);
      }
    };
    for (int round = 0; round < 2; ++round) {
      run(*settle, settling);
      run(*report, reporting);
    }
    const double settle_p50 = percentile(settling, 0.5);
    const double report_p50 = percentile(reporting, 0.5);
    add("single write p50, settling a lost COMMIT (in-process Sink)",
        fmt::format("{:.3f} ms", settle_p50),
        fmt::format("LostCommit::report (no identity learned) {:.3f} ms", report_p50),
        settle_p50 / report_p50, "-", true);
  }

  void group_commit() {
    if (per_write_rate_ == 0) single_write();
    auto db = fresh();
    const SinkRun ours =
        run_sink(db->url(), frames(0, s_.group, 1, s_.docs), static_cast<std::size_t>(s_.group));
    const double r = static_cast<double>(s_.group) / ours.seconds;
    add("group commit (single-write frames, not awaited)", rate(r),
        "a transaction per write (pgbench, one statement) " + rate(per_write_rate_),
        r / per_write_rate_, ">= 20", r / per_write_rate_ >= 20);
  }

  void hot_topic() {
    auto one_db = fresh();
    const std::int64_t per = s_.hot / 4;
    const SinkRun one = run_sink(one_db->url(), frames(0, s_.hot, 100, s_.docs, 0),
                                 static_cast<std::size_t>(s_.hot / 100));
    auto four_db = fresh();
    std::vector<std::thread> threads;
    std::atomic<bool> failed{false};
    const auto start = Clock::now();
    for (int p = 0; p < 4; ++p) {
      threads.emplace_back([&, p] {
        try {
          run_sink(four_db->url(), frames(p * per, per, 100, s_.docs, 0),
                   static_cast<std::size_t>(per / 100));
        } catch (const std::exception&) {
          failed = true;
        }
      });
    }
    for (auto& t : threads) t.join();
    const double four = seconds_since(start);
    const double r1 = static_cast<double>(s_.hot) / one.seconds;
    const double r4 = static_cast<double>(s_.hot) / four;
    add("hot topic (4 sinks, one topic)", rate(r4) + (failed ? " FAILED" : ""),
        "1 sink " + rate(r1), r4 / r1, ">= 1.5, no deadlock", !failed && r4 / r1 >= 1.5);
  }

  // 4 sinks, each on a topic of its own, frames of 5 writes (small
  // transactions), on a database fresh from migrate: the first round of
  // writes against the next, and 4 sinks against 1 on the same shape.
  void fresh_database() {
    const auto four_sinks = [&](const TestDatabase& db, std::int64_t start) {
      const std::int64_t per = s_.fresh / 4;
      std::vector<std::thread> threads;
      std::atomic<bool> failed{false};
      const auto t = Clock::now();
      for (int p = 0; p < 4; ++p) {
        threads.emplace_back([&, p] {
          try {
            run_sink(db.url(), frames(start + p * per, per, 5, s_.docs, p),
                     static_cast<std::size_t>((per + 4) / 5));
          } catch (const std::exception&) {
            failed = true;
          }
        });
      }
      for (auto& th : threads) th.join();
      if (failed) throw std::runtime_error("a sink failed");
      return static_cast<double>(s_.fresh) / seconds_since(t);
    };
    auto db = fresh();
    const double first = four_sinks(*db, 0);
    const double next = four_sinks(*db, s_.fresh);
    add("fresh database: first writes after migrate (4 sinks, 4 topics, 5 writes/tx)", rate(first),
        "the next ones " + rate(next), first / next, ">= 0.8", first / next >= 0.8);
    auto one_db = fresh();
    const auto t = Clock::now();
    run_sink(one_db->url(), frames(0, s_.fresh, 5, s_.docs, 0),
             static_cast<std::size_t>((s_.fresh + 4) / 5));
    const double one = static_cast<double>(s_.fresh) / seconds_since(t);
    add("4 sinks on 4 topics (5 writes/tx)", rate(next), "1 sink on 1 topic " + rate(one),
        next / one, ">= 1.5", next / one >= 1.5);
  }

  void replay() {
    auto db = fresh();
    db->scalar(fmt::format(
        "WITH e AS (INSERT INTO oasync.events (topic, watermark, doc_key, doc_version, scope, op, "
        "payload, payload_hash) SELECT 'runtime.run_summaries', g, 'run_summary:' || (g % {0}), g "
        "/ "
        "{0} + 1, 'org:' || (g % {0} % 97), 'upsert', ('{{\"doc\":' || g || ',\"note\":\"' || "
        "repeat('x', 230) || "
        "'\",\"status\":\"running\"}}')::json, sha256(g::text::bytea) FROM generate_series(1, {1}) "
        "g "
        "RETURNING 1) UPDATE oasync.topics SET head = {1} WHERE topic = 'runtime.run_summaries'",
        s_.docs, s_.replay));
    db->scalar("VACUUM ANALYZE oasync.events");
    Child tail(
        {"/bin/sh", "-c",
         "exec \"$0\" --database-url \"$1\" tail runtime.run_summaries --after 0 --format ndjson "
         ">/dev/null",
         oasync_binary(), db->url()});
    auto start = Clock::now();
    PeakRss rss(tail.pid());  // the pid stays the same through sh's exec
    tail.wait();
    const double ours = seconds_since(start);
    tail_rss_kib_ = rss.stop();
    start = Clock::now();
    const auto copy = run_process(
        {"psql", "-qX", db->url(), "-c",
         "\\copy (SELECT topic, watermark, doc_key, doc_version, scope, op, payload, payload_hash "
         "FROM oasync.events WHERE topic = 'runtime.run_summaries' ORDER BY watermark) TO "
         "'/dev/null'"});
    const double base = seconds_since(start);
    if (copy.exit_code != 0) throw std::runtime_error("psql \\copy failed: " + copy.err);
    const double r = static_cast<double>(s_.replay) / ours;
    const double b = static_cast<double>(s_.replay) / base;
    add("replay (tail --after 0, ndjson)", rate(r), "psql \\copy " + rate(b), r / b, ">= 0.9",
        r / b >= 0.9);

    // A tenant's catch-up: one scope of 97, against the whole topic.
    const auto timed = [&](std::vector<std::string> args) {
      args.insert(args.begin(), {oasync_binary(), "--database-url", db->url()});
      const auto t = Clock::now();
      const auto result = run_process(args);
      if (result.exit_code != 0) throw std::runtime_error("oasync failed: " + result.err);
      return seconds_since(t);
    };
    const double scoped = timed({"tail", "runtime.run_summaries", "--after", "0", "--format",
                                 "ndjson", "--scope", "org:5"});
    add("scoped catch-up (tail --scope, 1 scope of 97)", fmt::format("{:.3f} s", scoped),
        fmt::format("whole topic {:.3f} s", ours), ours / scoped, ">= 10x faster",
        ours / scoped >= 10);

    // inspect costs O(topics): a million events against none.
    auto empty = fresh();
    const auto inspect_time = [&](const TestDatabase& d) {
      const auto t = Clock::now();
      const auto result = run_oasync({"--database-url", d.url(), "inspect"});
      if (result.exit_code != 0) throw std::runtime_error("inspect failed: " + result.err);
      return seconds_since(t);
    };
    const double with_events = inspect_time(*db);
    const double without = inspect_time(*empty);
    add(fmt::format("inspect ({} events)", s_.replay), fmt::format("{:.3f} s", with_events),
        fmt::format("no events {:.3f} s", without), with_events / without, "<= 2",
        with_events / without <= 2);
  }

  void live_latency() {
    auto db = fresh();
    Child tail({oasync_binary(), "--database-url", db->url(), "tail", "runtime.run_summaries",
                "--follow", "--format", "ndjson"});
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    Child sink({oasync_binary(), "--database-url", db->url(), "sink", "--stdio"});
    const std::int64_t total = static_cast<std::int64_t>(s_.live_seconds) * s_.live_rate;
    std::vector<Clock::time_point> answered(static_cast<std::size_t>(total));
    std::thread reader([&] {
      std::string body;
      for (std::int64_t i = 0; i < total; ++i) {
        if (!read_frame(sink, body)) return;
        answered[static_cast<std::size_t>(i)] = Clock::now();
      }
    });
    // The follower's output is read as it comes: when each watermark was seen.
    std::vector<Clock::time_point> seen(static_cast<std::size_t>(total));
    std::thread seen_thread([&] {
      std::string line;
      for (std::int64_t i = 0; i < total && tail.read_line(line, 10000); ++i) {
        const auto now = Clock::now();
        const auto w = nlohmann::json::parse(line)["watermark"].get<std::int64_t>();
        if (w >= 1 && w <= total) seen[static_cast<std::size_t>(w - 1)] = now;
      }
    });
    // Paced writer: single-write frames at the target rate.
    const auto start = Clock::now();
    for (std::int64_t i = 0; i < total; ++i) {
      const auto due = start + std::chrono::microseconds(i * 1000000 / s_.live_rate);
      std::this_thread::sleep_until(due);
      sink.write(frames(i, 1, 1, s_.docs, 0));
    }
    seen_thread.join();
    std::vector<double> lat;
    for (std::size_t i = 0; i < seen.size(); ++i) {
      const auto& a = answered[i];
      // A line can be read before its answer was; that counts as 0.
      if (seen[i] == Clock::time_point{}) continue;
      lat.push_back(a == Clock::time_point{} || seen[i] < a
                        ? 0.0
                        : std::chrono::duration<double>(seen[i] - a).count() * 1000);
    }
    reader.join();
    sink.close_stdin();
    sink.wait();
    tail.kill(SIGKILL);
    const double p50 = percentile(lat, 0.5);
    const double p99 = percentile(lat, 0.99);
    add(fmt::format("live latency ({} writes/s, {} s)", s_.live_rate, s_.live_seconds),
        fmt::format("p50 {:.2f} ms, p99 {:.2f} ms", p50, p99), "n/a", 0, "p50 <= 2, p99 <= 10",
        p50 <= 2 && p99 <= 10);
  }

  void purge_under_load() {
    auto db = fresh();
    db->scalar(fmt::format(
        "WITH e AS (INSERT INTO oasync.events (topic, watermark, doc_key, doc_version, scope, op, "
        "payload, payload_hash, committed_at) SELECT 'runtime.notifications', g, 'notification:' "
        "|| g, "
        "1, '', 'upsert', '{{}}'::json, sha256(g::text::bytea), now() - interval '60 days' FROM "
        "generate_series(1, {0}) g RETURNING 1) UPDATE oasync.topics SET head = {0} WHERE topic = "
        "'runtime.notifications'",
        s_.purge));
    const auto writer_p99 = [&](const std::function<bool()>& keep_going) {
      Child sink({oasync_binary(), "--database-url", db->url(), "sink", "--stdio"});
      std::vector<double> lat;
      std::string body;
      for (std::int64_t i = 0; keep_going(); ++i) {
        const auto t = Clock::now();
        sink.write(frames(i, 1, 1, s_.docs, 0));
        read_frame(sink, body);
        lat.push_back(seconds_since(t) * 1000);
      }
      sink.close_stdin();
      sink.wait();
      return percentile(lat, 0.99);
    };
    const auto quiet_until = Clock::now() + std::chrono::seconds(3);
    const double base_p99 = writer_p99([&] { return Clock::now() < quiet_until; });
    std::atomic<bool> purging{true};
    double load_p99 = 0;
    std::thread writer([&] { load_p99 = writer_p99([&] { return purging.load(); }); });
    const auto start = Clock::now();
    const auto r = run_oasync({"--database-url", db->url(), "purge", "--topic",
                               "runtime.notifications", "--older-than", "30d", "--keep-last", "0"});
    const double seconds = seconds_since(start);
    purging = false;
    writer.join();
    if (r.exit_code != 0) throw std::runtime_error("purge failed: " + r.err);
    const double rows = static_cast<double>(s_.purge) / seconds;
    add("purge under load: purge rate", rate(rows), "n/a", 0, ">= 100000/s", rows >= 100000);
    add("purge under load: writer p99", fmt::format("{:.2f} ms", load_p99),
        fmt::format("no purge {:.2f} ms", base_p99), load_p99 / base_p99, "<= 2",
        load_p99 / base_p99 <= 2);
  }

  void notification_cost() {
    // Alternating runs, best of two each, so neither side gets the warm cache.
    const std::int64_t n = s_.ingest / 2;
    const std::string input = frames(0, n, 1000, s_.docs);
    const auto answers = static_cast<std::size_t>((n + 999) / 1000);
    double with = 1e9, without = 1e9;
    for (int round = 0; round < 2; ++round) {
      auto a = fresh();
      without = std::min(without, run_sink(a->url(), input, answers, {"--no-notify"}).seconds);
      auto b = fresh();
      with = std::min(with, run_sink(b->url(), input, answers).seconds);
    }
    const double r = without / with;
    add("notification cost (ingest with/without)", rate(static_cast<double>(n) / with),
        "no notify " + rate(static_cast<double>(n) / without), r, ">= 0.9", r >= 0.9);
  }

  // A fan-out run: `clients` connections over `tenants` tenants (client i is
  // tenant org:(i % tenants)), `rate` single writes a second for `seconds`,
  // write n for tenant org:(n % tenants) in topic kTopics[n % topics].
  struct Load {
    Transport transport = Transport::sse;
    int clients = 0;
    int tenants = 1;
    // Topics the writes are spread over. A socket joins each of them; an SSE
    // stream follows one topic, so SSE takes 1 only.
    int topics = 1;
    int rate = 0;
    int seconds = 0;
  };

  // What a fan-out run measured: commit-to-client delays, the server's CPU
  // and peak memory, the load generator's CPU, and database queries per wake.
  struct Fanout {
    std::int64_t deliveries = 0;
    std::int64_t expected = 0;
    double p50 = 0, p99 = 0;
    double server_cpu = 0, seconds = 0;
    double generator_cpu = 0;  // the swarm's thread, over the same time as server_cpu
    long rss_kib = 0;
    double queries_per_wake = 0;
    std::int64_t failed = 0;
    std::int64_t dropped = 0;     // clients the server ended as too slow
    std::int64_t streaming = 0;   // clients started (a socket: every join answered ok)
    std::int64_t reconnects = 0;  // connections the clients tried again
    std::int64_t rejoins = 0;     // joins refused as unavailable and tried again
    std::int64_t ended = 0;       // started clients the server ended while measured
    double cpu_us_per_delivery() const {
      return deliveries > 0 ? server_cpu * 1e6 / static_cast<double>(deliveries) : 0;
    }
  };
  Fanout fanout(const Load& load) {
    if (load.transport == Transport::sse && load.topics != 1) {
      throw std::logic_error("an SSE stream follows one topic");
    }
    auto db = fresh();
    // (The load generator is one address: the cap per client must not apply.)
    Served server(db->url(), dir_,
                  "serve:\n  limits: {max_connections: 20000, max_connections_per_client: "
                  "20000}\n");
    const std::int64_t writes = static_cast<std::int64_t>(load.rate) * load.seconds;
    Commits commits(static_cast<std::size_t>(writes + 1));
    // A socket joins each topic at its position now (as a client resuming
    // from a saved position does), as the SSE streams start at offset=now:
    // neither reads a snapshot before it is live. (Joined with {}, 30,000
    // snapshot reads crowd the database queue and the response budget for
    // many seconds after the joins are answered.)
    std::vector<bench::Join> joins;
    for (int t = 0; t < load.topics && load.transport == Transport::websocket; ++t) {
      const std::string where = fmt::format("FROM oasync.topics WHERE topic = '{}'", kTopics[t]);
      joins.push_back({kTopics[t], fmt::format(R"({{"epoch":"{}","watermark":"{}"}})",
                                               db->scalar("SELECT epoch::text " + where),
                                               db->scalar("SELECT head::text " + where))});
    }
    std::vector<bench::Client> clients;
    for (int i = 0; i < load.clients; ++i) {
      const std::string token = server.token(std::to_string(i % load.tenants));
      if (load.transport == Transport::sse) {
        clients.push_back(
            {fmt::format("/v1/topics/{}?offset=now&live=sse&access_token={}", kTopics[0], token),
             "",
             {}});
      } else {
        clients.push_back({"/sync/v1/socket/websocket?vsn=2.0.0&encoding=protobuf", token, joins});
      }
    }
    Swarm swarm(server.port, load.transport, std::move(clients), commits);
    swarm.start(std::chrono::seconds(120));
    Fanout f;
    f.failed = swarm.failed();
    f.streaming = swarm.streaming();
    const std::int64_t wakes0 = metric(server.port, "oasync_serve_wakes_total");
    const std::int64_t queries0 = metric(server.port, "oasync_serve_wake_queries_total");
    const double cpu0 = cpu_seconds(server.child->pid());
    const double generator0 = swarm.cpu_seconds();
    Child sink({oasync_binary(), "--database-url", db->url(), "sink", "--stdio"});
    std::string body;
    const auto start = Clock::now();
    for (std::int64_t n = 1; n <= writes; ++n) {
      std::this_thread::sleep_until(start + std::chrono::microseconds(n * 1000000 / load.rate));
      const auto topic = static_cast<std::size_t>(n % load.topics);
      Batch b;
      DocWrite w;
      w.topic = kTopics[topic];
      w.doc_key = fmt::format("{}{}", kPrefixes[topic], n % 5000);
      w.scope = fmt::format("org:{}", n % load.tenants);
      w.payload = fmt::format(R"({{"note":"{}","seq":{}}})", std::string(100, 'x'), n);
      b.writes.push_back(w);
      sink.write(encode_frame(encode_batch(b)));
      if (!read_frame(sink, body)) throw std::runtime_error("sink stopped answering");
      commits.mark(static_cast<std::size_t>(n));
      // Each of the tenant's clients gets each of its writes (a socket has
      // joined every topic written).
      f.expected +=
          load.clients / load.tenants + (n % load.tenants < load.clients % load.tenants ? 1 : 0);
    }
    f.seconds = seconds_since(start);
    // The last deliveries: late ones count (their delay says how late), and
    // whatever has not come 10 s after the last write counts as missing.
    const auto grace = Clock::now() + std::chrono::seconds(10);
    while (swarm.deliveries() < f.expected && Clock::now() < grace) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    f.server_cpu = cpu_seconds(server.child->pid()) - cpu0;
    f.generator_cpu = swarm.cpu_seconds() - generator0;
    const std::int64_t wakes = metric(server.port, "oasync_serve_wakes_total") - wakes0;
    const std::int64_t queries = metric(server.port, "oasync_serve_wake_queries_total") - queries0;
    f.queries_per_wake = wakes > 0 ? static_cast<double>(queries) / static_cast<double>(wakes) : 0;
    f.rss_kib = peak_rss_kib(server.child->pid());
    // (A counter with a label is listed once it counts.)
    f.dropped = load.transport == Transport::sse
                    ? metric(server.port, "oasync_serve_slow_subscribers_total")
                    : std::max<std::int64_t>(
                          0, metric(server.port,
                                    "oasync_serve_sockets_closed_total{reason=\"slow_consumer\"}"));
    f.reconnects = swarm.reconnects();
    f.rejoins = swarm.rejoins();
    f.ended = swarm.ended();
    sink.close_stdin();
    sink.wait();
    swarm.stop();
    const auto lat = swarm.latencies_ms();
    f.deliveries = static_cast<std::int64_t>(lat.size());
    f.p50 = percentile(lat, 0.5);
    f.p99 = percentile(lat, 0.99);
    return f;
  }

  // A fan-out run's row: its delays and deliveries against the target, and
  // beside them what it cost the server and the load generator.
  void report(const std::string& name, const Fanout& f, Transport transport) {
    const bool sockets = transport == Transport::websocket;
    add(name,
        fmt::format("p50 {:.1f} ms, p99 {:.1f} ms; {} of {} delivered ({} {} started, {} failed, "
                    "{} reconnects{}, {} closed as slow, {} ended by the server); server CPU "
                    "{:.2f} s in {:.0f} s ({:.1f} µs per delivery), peak RSS {} MiB; load "
                    "generator CPU {:.2f} s",
                    f.p50, f.p99, f.deliveries, f.expected, f.streaming,
                    sockets ? "sockets" : "streams", f.failed, f.reconnects,
                    sockets ? fmt::format(", {} joins retried", f.rejoins) : "", f.dropped, f.ended,
                    f.server_cpu, f.seconds, f.cpu_us_per_delivery(), f.rss_kib / 1024,
                    f.generator_cpu),
        "n/a", 0, "p99 <= 100 ms, all delivered",
        f.p99 <= 100 && f.deliveries == f.expected && f.failed == 0);
  }

  void serve_fanout() {
    const int seconds = s_.serve_seconds;
    const Fanout broadcast = fanout({.clients = s_.subscribers, .rate = 10, .seconds = seconds});
    report(fmt::format("serve broadcast: 1 tenant, 1 topic ({} SSE subscribers, 10 writes/s)",
                       s_.subscribers),
           broadcast, Transport::sse);
    add(fmt::format("serve memory at {} connections", s_.subscribers),
        fmt::format("{} MiB", broadcast.rss_kib / 1024), "n/a", 0, "<= 256 MiB",
        broadcast.rss_kib <= 256 * 1024);
    serve_channel();
    // Database work per wake as subscribers grow: one positions query and
    // one read per changed topic, whatever the count.
    std::string per_count;
    double low = 1e9, high = 0;
    for (int n : {10, 100, 1000, s_.subscribers}) {
      if (n > s_.subscribers) continue;
      const Fanout f = fanout({.clients = n, .rate = 20, .seconds = std::max(2, seconds / 4)});
      per_count +=
          fmt::format("{}{}: {:.2f}", per_count.empty() ? "" : ", ", n, f.queries_per_wake);
      low = std::min(low, f.queries_per_wake);
      high = std::max(high, f.queries_per_wake);
    }
    add("serve database queries per wake, by subscribers", per_count, "n/a", 0, "flat (<= 2)",
        high <= 2.0 && high - low < 0.5);
  }

  // The sync:v1 channel beside Durable Streams SSE, one after the other in
  // the same run, doing the same work: `subscribers` connections of
  // `tenants` tenants (10 each at full size), `serve_rate` writes a second
  // spread over the tenants, each write delivered once to each of its
  // tenant's connections (10,000 deliveries a second at full size). Each
  // socket joins 3 topics and the writes go round the 3; an SSE stream
  // follows one topic, so the SSE twin's writes all go to that one. The twin
  // has the same connections, tenants, writes and deliveries a second; the
  // sockets carry more (3 channels each, 30,000 subscriptions at full size).
  // Three streams per client would deliver as much, but with three times the
  // connections (30,000: past the open-file limit of 20,000 on the project's
  // machine), and would compare connection counts rather than transports.
  void serve_channel() {
    const Load sockets{.transport = Transport::websocket,
                       .clients = s_.subscribers,
                       .tenants = s_.tenants,
                       .topics = 3,
                       .rate = s_.serve_rate,
                       .seconds = s_.serve_seconds};
    Load streams = sockets;
    streams.transport = Transport::sse;
    streams.topics = 1;
    const Fanout ws = fanout(sockets);
    const Fanout sse = fanout(streams);
    report(fmt::format("serve tenants: {} sync:v1 WebSockets x 3 topics over {} tenants ({} "
                       "writes/s spread over them and the topics)",
                       sockets.clients, sockets.tenants, sockets.rate),
           ws, Transport::websocket);
    report(fmt::format("serve tenants: {} Durable Streams SSE streams x 1 topic over {} tenants "
                       "({} writes/s spread over them)",
                       streams.clients, streams.tenants, streams.rate),
           sse, Transport::sse);
    const auto ratio = [](double ours, double theirs) { return theirs > 0 ? ours / theirs : 0; };
    add(fmt::format("serve tenants: peak RSS at {} sockets", sockets.clients),
        fmt::format("{} MiB", ws.rss_kib / 1024), fmt::format("SSE {} MiB", sse.rss_kib / 1024),
        ratio(static_cast<double>(ws.rss_kib), static_cast<double>(sse.rss_kib)), "<= 256 MiB",
        ws.rss_kib <= 256 * 1024);
    add("serve tenants: server CPU per delivered message",
        fmt::format("{:.1f} µs (load generator CPU {:.2f} s)", ws.cpu_us_per_delivery(),
                    ws.generator_cpu),
        fmt::format("SSE {:.1f} µs (load generator CPU {:.2f} s)", sse.cpu_us_per_delivery(),
                    sse.generator_cpu),
        ratio(ws.cpu_us_per_delivery(), sse.cpu_us_per_delivery()), "<= 2 µs",
        ws.deliveries > 0 && ws.cpu_us_per_delivery() <= 2);
    add("serve tenants: WebSocket vs SSE p99", fmt::format("{:.1f} ms", ws.p99),
        fmt::format("SSE {:.1f} ms", sse.p99), ratio(ws.p99, sse.p99), "<= 1 (no slower)",
        ws.deliveries > 0 && ws.p99 <= sse.p99);
  }

  // The official client reading a million journal events from an old offset,
  // against `oasync tail` replaying the same events.
  void serve_catch_up() {
    auto db = fresh();
    db->scalar(fmt::format(
        "WITH e AS (INSERT INTO oasync.events (topic, watermark, doc_key, doc_version, scope, op, "
        "payload, payload_hash) SELECT 'runtime.run_summaries', g, 'run_summary:' || (g % {0}), g "
        "/ "
        "{0} + 1, 'org:1', 'upsert', ('{{\"doc\":' || g || ',\"note\":\"' || repeat('x', 230) || "
        "'\",\"status\":\"running\"}}')::json, sha256(g::text::bytea) FROM generate_series(1, {1}) "
        "g "
        "RETURNING 1) UPDATE oasync.topics SET head = {1} WHERE topic = 'runtime.run_summaries'",
        s_.docs, s_.catch_up));
    db->scalar("VACUUM ANALYZE oasync.events");
    Served server(db->url(), dir_);
    const std::string head =
        http_get(server.port,
                 "/v1/topics/runtime.run_summaries?offset=now&access_token=" + server.token("1"));
    const std::size_t at = head.find("Stream-Next-Offset: ");
    if (at == std::string::npos) throw std::runtime_error("no offset from oasync serve: " + head);
    const std::string epoch = head.substr(at + 20, 16);
    const std::string from = epoch + "_" + std::string(20, '0') + "_j";
    auto start = Clock::now();
    const auto client = run_process(
        {"node", std::string(OASYNC_TEST_SOURCE_DIR) + "/tests/e2e/catch-up.mjs",
         fmt::format("http://127.0.0.1:{}/v1/topics/runtime.run_summaries", server.port),
         server.token("1"), from});
    const double ours = seconds_since(start);
    if (client.exit_code != 0) throw std::runtime_error("catch-up client failed: " + client.err);
    const double cpu = cpu_seconds(server.child->pid());
    start = Clock::now();
    const auto tail = run_process({"/bin/sh", "-c",
                                   "exec \"$0\" --database-url \"$1\" tail runtime.run_summaries "
                                   "--after 0 --scope org:1 --format ndjson >/dev/null",
                                   oasync_binary(), db->url()});
    const double base = seconds_since(start);
    if (tail.exit_code != 0) throw std::runtime_error("tail failed: " + tail.err);
    const double r = static_cast<double>(s_.catch_up) / ours;
    const double b = static_cast<double>(s_.catch_up) / base;
    add(fmt::format("serve catch-up: the official client, {} events from an old offset",
                    s_.catch_up),
        fmt::format("{} (client: {}; server CPU {:.1f} s)", rate(r),
                    client.out.substr(0, client.out.find('\n')), cpu),
        "oasync tail " + rate(b), r / b, ">= 0.8", r / b >= 0.8);
  }

  void memory() {
    if (sink_rss_kib_ == 0) ingest();
    if (tail_rss_kib_ == 0) replay();
    add("memory: sink peak RSS over ingest", fmt::format("{} MiB", sink_rss_kib_ / 1024), "n/a", 0,
        "<= 64 MiB", sink_rss_kib_ <= 64 * 1024);
    add("memory: tail peak RSS over replay", fmt::format("{} MiB", tail_rss_kib_ / 1024), "n/a", 0,
        "<= 64 MiB", tail_rss_kib_ <= 64 * 1024);
  }

 private:
  void add(std::string scenario, std::string ours, std::string baseline, double ratio,
           std::string target, bool met) {
    rows.push_back(
        {std::move(scenario), std::move(ours), std::move(baseline), ratio, std::move(target), met});
    const Row& r = rows.back();
    fmt::print(stderr, "  done: {}: {} vs {}\n", r.scenario, r.ours, r.baseline);
  }

  Sizes s_;
  std::string dir_;
  long sink_rss_kib_ = 0;
  long tail_rss_kib_ = 0;
  double per_write_rate_ = 0;
};

}  // namespace

constexpr const char* kUsage =
    "usage: oasync_bench [--quick] [--scenario NAME] [--json FILE]\n"
    "scenarios: ingest, single, group, hot, fresh, replay, live, purge, notify, memory, serve,\n"
    "catch-up (all of them, in this order, without --scenario); channel: the sync:v1 WebSocket\n"
    "beside Durable Streams SSE in the same run, as serve runs it (serve's tenants rows)\n";

int main(int argc, char** argv) {
  bool quick = false;
  std::string only;
  std::string json_path = "bench-results.json";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") {
      quick = true;
    } else if (a == "--scenario" && i + 1 < argc) {
      only = argv[++i];
    } else if (a == "--json" && i + 1 < argc) {
      json_path = argv[++i];
    } else {
      fmt::print(stderr, "{}", kUsage);
      return 2;
    }
  }
  Sizes s;
  if (quick)
    s = {20000, 5000, 6000, 200, 2000, 8000, 4000, 20000, 2, 1000, 20000, 200, 20, 3, 100, 20000};
  char tmpl[] = "/tmp/oasync-bench.XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  chmod(dir.c_str(), 0755);
  Bench bench(s, dir);
  const std::map<std::string, std::function<void()>> scenarios = {
      {"ingest", [&] { bench.ingest(); }},          {"single", [&] { bench.single_write(); }},
      {"group", [&] { bench.group_commit(); }},     {"hot", [&] { bench.hot_topic(); }},
      {"replay", [&] { bench.replay(); }},          {"live", [&] { bench.live_latency(); }},
      {"purge", [&] { bench.purge_under_load(); }}, {"notify", [&] { bench.notification_cost(); }},
      {"memory", [&] { bench.memory(); }},          {"fresh", [&] { bench.fresh_database(); }},
      {"serve", [&] { bench.serve_fanout(); }},     {"catch-up", [&] { bench.serve_catch_up(); }},
      {"channel", [&] { bench.serve_channel(); }}};
  // (channel runs within serve, and alone only when named.)
  const std::vector<std::string> order = {"ingest", "single", "group", "hot",
                                          "fresh",  "replay", "live",  "purge",
                                          "notify", "memory", "serve", "catch-up"};
  if (!only.empty() && scenarios.count(only) == 0) {
    fmt::print(stderr, "oasync_bench: error: unknown scenario \"{}\"\n{}", only, kUsage);
    return 2;
  }
  try {
    for (const auto& name : only.empty() ? order : std::vector<std::string>{only}) {
      fmt::print(stderr, "running {}...\n", name);
      scenarios.at(name)();
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "oasync_bench: error: {}\n", e.what());
    return 1;
  }
  fmt::print(
      "\n| scenario | oasync | baseline | ratio | target | met |\n|---|---|---|---|---|---|\n");
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (const Row& r : bench.rows) {
    fmt::print("| {} | {} | {} | {} | {} | {} |\n", r.scenario, r.ours, r.baseline,
               r.ratio > 0 ? fmt::format("{:.2f}", r.ratio) : "-", r.target, r.met ? "yes" : "NO");
    out.push_back({{"scenario", r.scenario},
                   {"ours", r.ours},
                   {"baseline", r.baseline},
                   {"ratio", r.ratio},
                   {"target", r.target},
                   {"met", r.met}});
  }
  std::ofstream(json_path) << out.dump(2) << "\n";
  fmt::print("\n(written to {}{})\n", json_path,
             quick ? "; --quick sizes: figures are not meaningful" : "");
  std::filesystem::remove_all(dir);
  return 0;
}
