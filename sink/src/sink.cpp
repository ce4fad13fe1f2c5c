#include "oasync/sink.hpp"

#include <algorithm>
#include <map>
#include <set>
#include <utility>
#include <variant>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "db.hpp"
#include "oasync/canonical_json.hpp"
#include "oasync/connection.hpp"
#include "oasync/error.hpp"
#include "oasync/topics.hpp"
#include "topic_rows.hpp"
#include "write_rules.hpp"

namespace oasync {
namespace {

using json = nlohmann::json;
using internal::DocKey;
using internal::DocState;
using internal::ValidWrite;

// Thrown inside a transaction when the registry changed since it was cached;
// the transaction is rolled back and run again with a fresh registry.
struct RegistryChanged {};

// Thrown inside a transaction when a doc it was about to create was created
// by a concurrent transaction; the transaction is rolled back and run again.
struct DocCreatedConcurrently {};

const char* const kLockDocs = "oasync_sink_lock_docs";
const char* const kCreateDocs = "oasync_sink_create_docs";
const char* const kLockTopics = "oasync_sink_lock_topics";
const char* const kNoteTimeline = "oasync_sink_note_timeline";
const char* const kWrite = "oasync_sink_write";
const char* const kReadCheckpoint = "oasync_sink_read_checkpoint";
const char* const kOneApplyWithin = "oasync_sink_one_apply_within";

// Every statement of the sink names its functions, operators and types with
// their schema: nothing resolves through the caller's search_path (a
// borrowed connection may have any). Locks follow the order of lock_order.hpp.

// Phase 1 of locking the batch's docs: locks the existing ones in
// (topic, doc_key) order and returns their state. Under READ COMMITTED, FOR
// UPDATE waits for a concurrent writer and then returns the committed row.
const char* const kLockDocsSql = R"SQL(
SELECT d.topic, d.doc_key, d.scope, d.doc_version, d.deleted,
       pg_catalog.encode(d.payload_hash, 'hex') AS hash_hex, d.source_stream, d.source_seq
FROM oasync.docs AS d
JOIN pg_catalog.json_to_recordset($1::pg_catalog.json) AS k(t pg_catalog.text, k pg_catalog.text)
  ON d.topic OPERATOR(pg_catalog.=) k.t AND d.doc_key OPERATOR(pg_catalog.=) k.k
ORDER BY d.topic COLLATE pg_catalog."C", d.doc_key COLLATE pg_catalog."C"
FOR UPDATE OF d
)SQL";

// Phase 2: inserts version-0 placeholders for the docs that do not exist, in
// the same order, and returns the keys it inserted. A key missing from the
// answer was created by a concurrent transaction that has committed since;
// the batch then starts over, finding that doc in phase 1. (Why this cannot
// deadlock: a transaction waits in phase 2 only on another's uncommitted
// placeholder, and a transaction holding placeholders waits on nothing but
// later placeholders, in the same global order, and topic rows.) A
// placeholder that no write turns into a real doc is removed by the write
// statement (oasync.drop_placeholders), so readers never see one.
const char* const kCreateDocsSql = R"SQL(
INSERT INTO oasync.docs AS d (topic, doc_key, scope, doc_version, last_watermark)
SELECT k.t, k.k, '', 0, 0
FROM pg_catalog.json_to_recordset($1::pg_catalog.json) AS k(t pg_catalog.text, k pg_catalog.text)
ORDER BY k.t COLLATE pg_catalog."C", k.k COLLATE pg_catalog."C"
ON CONFLICT (topic, doc_key) DO NOTHING
RETURNING d.topic, d.doc_key
)SQL";

// Locks the topics that receive events, in name order, and returns their
// heads, and whether each was last written on this timeline.
const char* const kLockTopicsSql = R"SQL(
SELECT t.topic, t.head, t.config_revision,
       coalesce(t.timeline OPERATOR(pg_catalog.=) oasync.current_timeline(), false)
         AS same_timeline
FROM oasync.topics AS t
WHERE t.topic OPERATOR(pg_catalog.=) ANY (
  SELECT pg_catalog.json_array_elements_text($1::pg_catalog.json))
ORDER BY t.topic COLLATE pg_catalog."C"
FOR NO KEY UPDATE
)SQL";

// After a failover or a point-in-time restore: forks the epochs of the topics
// first written on this timeline (see migrations/0006_contract.sql).
const char* const kNoteTimelineSql = R"SQL(
SELECT pg_catalog.count(*) AS forked FROM oasync.note_timeline($1::pg_catalog.json)
)SQL";

// Everything else in one statement: events (and the exits of scope moves),
// doc rows, stream positions, placeholders, heads, producer checkpoints and
// the notification (delivered at commit).
const char* const kWriteSql = R"SQL(
WITH ev AS (
  INSERT INTO oasync.events (topic, watermark, doc_key, doc_version, scope, previous_scope, op,
                             payload, payload_hash)
  SELECT e.t, e.w, e.k, e.v, e.s, e.ps, e.o, e.p::pg_catalog.json, pg_catalog.decode(e.h, 'hex')
  FROM pg_catalog.json_to_recordset($1::pg_catalog.json)
       AS e(t pg_catalog.text, w bigint, k pg_catalog.text, v bigint, s pg_catalog.text,
            ps pg_catalog.text, o pg_catalog.text, p pg_catalog.text, h pg_catalog.text)
  RETURNING topic, watermark, doc_key, doc_version, previous_scope
), exits AS (
  INSERT INTO oasync.scope_exits (topic, scope, watermark, doc_key, doc_version)
  SELECT ev.topic, ev.previous_scope, ev.watermark, ev.doc_key, ev.doc_version
  FROM ev WHERE ev.previous_scope IS NOT NULL
  RETURNING 1
), docs AS (
  UPDATE oasync.docs AS d
  SET scope = x.s, doc_version = x.v, deleted = x.d, payload = x.p::pg_catalog.json,
      payload_hash = pg_catalog.decode(x.h, 'hex'), source_stream = x.ss, source_seq = x.sq,
      last_watermark = x.w, updated_at = pg_catalog.now()
  FROM pg_catalog.json_to_recordset($2::pg_catalog.json)
       AS x(t pg_catalog.text, k pg_catalog.text, s pg_catalog.text, v bigint, d boolean,
            p pg_catalog.text, h pg_catalog.text, ss pg_catalog.text, sq bigint, w bigint)
  WHERE d.topic OPERATOR(pg_catalog.=) x.t AND d.doc_key OPERATOR(pg_catalog.=) x.k
  RETURNING 1
), positions AS (
  UPDATE oasync.docs AS d
  SET source_stream = x.ss, source_seq = x.sq, deleted = x.d, updated_at = pg_catalog.now()
  FROM pg_catalog.json_to_recordset($3::pg_catalog.json)
       AS x(t pg_catalog.text, k pg_catalog.text, ss pg_catalog.text, sq bigint, d boolean)
  WHERE d.topic OPERATOR(pg_catalog.=) x.t AND d.doc_key OPERATOR(pg_catalog.=) x.k
  RETURNING 1
), heads AS (
  UPDATE oasync.topics AS t SET head = h.head
  FROM pg_catalog.json_to_recordset($5::pg_catalog.json) AS h(t pg_catalog.text, head bigint)
  WHERE t.topic OPERATOR(pg_catalog.=) h.t
  RETURNING t.topic, t.head
), checkpoints AS (
  INSERT INTO oasync.producer_checkpoints AS c (producer_id, epoch, position)
  SELECT p.id, p.e, p.pos
  FROM pg_catalog.json_to_recordset($6::pg_catalog.json)
       AS p(id pg_catalog.text, e bigint, pos bigint)
  ORDER BY p.id COLLATE pg_catalog."C"
  ON CONFLICT (producer_id) DO UPDATE
    SET epoch = excluded.epoch, position = excluded.position, updated_at = pg_catalog.now()
    WHERE c.epoch OPERATOR(pg_catalog.<=) excluded.epoch
  RETURNING c.producer_id
)
SELECT (SELECT pg_catalog.count(*) FROM ev) AS events,
       (SELECT pg_catalog.count(*) FROM exits) AS exits,
       (SELECT pg_catalog.count(*) FROM docs) AS docs,
       (SELECT pg_catalog.count(*) FROM positions) AS positions,
       CASE WHEN pg_catalog.json_array_length($4::pg_catalog.json) OPERATOR(pg_catalog.>) 0
            THEN oasync.drop_placeholders($4::pg_catalog.json) ELSE 0 END AS placeholders,
       (SELECT pg_catalog.json_agg(producer_id) FROM checkpoints) AS checkpoints,
       (SELECT pg_catalog.count(pg_catalog.pg_notify($8, pg_catalog.concat(
                 '{"topic":', pg_catalog.to_json(topic)::pg_catalog.text, ',"head":', head, '}')))
        FROM heads WHERE $7::boolean) AS notified
)SQL";

const char* const kReadCheckpointSql = R"SQL(
SELECT epoch, position FROM oasync.producer_checkpoints
WHERE producer_id OPERATOR(pg_catalog.=) $1
)SQL";

// apply_within's guard: whether the transaction already ran one (a second one
// could deadlock against another transaction doing the same), and the mark.
const char* const kOneApplyWithinSql = R"SQL(
SELECT pg_catalog.current_setting('oasync.sink_applied', true) AS applied,
       pg_catalog.set_config('oasync.sink_applied', 'yes', true) AS marked
)SQL";

// Reads a locked doc's state from a row of kLockDocsSql.
DocState locked_doc(const pqxx::row& row) {
  DocState st;
  st.scope = row["scope"].as<std::string>();
  st.version = row["doc_version"].as<std::int64_t>();
  st.deleted = row["deleted"].as<bool>();
  st.hash_hex = row["hash_hex"].is_null() ? "" : row["hash_hex"].as<std::string>();
  st.source_stream = row["source_stream"].as<std::string>();
  st.source_seq = internal::optional_int(row["source_seq"]);
  return st;
}

// The sink's view of the registry.
internal::Registry registry_of(std::vector<internal::TopicRow> rows) {
  internal::Registry registry;
  for (auto& row : rows) {
    TopicSpec& spec = row.state.spec;
    registry.emplace(spec.name,
                     internal::TopicInfo{std::move(spec.doc_key_prefix), spec.payload_mode,
                                         spec.max_payload_bytes, row.config_revision});
  }
  return registry;
}

// The JSON parameters of kWriteSql.
struct WriteRows {
  json events = json::array();
  json docs = json::array();
  json positions = json::array();
  json placeholders = json::array();
  json heads = json::array();
  json checkpoints = json::array();
};

WriteRows write_rows(const internal::Resolution& plan, const internal::Registry& registry,
                     const std::map<std::string, std::int64_t>& heads,
                     const std::map<std::string, ProducerCheckpoint>& checkpoints) {
  WriteRows rows;
  for (const auto& e : plan.events) {
    const bool deleted = e.op == Op::delete_;
    const bool inline_payload = registry.at(e.topic).mode == PayloadMode::inline_payload;
    rows.events.push_back({{"t", e.topic},
                           {"w", e.watermark},
                           {"k", e.doc_key},
                           {"v", e.version},
                           {"s", e.scope},
                           {"ps", e.previous_scope ? json(*e.previous_scope) : json(nullptr)},
                           {"o", to_string(e.op)},
                           {"p", deleted || !inline_payload ? json(nullptr) : json(e.payload)},
                           {"h", deleted ? json(nullptr) : json(e.hash_hex)}});
  }
  for (const auto& doc : plan.docs) {
    const auto& last = plan.events[doc.last_event];
    const DocState& st = doc.state;
    rows.docs.push_back({{"t", doc.key.first},
                         {"k", doc.key.second},
                         {"s", st.scope},
                         {"v", st.version},
                         {"d", st.deleted},
                         {"p", st.deleted ? json(nullptr) : json(last.payload)},
                         {"h", st.deleted ? json(nullptr) : json(st.hash_hex)},
                         {"ss", st.source_stream},
                         {"sq", st.source_seq ? json(*st.source_seq) : json(nullptr)},
                         {"w", last.watermark}});
  }
  for (const auto& p : plan.positions) {
    rows.positions.push_back({{"t", p.key.first},
                              {"k", p.key.second},
                              {"ss", p.source_stream},
                              {"sq", p.source_seq},
                              {"d", p.deleted}});
  }
  for (const auto& [topic, key] : plan.unused_placeholders) {
    rows.placeholders.push_back({{"t", topic}, {"k", key}});
  }
  for (const auto& [topic, head] : heads) rows.heads.push_back({{"t", topic}, {"head", head}});
  for (const auto& [id, c] : checkpoints) {
    rows.checkpoints.push_back({{"id", id}, {"e", c.epoch}, {"pos", c.position}});
  }
  return rows;
}

Error fenced(const std::string& producer_id, std::int64_t epoch) {
  return Error(Code::fenced, fmt::format("producer \"{}\" is fenced: epoch {} is below the stored "
                                         "epoch",
                                         producer_id, epoch));
}

}  // namespace

struct Sink::Impl {
  std::string conninfo;                     // empty when borrowing
  std::unique_ptr<pqxx::connection> owned;  // set when the Sink opened it
  pqxx::connection_base* conn = nullptr;
  SinkOptions options;
  internal::Registry registry;
  bool registry_loaded = false;

  void prepare() {
    conn->prepare(kLockDocs, kLockDocsSql);
    conn->prepare(kCreateDocs, kCreateDocsSql);
    conn->prepare(kLockTopics, kLockTopicsSql);
    conn->prepare(kNoteTimeline, kNoteTimelineSql);
    conn->prepare(kWrite, kWriteSql);
    conn->prepare(kReadCheckpoint, kReadCheckpointSql);
    conn->prepare(kOneApplyWithin, kOneApplyWithinSql);
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
    registry = registry_of(
        internal::db_step("load topic registry", [&] { return internal::read_topic_rows(tx); }));
    registry_loaded = true;
  }

  // Step 1: validates every write. Fills the rejections into `results` and
  // returns the valid writes in input order, with where each one came from.
  // An unknown topic refreshes the registry once (it may have been
  // registered since it was cached).
  std::vector<ValidWrite> validate(pqxx::transaction_base& tx,
                                   const std::vector<const Batch*>& batches,
                                   std::vector<std::vector<WriteResult>>& results,
                                   std::vector<std::pair<std::size_t, std::size_t>>& origin) {
    std::vector<ValidWrite> valid;
    bool refreshed = false;
    for (std::size_t b = 0; b < batches.size(); ++b) {
      const auto& writes = batches[b]->writes;
      results[b].resize(writes.size());
      for (std::size_t i = 0; i < writes.size(); ++i) {
        auto checked = internal::validate_write(writes[i], registry);
        if (const auto* r = std::get_if<WriteResult>(&checked);
            r && r->reason == RejectReason::topic_not_registered && !refreshed) {
          load_registry(tx);
          refreshed = true;
          checked = internal::validate_write(writes[i], registry);
        }
        if (auto* v = std::get_if<ValidWrite>(&checked)) {
          valid.push_back(std::move(*v));
          origin.emplace_back(b, i);
        } else {
          results[b][i] = std::move(std::get<WriteResult>(checked));
        }
      }
    }
    return valid;
  }

  // Step 3: locks every touched doc in (topic, doc_key) order (see sink.hpp)
  // and returns its state; docs that do not exist get placeholders (version 0).
  std::map<DocKey, DocState> lock_docs(pqxx::transaction_base& tx,
                                       const std::vector<ValidWrite>& writes) {
    std::set<DocKey> keys;
    for (const ValidWrite& v : writes) keys.emplace(v.write->topic, v.write->doc_key);
    std::map<DocKey, DocState> docs;
    if (keys.empty()) return docs;
    json lock_keys = json::array();
    for (const auto& [topic, key] : keys) lock_keys.push_back({{"t", topic}, {"k", key}});
    const pqxx::result rows = internal::db_step(
        "lock docs", [&] { return tx.exec_prepared(kLockDocs, lock_keys.dump()); });
    for (const auto& row : rows) {
      docs.emplace(DocKey{row["topic"].as<std::string>(), row["doc_key"].as<std::string>()},
                   locked_doc(row));
    }
    json missing = json::array();
    for (const auto& [topic, key] : keys) {
      if (!docs.count(DocKey{topic, key})) missing.push_back({{"t", topic}, {"k", key}});
    }
    if (missing.empty()) return docs;
    const pqxx::result created = internal::db_step(
        "create docs", [&] { return tx.exec_prepared(kCreateDocs, missing.dump()); });
    if (created.size() != missing.size()) throw DocCreatedConcurrently{};
    for (const auto& row : created) {
      DocState placeholder;
      placeholder.placeholder = true;
      docs.emplace(DocKey{row["topic"].as<std::string>(), row["doc_key"].as<std::string>()},
                   placeholder);
    }
    return docs;
  }

  // Step 5: locks the topics that get events, in name order, checks that the
  // cached registry is current for them, notes a new timeline (a failover or
  // a restore forks the epochs), and returns their heads.
  std::map<std::string, std::int64_t> lock_topics(pqxx::transaction_base& tx,
                                                  const internal::Resolution& plan) {
    std::map<std::string, std::int64_t> heads;
    for (const auto& e : plan.events) heads.emplace(e.topic, 0);
    if (heads.empty()) return heads;
    json topic_names = json::array();
    for (const auto& [topic, head] : heads) topic_names.push_back(topic);
    const pqxx::result rows = internal::db_step(
        "lock topics", [&] { return tx.exec_prepared(kLockTopics, topic_names.dump()); });
    if (rows.size() != heads.size()) throw RegistryChanged{};
    bool new_timeline = false;
    for (const auto& row : rows) {
      const auto topic = row["topic"].as<std::string>();
      const auto cached = registry.find(topic);
      if (cached == registry.end() ||
          cached->second.config_revision != row["config_revision"].as<std::int64_t>()) {
        throw RegistryChanged{};
      }
      heads[topic] = row["head"].as<std::int64_t>();
      new_timeline = new_timeline || !row["same_timeline"].as<bool>();
    }
    if (new_timeline) {
      internal::db_step("note the timeline",
                        [&] { tx.exec_prepared(kNoteTimeline, topic_names.dump()); });
    }
    return heads;
  }

  // Runs the whole group inside `tx`. Returns one result list per batch.
  // Throws oasync::Error (nothing to be committed), RegistryChanged or
  // DocCreatedConcurrently (roll back and run again).
  std::vector<std::vector<WriteResult>> run(pqxx::transaction_base& tx,
                                            const std::vector<const Batch*>& batches) {
    if (!registry_loaded) load_registry(tx);
    std::vector<std::vector<WriteResult>> results(batches.size());
    std::vector<std::pair<std::size_t, std::size_t>> origin;  // (batch, write) per valid write
    std::vector<ValidWrite> valid = validate(tx, batches, results, origin);
    // 2. Fencing: a lower epoch after a higher one in the same group.
    const auto checkpoints = internal::collect_checkpoints(batches);
    auto locked = lock_docs(tx, valid);
    // 4. Resolution: duplicate, conflict, unchanged or applied.
    internal::Resolution plan = internal::resolve(std::move(locked), std::move(valid));
    auto heads = lock_topics(tx, plan);
    internal::number_events(plan, heads);
    for (std::size_t i = 0; i < origin.size(); ++i) {
      results[origin[i].first][origin[i].second] = std::move(plan.results[i]);
    }
    if (plan.events.empty() && plan.positions.empty() && plan.unused_placeholders.empty() &&
        checkpoints.empty()) {
      return results;
    }
    // 6. One statement writes it all.
    const WriteRows rows = write_rows(plan, registry, heads, checkpoints);
    const pqxx::row written = internal::db_step("write events and docs", [&] {
      return tx.exec_prepared1(kWrite, rows.events.dump(), rows.docs.dump(), rows.positions.dump(),
                               rows.placeholders.dump(), rows.heads.dump(), rows.checkpoints.dump(),
                               options.notify == Notify::on, kNotifyChannel);
    });
    std::set<std::string> stored;
    if (!written["checkpoints"].is_null()) {
      for (const auto& id : json::parse(written["checkpoints"].as<std::string>())) {
        stored.insert(id);
      }
    }
    for (const auto& [id, c] : checkpoints) {
      if (!stored.count(id)) throw fenced(id, c.epoch);
    }
    return results;
  }

  // Applies `batches` (n > 0 of them) as one group; when the group fails,
  // applies each half as a group of its own, and so on down to single batches,
  // so that a batch that always fails (whatever the error: a fenced producer,
  // a statement timeout, a full disk) fails alone and its neighbours apply.
  // The happy path costs one transaction and no savepoint. The one error it
  // never splits on is a commit whose outcome is unknown: some batches may
  // have committed, and applying them again could apply them twice.
  void apply_bisecting(const std::vector<const Batch*>& batches, GroupResult* out) {
    try {
      auto results = run_own(batches);
      for (std::size_t b = 0; b < batches.size(); ++b) out[b].results = std::move(results[b]);
      return;
    } catch (const Error& e) {
      if (batches.size() == 1 || e.code() == Code::outcome_unknown) {
        for (std::size_t b = 0; b < batches.size(); ++b) out[b].error = e;
        return;
      }
    }
    const std::size_t half = batches.size() / 2;
    apply_bisecting({batches.begin(), batches.begin() + static_cast<std::ptrdiff_t>(half)}, out);
    apply_bisecting({batches.begin() + static_cast<std::ptrdiff_t>(half), batches.end()},
                    out + half);
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
          throw Error(Code::database, "the topic registry kept changing during the batch",
                      Retryable::yes);
        }
      } catch (const DocCreatedConcurrently&) {
        // The doc exists now and is found (and locked) on the next attempt;
        // every attempt makes progress, so this ends.
        if (attempt >= 100) {
          throw Error(Code::database, "docs kept being created concurrently", Retryable::yes);
        }
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
  if (!batches.empty()) impl_->apply_bisecting(batches, out.data());
  return out;
}

std::vector<WriteResult> Sink::apply_within(pqxx::transaction_base& tx, const Batch& batch) {
  const pqxx::row guard =
      internal::db_step("apply within", [&] { return tx.exec_prepared1(kOneApplyWithin); });
  if (!guard["applied"].is_null() && guard["applied"].as<std::string>() == "yes") {
    throw Error(Code::refused,
                "this transaction already ran apply_within: a second one could deadlock against "
                "another transaction doing the same (it locks docs after holding topic locks); put "
                "all of the transaction's writes in one batch");
  }
  try {
    return std::move(impl_->run(tx, {&batch}).front());
  } catch (const RegistryChanged&) {
    impl_->registry_loaded = false;
    throw Error(Code::database,
                "the topic registry changed during the batch; abort and retry the transaction",
                Retryable::yes);
  } catch (const DocCreatedConcurrently&) {
    throw Error(Code::database,
                "a doc of the batch was created concurrently; abort and retry the transaction",
                Retryable::yes);
  }
}

std::optional<ProducerCheckpoint> Sink::checkpoint(std::string_view producer_id) {
  impl_->ensure_connected();
  return internal::db_step("read producer checkpoint", [&]() -> std::optional<ProducerCheckpoint> {
    pqxx::nontransaction tx(*impl_->conn);
    const pqxx::result rows = tx.exec_prepared(kReadCheckpoint, std::string(producer_id));
    if (rows.empty()) return std::nullopt;
    return ProducerCheckpoint{std::string(producer_id), rows[0]["epoch"].as<std::int64_t>(),
                              rows[0]["position"].as<std::int64_t>()};
  });
}

}  // namespace oasync
