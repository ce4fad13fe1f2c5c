#include "write_rules.hpp"

#include <algorithm>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "oasync/canonical_json.hpp"
#include "oasync/error.hpp"

namespace oasync::internal {
namespace {

// Text the database stores: no NUL, valid UTF-8.
bool storable(const std::string& s) {
  return storable_text(s);
}

WriteResult rejected(RejectReason reason, std::string detail) {
  WriteResult r;
  r.outcome = Outcome::rejected;
  r.reason = reason;
  r.detail = std::move(detail);
  return r;
}

std::string quote_key(const DocWrite& w) {
  return fmt::format("\"{}\"", w.doc_key);
}

// What needs no registry: sizes, NUL bytes, numbers.
std::optional<WriteResult> check_limits(const DocWrite& w) {
  if (w.topic.empty() || w.topic.size() > kMaxTopicBytes || !storable(w.topic)) {
    return rejected(RejectReason::invalid_topic,
                    fmt::format("topic must be 1..{} bytes of UTF-8 without NUL (got {} bytes)",
                                kMaxTopicBytes, w.topic.size()));
  }
  if (w.doc_key.empty() || w.doc_key.size() > kMaxDocKeyBytes || !storable(w.doc_key)) {
    return rejected(RejectReason::invalid_key,
                    fmt::format("doc_key must be 1..{} bytes of UTF-8 without NUL (got {} bytes)",
                                kMaxDocKeyBytes, w.doc_key.size()));
  }
  if (w.scope.size() > kMaxScopeBytes || !storable(w.scope)) {
    return rejected(
        RejectReason::invalid_scope,
        fmt::format("scope must be at most {} bytes of UTF-8 without NUL (got {} bytes)",
                    kMaxScopeBytes, w.scope.size()));
  }
  if (w.source_stream.size() > kMaxDocKeyBytes || !storable(w.source_stream)) {
    return rejected(RejectReason::invalid_write,
                    fmt::format("source_stream must be at most {} bytes of UTF-8 without NUL",
                                kMaxDocKeyBytes));
  }
  if ((w.source_seq && *w.source_seq < 0) || (w.expected_version && *w.expected_version < 0)) {
    return rejected(RejectReason::invalid_write, "source_seq and expected_version must be >= 0");
  }
  return std::nullopt;
}

}  // namespace

std::variant<ValidWrite, WriteResult> validate_write(const DocWrite& w, const Registry& registry) {
  if (auto r = check_limits(w)) return std::move(*r);
  const auto topic = registry.find(w.topic);
  if (topic == registry.end()) {
    return rejected(RejectReason::topic_not_registered,
                    fmt::format("topic \"{}\" is not registered", w.topic));
  }
  const TopicInfo& info = topic->second;
  if (w.doc_key.size() <= info.prefix.size() ||
      w.doc_key.compare(0, info.prefix.size(), info.prefix) != 0) {
    return rejected(RejectReason::key_prefix_mismatch,
                    fmt::format("doc_key {} does not start with \"{}\" followed by an id, as "
                                "topic \"{}\" requires",
                                quote_key(w), info.prefix, w.topic));
  }
  ValidWrite out;
  out.write = &w;
  if (w.op == Op::delete_) return out;
  CanonicalJson canonical;
  try {
    canonical = canonicalize(w.payload, JsonShape::object);
  } catch (const Error& e) {
    return rejected(RejectReason::payload_not_object,
                    fmt::format("payload of doc {}: {}", quote_key(w), e.what()));
  }
  if (static_cast<std::int64_t>(canonical.text.size()) > info.max_payload_bytes) {
    return rejected(
        RejectReason::payload_too_large,
        fmt::format("payload of doc {} is {} bytes, topic \"{}\" allows {}", quote_key(w),
                    canonical.text.size(), w.topic, info.max_payload_bytes));
  }
  out.canonical = std::move(canonical.text);
  out.hash.assign(reinterpret_cast<const char*>(canonical.sha256.data()), canonical.sha256.size());
  return out;
}

std::map<std::string, ProducerCheckpoint> collect_checkpoints(
    const std::vector<const Batch*>& batches) {
  std::map<std::string, ProducerCheckpoint> checkpoints;
  for (const Batch* batch : batches) {
    if (!batch->checkpoint) continue;
    const ProducerCheckpoint& c = *batch->checkpoint;
    if (c.producer_id.empty() || c.producer_id.find('\0') != std::string::npos || c.epoch < 0 ||
        c.position < 0) {
      throw Error(Code::invalid_argument,
                  "checkpoint needs a non-empty producer_id and non-negative epoch and position");
    }
    auto [it, fresh] = checkpoints.emplace(c.producer_id, c);
    if (!fresh) {
      if (c.epoch < it->second.epoch) {
        throw Error(Code::fenced,
                    fmt::format("producer \"{}\" is fenced: epoch {} is below epoch {}",
                                c.producer_id, c.epoch, it->second.epoch));
      }
      it->second = c;
    }
  }
  return checkpoints;
}

bool unchanged(const DocState& doc, Op op, std::string_view hash, std::string_view scope) {
  switch (op) {
    case Op::upsert:
      return doc.live() && doc.hash == hash && doc.scope == scope;
    case Op::delete_:
      return !doc.live();
  }
  return false;
}

Resolution resolve(std::map<DocKey, DocState> locked, std::vector<ValidWrite> writes) {
  Resolution out;
  out.results.resize(writes.size());
  // Per doc, the index of its latest planned event.
  std::map<DocKey, std::size_t> last_event;
  // Docs whose source position an unchanged write advanced.
  std::set<DocKey> advanced;
  // What each doc was before the batch.
  std::map<DocKey, std::pair<bool, bool>> before;  // (live, tombstone)
  for (const auto& [key, st] : locked) before[key] = {st.live(), st.version > 0 && st.deleted};
  for (std::size_t i = 0; i < writes.size(); ++i) {
    ValidWrite& v = writes[i];
    const DocWrite& w = *v.write;
    DocKey key{w.topic, w.doc_key};
    DocState& st = locked.at(key);
    WriteResult& r = out.results[i];
    r.doc_version = st.version;
    if (w.source_seq && st.source_seq && w.source_stream == st.source_stream &&
        *w.source_seq <= *st.source_seq) {
      r.outcome = Outcome::duplicate;
      r.detail = fmt::format("source_seq {} is at or below the stored {} of stream \"{}\"",
                             *w.source_seq, *st.source_seq, st.source_stream);
      continue;
    }
    if (w.expected_version && *w.expected_version != st.version) {
      r.outcome = Outcome::conflict;
      r.detail = fmt::format("expected version {}, doc {} is at version {}", *w.expected_version,
                             quote_key(w), st.version);
      continue;
    }
    if (w.source_seq) {
      st.source_stream = w.source_stream;
      st.source_seq = w.source_seq;
    }
    if (unchanged(st, w.op, v.hash, w.scope)) {
      r.outcome = Outcome::unchanged;
      if (w.source_seq) advanced.insert(key);
      continue;
    }
    PlannedEvent e;
    if (w.op == Op::upsert) {
      if (st.version > 0 && st.scope != w.scope) e.previous_scope = st.scope;
      st.scope = w.scope;
    }
    st.version += 1;
    st.deleted = w.op == Op::delete_;
    st.hash = v.hash;
    r.outcome = Outcome::applied;
    r.doc_version = st.version;
    last_event[key] = out.events.size();
    e.topic = w.topic;
    e.doc_key = w.doc_key;
    e.version = st.version;
    e.scope = st.scope;
    e.op = w.op;
    e.payload = std::move(v.canonical);
    e.hash = std::move(v.hash);
    e.write = i;
    out.events.push_back(std::move(e));
  }
  for (auto& [key, st] : locked) {
    const auto last = last_event.find(key);
    if (last != last_event.end()) {
      const auto [was_live, was_tombstone] = before.at(key);
      out.docs.push_back({key, std::move(st), last->second, was_live, was_tombstone});
    } else if (advanced.count(key)) {
      out.positions.push_back(
          {key, st.source_stream, *st.source_seq, st.deleted || st.version == 0});
    } else if (st.placeholder) {
      out.unused_placeholders.push_back(key);
    }
  }
  return out;
}

std::map<std::string, TopicChange> number_events(Resolution& resolution) {
  std::map<std::string, TopicChange> changes;
  for (PlannedEvent& e : resolution.events) e.sequence = ++changes[e.topic].events;
  for (const PlannedDoc& d : resolution.docs) {
    TopicChange& c = changes[d.key.first];
    c.live_docs += (d.state.live() ? 1 : 0) - (d.was_live ? 1 : 0);
    c.tombstones += (d.state.deleted ? 1 : 0) - (d.was_tombstone ? 1 : 0);
  }
  return changes;
}

void place_events(Resolution& resolution, const std::map<std::string, std::int64_t>& bases) {
  for (PlannedEvent& e : resolution.events) {
    e.watermark = bases.at(e.topic) + e.sequence;
    resolution.results[e.write].watermark = e.watermark;
  }
}

}  // namespace oasync::internal
