// oasync sink --stdio | --input FILE|- [--results]
//
// Port mode (--stdio): each frame on stdin is a 4-byte big-endian length and an
// encoded WriteBatch; each is answered on stdout, in order, by a length and an
// encoded BatchResult (Erlang's open_port(..., [{packet, 4}, binary])). Frames
// that arrive while a transaction is in flight join the next one (group
// commit); answers stay one per frame.
//
// NDJSON mode (--input): one DocWrite per line; malformed lines are answered
// as rejected/malformed and the stream goes on.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <thread>

#include <fmt/format.h>

#include "app.hpp"
#include "exit_code.hpp"
#include "group_queue.hpp"
#include "io.hpp"
#include "oasync/error.hpp"
#include "oasync/sink.hpp"
#include "oasync/wire.hpp"

namespace oasync::cli {
namespace {

struct Options {
  bool stdio = false;
  std::string input;
  bool results = false;
  std::size_t max_batch_writes = 0;
  std::int64_t max_delay_ms = -1;
  std::size_t max_frame_bytes = 0;
  bool no_notify = false;
};

// Writes answers to stdout; throws when it is gone.
void write_stdout(std::string_view bytes) {
  write_all(STDOUT_FILENO, bytes, "answers to stdout");
}

// Outcomes counted for the summary on stderr. A new Outcome fails the build
// here (-Werror=switch) until it is counted.
struct Tally {
  std::uint64_t applied = 0;
  std::uint64_t unchanged = 0;
  std::uint64_t duplicate = 0;
  std::uint64_t conflict = 0;
  std::uint64_t rejected = 0;
  std::uint64_t failed = 0;  // writes of batches that failed as a whole

  void add(const WriteResult& r) {
    switch (r.outcome) {
      case Outcome::applied:
        ++applied;
        return;
      case Outcome::unchanged:
        ++unchanged;
        return;
      case Outcome::duplicate:
        ++duplicate;
        return;
      case Outcome::conflict:
        ++conflict;
        return;
      case Outcome::rejected:
        ++rejected;
        return;
    }
  }
  std::string summary() const {
    return fmt::format("{} applied, {} unchanged, {} duplicate, {} conflict, {} rejected", applied,
                       unchanged, duplicate, conflict, rejected) +
           (failed ? fmt::format(", {} in failed batches", failed) : "");
  }
};

// ---- Port mode ----

struct Frame {
  std::uint64_t number = 0;
  std::optional<Batch> batch;      // unset when malformed
  std::optional<Error> malformed;  // why it did not decode
};

// What the reader thread shares with the committing thread. Owned jointly, so
// that a reader left blocked on input after a fatal error touches nothing freed.
template <typename Item>
struct Shared {
  explicit Shared(std::size_t capacity) : queue(capacity) {}
  GroupQueue<Item> queue;
  // Set by the reader (input failure, framing lost) before close().
  std::optional<Error> fatal;
};

// Joins the reader on the normal path; detaches it (it may be blocked in
// read()) when the committing thread leaves early.
struct ReaderThread {
  std::thread thread;
  void join() { thread.join(); }
  ~ReaderThread() {
    if (thread.joinable()) thread.detach();
  }
};

int run_stdio(Sink& sink, const Options& o) {
  auto shared = std::make_shared<Shared<Frame>>(o.max_batch_writes * 2);
  ReaderThread reader{std::thread([shared, o] {
    auto& queue = shared->queue;
    try {
      FrameDecoder decoder(o.max_frame_bytes);
      std::vector<char> buffer(1 << 16);
      for (;;) {
        const std::size_t n = read_some(STDIN_FILENO, buffer.data(), buffer.size());
        if (n == 0) {
          if (decoder.mid_frame()) {
            throw Error(Code::invalid_input,
                        fmt::format("frame {}: input ended inside the frame; framing lost",
                                    decoder.frames() + 1));
          }
          break;
        }
        decoder.feed(std::string_view(buffer.data(), n));
        while (auto bytes = decoder.next()) {
          Frame frame;
          frame.number = decoder.frames();
          try {
            frame.batch = decode_batch(*bytes);
          } catch (const Error& e) {
            frame.malformed = e.with_context(fmt::format("frame {}", frame.number));
          }
          const std::size_t weight = frame.batch ? frame.batch->writes.size() : 1;
          queue.push(std::move(frame), weight);
        }
      }
    } catch (const Error& e) {
      shared->fatal = e;
    } catch (const std::exception& e) {
      shared->fatal = Error(Code::internal, e.what());
    }
    queue.close();
  })};

  Tally tally;
  std::uint64_t frames = 0;
  for (;;) {
    std::vector<Frame> group =
        shared->queue.take(o.max_batch_writes, std::chrono::milliseconds(o.max_delay_ms));
    if (group.empty()) break;
    std::vector<const Batch*> batches;
    for (const Frame& f : group) {
      if (f.batch) batches.push_back(&*f.batch);
    }
    std::vector<Sink::GroupResult> results = sink.apply_group(batches);
    std::string answers;
    std::size_t next = 0;
    for (const Frame& f : group) {
      ++frames;
      if (!f.batch) {
        answers += encode_frame(encode_error(*f.malformed));
        continue;
      }
      const Sink::GroupResult& r = results[next++];
      if (r.error) {
        tally.failed += f.batch->writes.size();
        answers += encode_frame(encode_error(*r.error));
      } else {
        for (const auto& w : r.results) tally.add(w);
        answers += encode_frame(encode_results(r.results));
      }
    }
    write_stdout(answers);
  }
  reader.join();
  fmt::print(stderr, "oasync sink: {} frames: {}\n", frames, tally.summary());
  if (shared->fatal) throw *shared->fatal;
  return to_int(ExitCode::ok);
}

// ---- NDJSON mode ----

struct Line {
  std::uint64_t number = 0;
  std::optional<DocWrite> write;  // unset when malformed
  std::string malformed;          // why, for the result's detail
};

int run_ndjson(Sink& sink, const Options& o) {
  int fd = STDIN_FILENO;
  if (o.input != "-") {
    fd = ::open(o.input.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      throw Error(Code::not_found,
                  fmt::format("cannot open {}: {}", o.input, std::strerror(errno)));
    }
  }
  auto shared = std::make_shared<Shared<Line>>(o.max_batch_writes * 2);
  ReaderThread reader{std::thread([shared, o, fd] {
    auto& queue = shared->queue;
    try {
      for_each_line(fd, o.max_frame_bytes,
                    [&](std::uint64_t number, std::string_view line, bool too_long) {
                      Line item;
                      item.number = number;
                      if (too_long) {
                        item.malformed = fmt::format("line {}: longer than the maximum of {} bytes",
                                                     number, o.max_frame_bytes);
                      } else if (line.find_first_not_of(" \t\r") == std::string_view::npos) {
                        return;  // blank lines are skipped, but counted
                      } else {
                        try {
                          item.write = parse_write_line(line);
                        } catch (const Error& e) {
                          item.malformed = fmt::format("line {}: {}", number, e.what());
                        }
                      }
                      queue.push(std::move(item), 1);
                    });
    } catch (const Error& e) {
      shared->fatal = e;
    } catch (const std::exception& e) {
      shared->fatal = Error(Code::internal, e.what());
    }
    queue.close();
  })};

  Tally tally;
  std::uint64_t lines = 0;
  std::optional<Error> failure;
  for (;;) {
    std::vector<Line> group =
        shared->queue.take(o.max_batch_writes, std::chrono::milliseconds(o.max_delay_ms));
    if (group.empty()) break;
    Batch batch;
    for (Line& l : group) {
      if (l.write) batch.writes.push_back(std::move(*l.write));
    }
    std::vector<WriteResult> results;
    try {
      results = sink.apply(batch);
    } catch (const Error& e) {
      failure = e.code() == Code::outcome_unknown
                    ? e.with_context(fmt::format(
                          "lines {} to {} may or may not have been applied; check before "
                          "sending them again (writes without a source_seq would apply twice)",
                          group.front().number, group.back().number))
                    : e.with_context(fmt::format("lines {} to {} were not applied",
                                                 group.front().number, group.back().number));
      tally.failed += batch.writes.size();
      break;
    }
    std::string out;
    std::size_t next = 0;
    for (const Line& l : group) {
      ++lines;
      WriteResult r;
      if (l.write) {
        r = std::move(results[next++]);
      } else {
        r.outcome = Outcome::rejected;
        r.reason = RejectReason::malformed;
        r.detail = l.malformed;
      }
      tally.add(r);
      if (o.results) {
        out += result_line(l.number, r);
        out.push_back('\n');
      } else if (r.outcome == Outcome::rejected) {
        fmt::print(stderr, "oasync sink: line {}: rejected ({}): {}\n", l.number,
                   to_string(r.reason), r.detail);
      }
    }
    if (!out.empty()) write_stdout(out);
  }
  // After a database failure the reader may be blocked on input nobody will
  // send; it is left to the process exit (ReaderThread detaches it).
  if (!failure) {
    reader.join();
    if (fd != STDIN_FILENO) ::close(fd);
  }
  fmt::print(stderr, "oasync sink: {} lines: {}\n", lines, tally.summary());
  if (failure) throw *failure;
  if (shared->fatal) throw *shared->fatal;
  return to_int(ExitCode::ok);
}

}  // namespace

void add_sink_command(CLI::App& app, Context& ctx, std::vector<Command>& out) {
  auto o = std::make_shared<Options>();
  CLI::App* sub =
      app.add_subcommand("sink", "Apply doc writes from a runtime projector (port mode or NDJSON)");
  sub->footer(
      "\nUpserts docs and appends journal events, one transaction per group of input.\n"
      "  --stdio        port mode for a BEAM runtime: 4-byte big-endian length + protobuf\n"
      "                 WriteBatch per frame, answered in order by length + BatchResult;\n"
      "                 while the database is unreachable (even at start) each frame is\n"
      "                 answered with a retryable error, and the port stays up\n"
      "  --input FILE   NDJSON, one DocWrite per line (fields as in sink.proto, payload\n"
      "                 inline); '-' reads stdin. A summary goes to stderr; with --results,\n"
      "                 one JSON result per input line goes to stdout.\n"
      "A connection lost after COMMIT was sent is settled, not guessed: the sink asks\n"
      "the database (pg_xact_status on the same server and timeline, for up to 30 s) and\n"
      "answers the real results, a retryable \"did not commit\", or, only when the\n"
      "database cannot say, outcome_unknown (never resend such a batch blindly).\n"
      "Exits 0 once every input was answered, whatever the outcomes; 1 on a database\n"
      "failure (NDJSON: it names the lines not applied, or those whose outcome is\n"
      "unknown) or lost framing (stdio).");
  auto* stdio = sub->add_flag("--stdio", o->stdio, "Port mode: framed protobuf on stdin/stdout");
  auto* input = sub->add_option("--input", o->input, "NDJSON input file, or - for stdin");
  stdio->excludes(input);
  sub->add_flag("--results", o->results, "NDJSON mode: print one result line per input line");
  sub->add_option("--max-batch-writes", o->max_batch_writes,
                  "Most writes per transaction (default 2000, or sink.max_batch_writes)")
      ->check(CLI::Range(1, 1000000));
  sub->add_option("--max-delay-ms", o->max_delay_ms,
                  "How long a frame may wait for others to share its transaction (default 0)")
      ->check(CLI::Range(0, 60000));
  sub->add_option("--max-frame-bytes", o->max_frame_bytes,
                  "Largest frame or line accepted (default 16 MiB)")
      ->check(CLI::Range(1024, 1 << 30));
  sub->add_flag("--no-notify", o->no_notify, "Do not notify listeners (benchmarks only)")
      ->group("");
  out.push_back({sub, [&ctx, o]() {
                   if (!o->stdio && o->input.empty()) {
                     throw Error(Code::invalid_argument,
                                 "sink needs --stdio or --input FILE (see oasync sink --help)");
                   }
                   Options resolved = *o;
                   if (resolved.max_batch_writes == 0) {
                     resolved.max_batch_writes = ctx.config.sink.max_batch_writes;
                   }
                   if (resolved.max_delay_ms < 0)
                     resolved.max_delay_ms = ctx.config.sink.max_delay_ms;
                   if (resolved.max_frame_bytes == 0) {
                     resolved.max_frame_bytes = ctx.config.sink.max_frame_bytes;
                   }
                   std::signal(SIGPIPE, SIG_IGN);
                   SinkOptions sink_options;
                   sink_options.notify = o->no_notify ? Notify::off : Notify::on;
                   // A port outlives database restarts: it answers retryable
                   // errors until the database is back, instead of exiting.
                   sink_options.connect = resolved.stdio ? Connect::when_needed : Connect::now;
                   auto sink = Sink::open(ctx.database_url(), sink_options);
                   return resolved.stdio ? run_stdio(*sink, resolved) : run_ndjson(*sink, resolved);
                 }});
}

}  // namespace oasync::cli
