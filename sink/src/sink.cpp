#include "oasync/sink.hpp"

#include <algorithm>
#include <map>
#include <set>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "db.hpp"
#include "oasync/canonical_json.hpp"
#include "oasync/connection.hpp"
#include "oasync/error.hpp"
#include "oasync/topics.hpp"

namespace oasync {
namespace {

using json = nlohmann::json;

// What the sink caches of a registered topic. config_revision tells whether
// the cache is current: it is compared under the topic's row lock.
struct TopicInfo {
  std::string prefix;
  PayloadMode mode = PayloadMode::inline_payload;
  std::int64_t max_payload_bytes = 0;
  std::int64_t config_revision = 0;
};

using Registry = std::map<std::string, TopicInfo, std::less<>>;

// Thrown inside a transaction when the registry changed since it was cached;
// the transaction is rolled back and run again with a fresh registry.
struct RegistryChanged {};

// Thrown inside a transaction when a doc it was about to create was created
// by a concurrent transaction; the transaction is rolled back and run again.
struct DocCreatedConcurrently {};

// A write that passed validation, with its canonical payload.
struct ValidWrite {
  const DocWrite* write = nullptr;
  std::string canonical;  // empty for removes
  std::string hash_hex;   // empty for removes
};

// A doc's state as locked in the database and then as the batch changes it.
struct DocState {
  std::string scope;
  std::int64_t version = 0;
  bool deleted = false;
  std::string hash_hex;
  std::string source_stream;
  std::optional<std::int64_t> source_seq;
  // Index into the transaction's events of this doc's latest applied change;
  // -1 while the batch has not changed the doc.
  std::ptrdiff_t last_event = -1;
};

using DocKey = std::pair<std::string, std::string>;  // (topic, doc_key)

// An applied write's journal event; its watermark is set once the topic is locked.
struct Event {
  std::string topic;
  std::string doc_key;
  std::int64_t version = 0;
  std::string scope;
  bool deleted = false;
  std::string payload;  // canonical JSON; empty for removes
  std::string hash_hex;
  std::int64_t watermark = 0;
  WriteResult* result = nullptr;
};

const char* const kLockDocs = "oasync_sink_lock_docs";
const char* const kCreateDocs = "oasync_sink_create_docs";
const char* const kLockTopics = "oasync_sink_lock_topics";
const char* const kWrite = "oasync_sink_write";
const char* const kLoadRegistry = "oasync_sink_load_registry";
const char* const kReadCheckpoint = "oasync_sink_read_checkpoint";

// Phase 1 of locking the batch's docs: locks the existing ones in
// (topic, doc_key) order and returns their state. Under READ COMMITTED, FOR
// UPDATE waits for a concurrent writer and then returns the committed row.
const char* const kLockDocsSql = R"SQL(
SELECT d.topic, d.doc_key, d.scope, d.doc_version, d.deleted, encode(d.payload_hash, 'hex'),
       d.source_stream, d.source_seq
FROM oasync.docs AS d
JOIN json_to_recordset($1::json) AS k(t text, k text) ON d.topic = k.t AND d.doc_key = k.k
ORDER BY d.topic COLLATE "C", d.doc_key COLLATE "C"
FOR UPDATE OF d
)SQL";

// Phase 2: inserts version-0 placeholders for the docs that do not exist, in
// the same order, and returns the keys it inserted. A key missing from the
// answer was created by a concurrent transaction that has committed since;
// the batch then starts over, finding that doc in phase 1. (Why this cannot
// deadlock: a transaction waits in phase 2 only on another's uncommitted
// placeholder, and a transaction holding placeholders waits on nothing but
// later placeholders, in the same global order, and topic rows.) A
// placeholder that no write turns into a real doc is deleted by the write
// statement, so readers never see one.
const char* const kCreateDocsSql = R"SQL(
INSERT INTO oasync.docs AS d (topic, doc_key, scope, doc_version, last_watermark)
SELECT k.t, k.k, '', 0, 0
FROM json_to_recordset($1::json) AS k(t text, k text)
ORDER BY k.t COLLATE "C", k.k COLLATE "C"
ON CONFLICT (topic, doc_key) DO NOTHING
RETURNING d.topic, d.doc_key
)SQL";

// Locks the topics that receive events, in name order, and returns their heads.
const char* const kLockTopicsSql = R"SQL(
SELECT topic, head, config_revision
FROM oasync.topics
WHERE topic IN (SELECT json_array_elements_text($1::json))
ORDER BY topic COLLATE "C"
FOR NO KEY UPDATE
)SQL";

// Everything else in one statement: events, doc rows, placeholders, heads,
// producer checkpoints and the notification (delivered at commit).
const char* const kWriteSql = R"SQL(
WITH ev AS (
  INSERT INTO oasync.events (topic, watermark, doc_key, doc_version, scope, op, payload,
                             payload_hash)
  SELECT e.t, e.w, e.k, e.v, e.s, e.o, e.p::json, decode(e.h, 'hex')
  FROM json_to_recordset($1::json) AS e(t text, w bigint, k text, v bigint, s text, o text,
                                        p text, h text)
  RETURNING 1
), docs AS (
  UPDATE oasync.docs AS d
  SET scope = x.s, doc_version = x.v, deleted = x.d, payload = x.p::json,
      payload_hash = decode(x.h, 'hex'), source_stream = x.ss, source_seq = x.sq,
      last_watermark = x.w, updated_at = now()
  FROM json_to_recordset($2::json) AS x(t text, k text, s text, v bigint, d boolean, p text,
                                        h text, ss text, sq bigint, w bigint)
  WHERE d.topic = x.t AND d.doc_key = x.k
  RETURNING 1
), placeholders AS (
  DELETE FROM oasync.docs AS d
  USING json_to_recordset($3::json) AS g(t text, k text)
  WHERE d.topic = g.t AND d.doc_key = g.k AND d.doc_version = 0
  RETURNING 1
), heads AS (
  UPDATE oasync.topics AS t SET head = h.head
  FROM json_to_recordset($4::json) AS h(t text, head bigint)
  WHERE t.topic = h.t
  RETURNING t.topic, t.head
), checkpoints AS (
  INSERT INTO oasync.producer_checkpoints AS c (producer_id, epoch, position)
  SELECT p.id, p.e, p.pos FROM json_to_recordset($5::json) AS p(id text, e bigint, pos bigint)
  ORDER BY p.id COLLATE "C"
  ON CONFLICT (producer_id) DO UPDATE
    SET epoch = excluded.epoch, position = excluded.position, updated_at = now()
    WHERE c.epoch <= excluded.epoch
  RETURNING c.producer_id
)
SELECT (SELECT count(*) FROM ev) AS events,
       (SELECT count(*) FROM docs) AS docs,
       (SELECT count(*) FROM placeholders) AS placeholders,
       (SELECT json_agg(producer_id) FROM checkpoints) AS checkpoints,
       (SELECT count(pg_notify($7,
                               '{"topic":' || to_json(topic)::text || ',"head":' || head || '}'))
        FROM heads WHERE $6::boolean) AS notified
)SQL";

const char* const kLoadRegistrySql = R"SQL(
SELECT topic, doc_key_prefix, payload_mode, max_payload_bytes, config_revision FROM oasync.topics
)SQL";

const char* const kReadCheckpointSql = R"SQL(
SELECT epoch, position FROM oasync.producer_checkpoints WHERE producer_id = $1
)SQL";

bool has_nul(const std::string& s) {
  return s.find('\0') != std::string::npos;
}

WriteResult rejected(RejectReason reason, std::string detail) {
  WriteResult r;
  r.outcome = Outcome::rejected;
  r.reason = reason;
  r.detail = std::move(detail);
  return r;
}

// Checks what needs no database: sizes, NUL bytes, the op, the payload.
std::optional<WriteResult> validate_static(const DocWrite& w) {
  if (w.topic.empty() || w.topic.size() > kMaxTopicBytes || has_nul(w.topic)) {
    return rejected(RejectReason::invalid_topic,
                    fmt::format("topic must be 1..{} bytes without NUL (got {} bytes)",
                                kMaxTopicBytes, w.topic.size()));
  }
  if (w.doc_key.empty() || w.doc_key.size() > kMaxDocKeyBytes || has_nul(w.doc_key)) {
    return rejected(RejectReason::invalid_key,
                    fmt::format("doc_key must be 1..{} bytes without NUL (got {} bytes)",
                                kMaxDocKeyBytes, w.doc_key.size()));
  }
  if (w.scope.size() > kMaxScopeBytes || has_nul(w.scope)) {
    return rejected(RejectReason::invalid_scope,
                    fmt::format("scope must be at most {} bytes without NUL (got {} bytes)",
                                kMaxScopeBytes, w.scope.size()));
  }
  if (w.source_stream.size() > kMaxDocKeyBytes || has_nul(w.source_stream)) {
    return rejected(
        RejectReason::invalid_write,
        fmt::format("source_stream must be at most {} bytes without NUL", kMaxDocKeyBytes));
  }
  if ((w.source_seq && *w.source_seq < 0) || (w.expected_version && *w.expected_version < 0)) {
    return rejected(RejectReason::invalid_write, "source_seq and expected_version must be >= 0");
  }
  return std::nullopt;
}

std::string quote_key(const DocWrite& w) {
  return fmt::format("\"{}\"", w.doc_key);
}

}  // namespace

struct Sink::Impl {
  std::string conninfo;                     // empty when borrowing
  std::unique_ptr<pqxx::connection> owned;  // set when the Sink opened it
  pqxx::connection_base* conn = nullptr;
  SinkOptions options;
  Registry registry;
  bool registry_loaded = false;

  void prepare() {
    conn->prepare(kLockDocs, kLockDocsSql);
    conn->prepare(kCreateDocs, kCreateDocsSql);
    conn->prepare(kLockTopics, kLockTopicsSql);
    conn->prepare(kWrite, kWriteSql);
    conn->prepare(kLoadRegistry, kLoadRegistrySql);
    conn->prepare(kReadCheckpoint, kReadCheckpointSql);
  }

  // Opens the owned connection, or reopens it after it was lost.
  void ensure_connected() {
    if (!conninfo.empty() && (!owned || !owned->is_open())) {
      owned.reset();
      conn = nullptr;
      owned = connect(conninfo);
      conn = owned.get();
      internal::db_step("prepare sink statements", [&] { prepare(); });
    }
  }

  void load_registry(pqxx::transaction_base& tx) {
    const pqxx::result rows =
        internal::db_step("load topic registry", [&] { return tx.exec_prepared(kLoadRegistry); });
    registry.clear();
    for (const auto& row : rows) {
      TopicInfo info;
      info.prefix = row[1].as<std::string>();
      info.mode = row[2].as<std::string>() == "pointer" ? PayloadMode::pointer
                                                        : PayloadMode::inline_payload;
      info.max_payload_bytes = row[3].as<std::int64_t>();
      info.config_revision = row[4].as<std::int64_t>();
      registry.emplace(row[0].as<std::string>(), std::move(info));
    }
    registry_loaded = true;
  }

  // Validates one write against the registry. Returns the rejection, if any.
  std::optional<WriteResult> validate(const DocWrite& w, ValidWrite& out) {
    if (auto r = validate_static(w)) return r;
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
    out.write = &w;
    if (w.op == Op::remove) return std::nullopt;
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
    out.hash_hex = to_hex(canonical.sha256);
    return std::nullopt;
  }

  // Runs the whole group inside `tx`. Returns one result list per batch.
  // Throws oasync::Error (nothing to be committed), RegistryChanged or
  // DocCreatedConcurrently (roll back and run again).
  std::vector<std::vector<WriteResult>> run(pqxx::transaction_base& tx,
                                            const std::vector<const Batch*>& batches) {
    if (!registry_loaded) load_registry(tx);

    // 1. Validate; unknown topics trigger one registry refresh.
    std::vector<std::vector<WriteResult>> results(batches.size());
    std::vector<std::vector<std::optional<ValidWrite>>> valid(batches.size());
    bool refreshed = false;
    for (std::size_t b = 0; b < batches.size(); ++b) {
      const auto& writes = batches[b]->writes;
      results[b].resize(writes.size());
      valid[b].resize(writes.size());
      for (std::size_t i = 0; i < writes.size(); ++i) {
        ValidWrite v;
        auto r = validate(writes[i], v);
        if (r && r->reason == RejectReason::topic_not_registered && !refreshed) {
          // The topic may have been registered since the registry was cached.
          load_registry(tx);
          refreshed = true;
          r = validate(writes[i], v);
        }
        if (r) {
          results[b][i] = std::move(*r);
        } else {
          valid[b][i] = std::move(v);
        }
      }
    }

    // 2. Producer checkpoints: one per producer, the last one wins; a lower
    // epoch after a higher one in the same group is a fenced batch.
    std::map<std::string, ProducerCheckpoint> checkpoints;
    for (const Batch* batch : batches) {
      if (!batch->checkpoint) continue;
      const ProducerCheckpoint& c = *batch->checkpoint;
      if (c.producer_id.empty() || has_nul(c.producer_id) || c.epoch < 0 || c.position < 0) {
        throw Error("checkpoint needs a non-empty producer_id and non-negative epoch and position");
      }
      auto [it, fresh] = checkpoints.emplace(c.producer_id, c);
      if (!fresh) {
        if (c.epoch < it->second.epoch) {
          throw Error(fmt::format("producer \"{}\" is fenced: epoch {} is below epoch {}",
                                  c.producer_id, c.epoch, it->second.epoch),
                      Retryable::no, "", "fence");
        }
        it->second = c;
      }
    }

    // 3. Lock every touched doc in (topic, doc_key) order.
    std::set<DocKey> keys;
    for (const auto& batch_valid : valid) {
      for (const auto& v : batch_valid) {
        if (v) keys.emplace(v->write->topic, v->write->doc_key);
      }
    }
    std::map<DocKey, DocState> docs;
    if (!keys.empty()) {
      json lock_keys = json::array();
      for (const auto& [topic, key] : keys) lock_keys.push_back({{"t", topic}, {"k", key}});
      const pqxx::result rows = internal::db_step(
          "lock docs", [&] { return tx.exec_prepared(kLockDocs, lock_keys.dump()); });
      for (const auto& row : rows) {
        DocState st;
        st.scope = row[2].as<std::string>();
        st.version = row[3].as<std::int64_t>();
        st.deleted = row[4].as<bool>();
        st.hash_hex = row[5].is_null() ? "" : row[5].as<std::string>();
        st.source_stream = row[6].as<std::string>();
        if (!row[7].is_null()) st.source_seq = row[7].as<std::int64_t>();
        docs.emplace(DocKey{row[0].as<std::string>(), row[1].as<std::string>()}, std::move(st));
      }
      json missing = json::array();
      for (const auto& [topic, key] : keys) {
        if (!docs.count(DocKey{topic, key})) missing.push_back({{"t", topic}, {"k", key}});
      }
      if (!missing.empty()) {
        const pqxx::result created = internal::db_step(
            "create docs", [&] { return tx.exec_prepared(kCreateDocs, missing.dump()); });
        if (created.size() != missing.size()) throw DocCreatedConcurrently{};
        for (const auto& row : created) {
          docs.emplace(DocKey{row[0].as<std::string>(), row[1].as<std::string>()}, DocState{});
        }
      }
    }

    // 4. Resolve every write in input order against the evolving doc state.
    std::vector<Event> events;
    for (std::size_t b = 0; b < batches.size(); ++b) {
      for (std::size_t i = 0; i < valid[b].size(); ++i) {
        if (!valid[b][i]) continue;
        ValidWrite& v = *valid[b][i];
        const DocWrite& w = *v.write;
        DocState& st = docs.at(DocKey{w.topic, w.doc_key});
        WriteResult& r = results[b][i];
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
          r.detail = fmt::format("expected version {}, doc {} is at version {}",
                                 *w.expected_version, quote_key(w), st.version);
          continue;
        }
        const bool live = st.version > 0 && !st.deleted;
        if (w.op == Op::remove ? !live
                               : (live && st.hash_hex == v.hash_hex && st.scope == w.scope)) {
          r.outcome = Outcome::unchanged;
          continue;
        }
        st.version += 1;
        st.scope = w.scope;
        st.deleted = w.op == Op::remove;
        st.hash_hex = v.hash_hex;
        if (w.source_seq) {
          st.source_stream = w.source_stream;
          st.source_seq = w.source_seq;
        }
        st.last_event = static_cast<std::ptrdiff_t>(events.size());
        r.outcome = Outcome::applied;
        r.doc_version = st.version;
        Event e;
        e.topic = w.topic;
        e.doc_key = w.doc_key;
        e.version = st.version;
        e.scope = w.scope;
        e.deleted = st.deleted;
        e.payload = std::move(v.canonical);
        e.hash_hex = v.hash_hex;
        e.result = &r;
        events.push_back(std::move(e));
      }
    }

    // 5. Lock the topics that get events, in name order; hand out watermarks.
    std::map<std::string, std::int64_t> heads;
    for (const Event& e : events) heads.emplace(e.topic, 0);
    if (!heads.empty()) {
      json topic_names = json::array();
      for (const auto& [topic, head] : heads) topic_names.push_back(topic);
      const pqxx::result rows = internal::db_step(
          "lock topics", [&] { return tx.exec_prepared(kLockTopics, topic_names.dump()); });
      if (rows.size() != heads.size()) throw RegistryChanged{};
      for (const auto& row : rows) {
        const auto topic = row[0].as<std::string>();
        const auto cached = registry.find(topic);
        if (cached == registry.end() ||
            cached->second.config_revision != row[2].as<std::int64_t>()) {
          throw RegistryChanged{};
        }
        heads[topic] = row[1].as<std::int64_t>();
      }
    }

    json event_rows = json::array();
    for (Event& e : events) {
      e.watermark = ++heads[e.topic];
      e.result->watermark = e.watermark;
      const bool inline_payload = registry.at(e.topic).mode == PayloadMode::inline_payload;
      event_rows.push_back({{"t", e.topic},
                            {"w", e.watermark},
                            {"k", e.doc_key},
                            {"v", e.version},
                            {"s", e.scope},
                            {"o", e.deleted ? "delete" : "upsert"},
                            {"p", e.deleted || !inline_payload ? json(nullptr) : json(e.payload)},
                            {"h", e.deleted ? json(nullptr) : json(e.hash_hex)}});
    }

    json doc_rows = json::array();
    json placeholder_rows = json::array();
    for (auto& [key, st] : docs) {
      if (st.last_event >= 0) {
        const Event& last = events[static_cast<std::size_t>(st.last_event)];
        doc_rows.push_back({{"t", key.first},
                            {"k", key.second},
                            {"s", st.scope},
                            {"v", st.version},
                            {"d", st.deleted},
                            {"p", st.deleted ? json(nullptr) : json(last.payload)},
                            {"h", st.deleted ? json(nullptr) : json(st.hash_hex)},
                            {"ss", st.source_stream},
                            {"sq", st.source_seq ? json(*st.source_seq) : json(nullptr)},
                            {"w", last.watermark}});
      } else if (st.version == 0) {
        placeholder_rows.push_back({{"t", key.first}, {"k", key.second}});
      }
    }
    json head_rows = json::array();
    for (const auto& [topic, head] : heads) head_rows.push_back({{"t", topic}, {"head", head}});
    json checkpoint_rows = json::array();
    for (const auto& [id, c] : checkpoints) {
      checkpoint_rows.push_back({{"id", id}, {"e", c.epoch}, {"pos", c.position}});
    }

    if (events.empty() && placeholder_rows.empty() && checkpoints.empty()) return results;

    // 6. One statement writes it all.
    const pqxx::row written = internal::db_step("write events and docs", [&] {
      return tx.exec_prepared1(kWrite, event_rows.dump(), doc_rows.dump(), placeholder_rows.dump(),
                               head_rows.dump(), checkpoint_rows.dump(),
                               options.notify == Notify::on, kNotifyChannel);
    });
    std::set<std::string> stored;
    if (!written[3].is_null()) {
      for (const auto& id : json::parse(written[3].as<std::string>())) stored.insert(id);
    }
    for (const auto& [id, c] : checkpoints) {
      if (!stored.count(id)) {
        throw Error(fmt::format("producer \"{}\" is fenced: epoch {} is below the stored epoch", id,
                                c.epoch),
                    Retryable::no, "", "fence");
      }
    }
    return results;
  }

  // Runs the group in a transaction of its own, retrying on registry changes.
  std::vector<std::vector<WriteResult>> run_own(const std::vector<const Batch*>& batches) {
    ensure_connected();
    for (int attempt = 0;; ++attempt) {
      try {
        pqxx::work tx(*conn, "oasync_sink");
        auto results = run(tx, batches);
        internal::db_step("commit", [&] { tx.commit(); });
        return results;
      } catch (const RegistryChanged&) {
        registry_loaded = false;
        if (attempt >= options.registry_retries) {
          throw Error("the topic registry kept changing during the batch", Retryable::yes);
        }
      } catch (const DocCreatedConcurrently&) {
        // The doc exists now and is found (and locked) on the next attempt;
        // every attempt makes progress, so this ends.
        if (attempt >= 100) throw Error("docs kept being created concurrently", Retryable::yes);
      } catch (const Error&) {
        throw;
      } catch (...) {
        internal::rethrow_as_error("apply batch");
      }
    }
  }
};

std::unique_ptr<Sink> Sink::open(const std::string& conninfo, SinkOptions options) {
  std::unique_ptr<Sink> sink(new Sink(conninfo, options));
  try {
    sink->impl_->ensure_connected();
  } catch (const Error& e) {
    if (options.connect == Connect::now || e.retryable() == Retryable::no) throw;
  }
  return sink;
}

Sink::Sink(std::string conninfo, SinkOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->conninfo = std::move(conninfo);
  impl_->options = options;
}

Sink::Sink(pqxx::connection_base& connection, SinkOptions options)
    : impl_(std::make_unique<Impl>()) {
  impl_->conn = &connection;
  impl_->options = options;
  internal::db_step("prepare sink statements", [&] { impl_->prepare(); });
}

Sink::~Sink() = default;

std::vector<WriteResult> Sink::apply(const Batch& batch) {
  return std::move(impl_->run_own({&batch}).front());
}

std::vector<Sink::GroupResult> Sink::apply_group(const std::vector<const Batch*>& batches) {
  std::vector<GroupResult> out(batches.size());
  if (batches.empty()) return out;
  try {
    auto results = impl_->run_own(batches);
    for (std::size_t b = 0; b < batches.size(); ++b) out[b].results = std::move(results[b]);
    return out;
  } catch (const Error& e) {
    if (batches.size() == 1 || e.retryable() == Retryable::yes) {
      for (auto& o : out) o.error = e;
      return out;
    }
  }
  // A non-retryable failure of a group: find the culprit by applying alone.
  for (std::size_t b = 0; b < batches.size(); ++b) {
    try {
      out[b].results = std::move(impl_->run_own({batches[b]}).front());
    } catch (const Error& e) {
      out[b].error = e;
    }
  }
  return out;
}

std::vector<WriteResult> Sink::apply_within(pqxx::transaction_base& tx, const Batch& batch) {
  try {
    return std::move(impl_->run(tx, {&batch}).front());
  } catch (const RegistryChanged&) {
    impl_->registry_loaded = false;
    throw Error("the topic registry changed during the batch; abort and retry the transaction",
                Retryable::yes);
  } catch (const DocCreatedConcurrently&) {
    throw Error("a doc of the batch was created concurrently; abort and retry the transaction",
                Retryable::yes);
  }
}

std::optional<ProducerCheckpoint> Sink::checkpoint(std::string_view producer_id) {
  impl_->ensure_connected();
  return internal::db_step("read producer checkpoint", [&]() -> std::optional<ProducerCheckpoint> {
    pqxx::nontransaction tx(*impl_->conn);
    const pqxx::result rows = tx.exec_prepared(kReadCheckpoint, std::string(producer_id));
    if (rows.empty()) return std::nullopt;
    return ProducerCheckpoint{std::string(producer_id), rows[0][0].as<std::int64_t>(),
                              rows[0][1].as<std::int64_t>()};
  });
}

}  // namespace oasync
