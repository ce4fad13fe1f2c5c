#include "output.hpp"

#include <unistd.h>

#include <fmt/format.h>
#include <google/protobuf/io/coded_stream.h>
#include <nlohmann/json.hpp>

#include "io.hpp"
#include "oasync/canonical_json.hpp"
#include "oasync/error.hpp"
#include "oasync/serve/messages.hpp"
#include "openagents/sync/v1/sync.pb.h"

namespace oasync::cli {
namespace {

namespace pb = openagents::sync::v1;
using messages::to_proto;
using ojson = nlohmann::ordered_json;

std::string quoted(const std::string& s) {
  return nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void append_int(std::string& out, std::int64_t value) {
  const fmt::format_int text(value);
  out.append(text.data(), text.size());
}

// Appends `s` as a JSON string. Text that needs no escaping (the usual key,
// topic or scope) is copied as is; anything else goes through the JSON
// library, so escapes and invalid UTF-8 are handled in one place.
void append_quoted(std::string& out, const std::string& s) {
  for (const unsigned char c : s) {
    if (c < 0x20 || c == '"' || c == '\\' || c >= 0x80) {
      out += quoted(s);
      return;
    }
  }
  out += '"';
  out += s;
  out += '"';
}

ojson position_json(const TopicPosition& p) {
  return {{"topic", p.topic},
          {"epoch", p.epoch},
          {"head", p.head},
          {"purged_through", p.purged_through}};
}

}  // namespace

Format parse_format(const std::string& name) {
  if (name == "text") return Format::text;
  if (name == "ndjson") return Format::ndjson;
  if (name == "proto") return Format::proto;
  if (name == "json") return Format::json;
  throw Error(Code::invalid_argument, fmt::format("unknown format \"{}\"", name));
}

Output::~Output() {
  try {
    flush();
  } catch (...) {
    // Nowhere left to report it; the process is ending.
  }
}

void Output::message(const std::string& serialized) {
  std::string prefix;
  {
    google::protobuf::io::StringOutputStream stream(&prefix);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.WriteVarint32(static_cast<std::uint32_t>(serialized.size()));
  }
  buffer_ += prefix;
  buffer_ += serialized;
}

void Output::event(const Event& e) {
  if (format_ == Format::proto) {
    pb::ServerMessage m;
    to_proto(e, m.mutable_update());
    message(m.SerializeAsString());
    return;
  }
  if (format_ == Format::text) {
    buffer_ += fmt::format("{} {} {} v{} {}{}{} {}\n", e.topic, e.watermark, e.doc_key,
                           e.doc_version, to_string(e.op), e.scope.empty() ? "" : " ", e.scope,
                           e.payload.empty() ? "-" : e.payload);
    return;
  }
  // ndjson, built by hand so the stored canonical payload goes out verbatim.
  buffer_ += R"({"topic":)";
  append_quoted(buffer_, e.topic);
  buffer_ += R"(,"epoch":")";
  buffer_ += e.epoch;
  buffer_ += R"(","watermark":)";
  append_int(buffer_, e.watermark);
  buffer_ += R"(,"doc_key":)";
  append_quoted(buffer_, e.doc_key);
  buffer_ += R"(,"doc_version":)";
  append_int(buffer_, e.doc_version);
  buffer_ += R"(,"op":")";
  buffer_ += to_string(e.op);
  buffer_ += R"(","scope":)";
  append_quoted(buffer_, e.scope);
  buffer_ += R"(,"payload_hash":)";
  if (e.payload_hash.empty()) {
    buffer_ += "null";
  } else {
    buffer_ += '"';
    buffer_ += to_hex(e.payload_hash);
    buffer_ += '"';
  }
  buffer_ += R"(,"payload":)";
  buffer_ += e.payload.empty() ? "null" : e.payload;
  if (e.payload_fetched) buffer_ += R"(,"payload_fetched":true)";
  buffer_ += "}\n";
}

void Output::heartbeat(const std::vector<TopicPosition>& positions) {
  if (format_ == Format::proto) {
    pb::ServerMessage m;
    for (const auto& p : positions) to_proto(p, m.mutable_heartbeat()->add_watermarks());
    message(m.SerializeAsString());
    return;
  }
  if (format_ == Format::text) {
    for (const auto& p : positions) {
      buffer_ += fmt::format("heartbeat {} head {} purged_through {} epoch {}\n", p.topic, p.head,
                             p.purged_through, p.epoch);
    }
    return;
  }
  ojson topics = ojson::array();
  for (const auto& p : positions) topics.push_back(position_json(p));
  buffer_ += ojson{{"heartbeat", {{"topics", topics}}}}.dump() + "\n";
}

void Output::stale(const ResumeCheck& check, const std::string& cursor_epoch,
                   std::int64_t cursor_watermark) {
  const TopicPosition& p = check.position;
  const std::string message_text = messages::stale_text(check, cursor_watermark);
  if (format_ == Format::proto) {
    pb::ServerMessage m;
    to_proto(check, cursor_epoch, cursor_watermark, m.mutable_error());
    this->message(m.SerializeAsString());
    return;
  }
  if (format_ == Format::text) {
    buffer_ += "error: " + message_text + "\n";
    return;
  }
  buffer_ += ojson{{"error",
                    {{"code", "stale_cursor"},
                     {"message", message_text},
                     {"stale",
                      {{"topic", p.topic},
                       {"reason", to_string(check.reason)},
                       {"floor", p.purged_through},
                       {"head", p.head},
                       {"epoch", p.epoch},
                       {"cursor_watermark", cursor_watermark},
                       {"cursor_epoch", cursor_epoch}}}}}}
                 .dump() +
             "\n";
}

void Output::snapshot_header(const Reader::SnapshotHeader& h) {
  if (format_ == Format::proto) {
    pb::ServerMessage m;
    to_proto(h.position, m.mutable_snapshot_header()->mutable_position());
    if (h.since) m.mutable_snapshot_header()->set_since(static_cast<std::uint64_t>(*h.since));
    message(m.SerializeAsString());
    return;
  }
  ojson header = position_json(h.position);
  header["since"] = h.since ? ojson(*h.since) : ojson(nullptr);
  buffer_ += ojson{{"snapshot", header}}.dump() + "\n";
}

void Output::doc(const Doc& d) {
  if (format_ == Format::proto) {
    pb::ServerMessage m;
    to_proto(d, m.mutable_doc());
    message(m.SerializeAsString());
    return;
  }
  buffer_ += fmt::format(
      R"({{"topic":{},"doc_key":{},"scope":{},"doc_version":{},"deleted":{},"payload_hash":{},"last_watermark":{},"payload":{}}})",
      quoted(d.topic), quoted(d.doc_key), quoted(d.scope), d.doc_version,
      d.deleted ? "true" : "false",
      d.payload_hash.empty() ? "null" : "\"" + to_hex(d.payload_hash) + "\"", d.last_watermark,
      d.payload.empty() ? "null" : d.payload);
  buffer_ += "\n";
}

void Output::flush() {
  // Cleared after writing, not swapped away: the buffer keeps its capacity,
  // so a long replay does not reallocate (and page-fault) once per page.
  try {
    write_all(STDOUT_FILENO, buffer_, "to stdout");
  } catch (...) {
    buffer_.clear();
    throw;
  }
  buffer_.clear();
}

}  // namespace oasync::cli
