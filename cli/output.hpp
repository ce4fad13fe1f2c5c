// How readers print: one place for the text, NDJSON and protobuf forms of
// events, heartbeats, stale-cursor errors and docs.
//
//   ndjson  one JSON object per line; events carry the payload inline;
//           heartbeats are {"heartbeat":{...}}, errors {"error":{...}};
//   proto   openagents.sync.v1.ServerMessage, each preceded by its length as
//           a varint (protobuf's delimited format; protoc --decode reads one);
//   text    one line per event for people.
// Output is buffered and written to stdout by flush().
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "oasync/reader.hpp"

namespace oasync::cli {

enum class Format { text, ndjson, proto, json };

// Parses "text", "ndjson", "proto", "json"; throws oasync::Error otherwise.
Format parse_format(const std::string& name);

class Output {
 public:
  explicit Output(Format format) : format_(format) {}
  Output(const Output&) = delete;
  Output& operator=(const Output&) = delete;
  ~Output();

  void event(const Event& e);
  void heartbeat(const std::vector<TopicPosition>& positions);
  // The Error envelope for a stale cursor (code stale cursor, reason, floor, head).
  void stale(const ResumeCheck& check, const std::string& cursor_epoch,
             std::int64_t cursor_watermark);
  void snapshot_header(const Reader::SnapshotHeader& header);
  void doc(const Doc& d);
  // Writes what is buffered to stdout. Throws oasync::Error when stdout is gone.
  void flush();
  // Drops what is buffered (a page that failed midway: it is read again).
  void discard() { buffer_.clear(); }
  // Bytes waiting; callers flush past a threshold to keep memory bounded.
  std::size_t buffered() const { return buffer_.size(); }

 private:
  void message(const std::string& serialized);

  Format format_;
  std::string buffer_;
};

}  // namespace oasync::cli
