// oasync reproject TOPIC --input FILE|- [--format ndjson|proto] [--dry-run] [--reset] [--yes]
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>

#include <fmt/format.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl.h>

#include "app.hpp"
#include "exit_code.hpp"
#include "io.hpp"
#include "oasync/error.hpp"
#include "oasync/reproject.hpp"
#include "oasync/topics.hpp"
#include "oasync/wire.hpp"

namespace oasync::cli {
namespace {

struct Options {
  std::string topic;
  std::string input;
  std::string format = "ndjson";
  bool dry_run = false;
  bool reset = false;
  bool yes = false;
  std::int64_t batch_size = 1000;
  std::int64_t as_of = -1;  // -1: the head at the start
};

// Asks on the terminal; false when there is none or the answer is not "yes".
bool confirm(const std::string& question) {
  std::ifstream tty("/dev/tty");
  if (!tty) return false;
  fmt::print(stderr, "{} Type yes to go on: ", question);
  std::string answer;
  std::getline(tty, answer);
  return answer == "yes";
}

// Feeds NDJSON lines (bounded by the frame limit) into the reprojection.
void read_ndjson(int fd, std::size_t max_line, Reprojection& r) {
  for_each_line(fd, max_line, [&](std::uint64_t number, std::string_view line, bool too_long) {
    if (too_long) {
      throw Error(
          Code::invalid_input,
          fmt::format("line {}: longer than {} bytes (nothing was deleted)", number, max_line));
    }
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) return;
    DocWrite w;
    try {
      w = parse_write_line(line);
    } catch (const Error& e) {
      throw Error(Code::invalid_input,
                  fmt::format("line {}: {} (nothing was deleted)", number, e.what()));
    }
    r.add(std::move(w), fmt::format("line {}", number));
  });
}

// Feeds varint-delimited openagents.sync.v1.DocWrite messages.
void read_proto(int fd, std::size_t max_message, Reprojection& r) {
  google::protobuf::io::FileInputStream raw(fd);
  std::uint64_t number = 0;
  for (;;) {
    google::protobuf::io::CodedInputStream in(&raw);
    std::uint32_t size = 0;
    if (!in.ReadVarint32(&size)) {
      if (in.ExpectAtEnd() || raw.GetErrno() == 0) break;
      throw Error(Code::invalid_input,
                  fmt::format("message {}: cannot read its length", number + 1));
    }
    ++number;
    if (size > max_message) {
      throw Error(Code::invalid_input,
                  fmt::format("message {}: length {} exceeds {} bytes (nothing was deleted)",
                              number, size, max_message));
    }
    std::string bytes;
    if (!in.ReadString(&bytes, static_cast<int>(size))) {
      throw Error(Code::invalid_input,
                  fmt::format("message {}: input ended inside it (nothing was deleted)", number));
    }
    DocWrite w;
    try {
      w = decode_write(bytes);
    } catch (const Error& e) {
      throw Error(Code::invalid_input,
                  fmt::format("message {}: {} (nothing was deleted)", number, e.what()));
    }
    r.add(std::move(w), fmt::format("message {}", number));
  }
}

}  // namespace

void add_reproject_command(CLI::App& app, Context& ctx, std::vector<Command>& out) {
  auto o = std::make_shared<Options>();
  CLI::App* sub = app.add_subcommand("reproject", "Make a topic's docs equal to a desired doc set");
  sub->footer(
      "\nThe input is the complete desired doc set of TOPIC, as the runtime's projector emits\n"
      "it when replaying the authority log. Docs are compared by canonical hash: new and\n"
      "changed docs get new versions and events, docs missing from the input become\n"
      "tombstones, unchanged docs are untouched, so clients keep their cursors and receive\n"
      "only real changes. Streams its input in batches (bounded memory). Running it twice,\n"
      "the second run changes nothing. Any bad input line stops it before anything is deleted.\n"
      "Beside a live projector: docs whose last change is above the topic's head at the start\n"
      "(or --as-of W, the watermark the input corresponds to) are left alone and counted as\n"
      "skipped, and every change and delete is a compare-and-set on the version it compared,\n"
      "so a live write is never overwritten or deleted.\n"
      "--reset then rotates the topic's epoch: every client resyncs. It asks first unless --yes.");
  sub->add_option("TOPIC", o->topic, "Topic")->required();
  sub->add_option("--input", o->input, "NDJSON lines like `sink --input`, or - for stdin")
      ->required();
  sub->add_option("--format", o->format,
                  "ndjson, or proto (varint-delimited openagents.sync.v1.DocWrite messages)")
      ->check(CLI::IsMember({"ndjson", "proto"}));
  sub->add_flag("--dry-run", o->dry_run, "Count what would change; change nothing");
  sub->add_flag("--reset", o->reset, "After rebuilding, rotate the epoch (every client resyncs)");
  sub->add_flag("--yes", o->yes, "Do not ask before --reset");
  sub->add_option("--batch-size", o->batch_size, "Docs per transaction (default 1000)")
      ->check(CLI::Range(1, 100000));
  sub->add_option("--as-of", o->as_of,
                  "The watermark the input reflects; docs changed after it are left alone "
                  "(default: the head at the start)")
      ->check(CLI::NonNegativeNumber);
  out.push_back(
      {sub, [&ctx, o]() {
         if (o->reset && !o->dry_run && !o->yes &&
             !confirm(fmt::format(
                 "--reset discards the history of \"{}\": every client will resync.", o->topic))) {
           throw Error(Code::refused,
                       "--reset not confirmed (give --yes when there is no terminal to ask)");
         }
         int fd = STDIN_FILENO;
         if (o->input != "-") {
           fd = ::open(o->input.c_str(), O_RDONLY | O_CLOEXEC);
           if (fd < 0)
             throw Error(Code::not_found,
                         fmt::format("cannot open {}: {}", o->input, std::strerror(errno)));
         }
         const bool tty = isatty(STDERR_FILENO) != 0;
         ReprojectOptions options;
         options.dry_run = o->dry_run ? DryRun::yes : DryRun::no;
         options.batch_size = o->batch_size;
         if (o->as_of >= 0) options.as_of = o->as_of;
         Reprojection r(ctx.database_url(), o->topic, options);
         if (o->format == "proto") {
           read_proto(fd, ctx.config.sink.max_frame_bytes, r);
         } else {
           read_ndjson(fd, ctx.config.sink.max_frame_bytes, r);
         }
         if (fd != STDIN_FILENO) ::close(fd);
         const ReprojectCounts c = r.finish([&](const char* phase, std::int64_t n) {
           if (tty) fmt::print(stderr, "\rreproject {}: {} {}", o->topic, phase, n);
         });
         if (tty) fmt::print(stderr, "\n");
         fmt::print(
             "{}: {}{} unchanged, {} changed, {} new, {} deleted, {} skipped (changed since {})\n",
             o->topic, o->dry_run ? "would be: " : "", c.unchanged, c.changed, c.created, c.deleted,
             c.skipped, r.as_of());
         if (o->reset && !o->dry_run) {
           auto conn = ctx.connect();
           fmt::print("{}: new epoch {}; every client resyncs\n", o->topic,
                      reset_epoch(*conn, o->topic));
         }
         return to_int(ExitCode::ok);
       }});
}

}  // namespace oasync::cli
