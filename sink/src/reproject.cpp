#include "oasync/reproject.hpp"

#include <map>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "db.hpp"
#include "oasync/canonical_json.hpp"
#include "oasync/connection.hpp"
#include "oasync/error.hpp"
#include "oasync/sink.hpp"
#include "topic_rows.hpp"
#include "write_rules.hpp"

namespace oasync {
namespace {

const char* const kCreateSeenKeysSql =
    "CREATE TEMP TABLE oasync_reproject_keys (doc_key text PRIMARY KEY)";

// Records a batch's keys as seen; returns those not seen before.
const char* const kMarkSeenSql = R"SQL(
INSERT INTO pg_temp.oasync_reproject_keys SELECT json_array_elements_text($1::json)
ON CONFLICT DO NOTHING
RETURNING doc_key
)SQL";

// The stored state of a batch's keys, as the sink's rules see it.
const char* const kStoredDocsSql = R"SQL(
SELECT doc_key, scope, doc_version, deleted, encode(payload_hash, 'hex') AS hash_hex
FROM oasync.docs
WHERE topic = $1 AND doc_version > 0 AND doc_key IN (SELECT json_array_elements_text($2::json))
)SQL";

// A page of live docs that the input did not list.
const char* const kUnlistedDocsSql = R"SQL(
SELECT d.doc_key FROM oasync.docs AS d
WHERE d.topic = $1 AND NOT d.deleted AND d.doc_version > 0 AND d.doc_key > $2
  AND NOT EXISTS (SELECT 1 FROM pg_temp.oasync_reproject_keys AS k WHERE k.doc_key = d.doc_key)
ORDER BY d.doc_key
LIMIT $3
)SQL";

}  // namespace

struct Reprojection::Impl {
  std::unique_ptr<pqxx::connection> conn;
  std::unique_ptr<Sink> sink;
  std::string topic;
  DryRun dry_run = DryRun::no;
  std::int64_t batch_size = 1000;
  ReprojectCounts counts;
  struct Pending {
    DocWrite write;
    std::string hash_hex;
    std::string where;
  };
  std::vector<Pending> pending;

  void flush() {
    if (pending.empty()) return;
    nlohmann::json keys = nlohmann::json::array();
    for (const auto& p : pending) keys.push_back(p.write.doc_key);
    std::map<std::string, internal::DocState> stored;
    internal::db_step("compare with the stored docs", [&] {
      pqxx::work tx(*conn, "oasync_reproject_compare");
      const pqxx::result fresh = tx.exec_params(kMarkSeenSql, keys.dump());
      if (fresh.size() != pending.size()) {
        std::set<std::string> inserted;
        for (const auto& row : fresh) inserted.insert(row["doc_key"].as<std::string>());
        for (const auto& p : pending) {
          if (!inserted.erase(p.write.doc_key)) {
            throw Error(Code::invalid_input,
                        fmt::format("{}: doc_key \"{}\" was already listed; each doc appears once "
                                    "in a desired set (nothing was deleted)",
                                    p.where, p.write.doc_key));
          }
        }
      }
      for (const auto& row : tx.exec_params(kStoredDocsSql, topic, keys.dump())) {
        internal::DocState st;
        st.scope = row["scope"].as<std::string>();
        st.version = row["doc_version"].as<std::int64_t>();
        st.deleted = row["deleted"].as<bool>();
        st.hash_hex = row["hash_hex"].is_null() ? "" : row["hash_hex"].as<std::string>();
        stored.emplace(row["doc_key"].as<std::string>(), std::move(st));
      }
      tx.commit();
    });
    Batch changes;
    for (auto& p : pending) {
      const auto it = stored.find(p.write.doc_key);
      const internal::DocState none;
      const internal::DocState& doc = it == stored.end() ? none : it->second;
      if (internal::unchanged(doc, Op::upsert, p.hash_hex, p.write.scope)) {
        ++counts.unchanged;
        continue;
      }
      ++(doc.live() ? counts.changed : counts.created);
      changes.writes.push_back(std::move(p.write));
    }
    pending.clear();
    apply(changes);
  }

  void apply(const Batch& batch) {
    if (dry_run == DryRun::yes || batch.writes.empty()) return;
    const auto results = sink->apply(batch);
    for (std::size_t i = 0; i < results.size(); ++i) {
      if (results[i].outcome == Outcome::rejected) {
        throw Error(Code::invalid_input, fmt::format("doc_key \"{}\" was rejected: {}",
                                                     batch.writes[i].doc_key, results[i].detail));
      }
    }
  }
};

Reprojection::Reprojection(const std::string& conninfo, std::string topic, DryRun dry_run,
                           std::int64_t batch_size)
    : impl_(std::make_unique<Impl>()) {
  if (batch_size <= 0) {
    throw Error(Code::invalid_argument,
                fmt::format("batch_size must be positive, found {}", batch_size));
  }
  impl_->conn = connect(conninfo);
  impl_->topic = std::move(topic);
  impl_->dry_run = dry_run;
  impl_->batch_size = batch_size;
  internal::db_step("prepare reprojection", [&] {
    pqxx::work tx(*impl_->conn);
    if (!internal::read_topic_row(tx, impl_->topic)) {
      throw Error(Code::not_found, fmt::format("topic \"{}\" is not registered", impl_->topic));
    }
    tx.exec(kCreateSeenKeysSql);
    tx.commit();
  });
  impl_->sink = std::make_unique<Sink>(*impl_->conn);
}

Reprojection::~Reprojection() = default;

void Reprojection::add(DocWrite write, const std::string& where) {
  if (write.topic.empty()) write.topic = impl_->topic;
  if (write.topic != impl_->topic) {
    throw Error(Code::invalid_input,
                fmt::format("{}: topic \"{}\" is not the topic being reprojected (\"{}\")", where,
                            write.topic, impl_->topic));
  }
  if (write.op != Op::upsert) {
    throw Error(Code::invalid_input,
                fmt::format("{}: a desired doc set lists docs, not deletes; a missing doc is "
                            "deleted (nothing was deleted)",
                            where));
  }
  Impl::Pending p;
  try {
    p.hash_hex = to_hex(canonicalize(write.payload, JsonShape::object).sha256);
  } catch (const Error& e) {
    throw Error(Code::invalid_input,
                fmt::format("{}: payload of doc \"{}\": {} (nothing was deleted)", where,
                            write.doc_key, e.what()));
  }
  // Source positions and compare-and-set belong to the live projector's
  // stream; a reprojection states the desired state outright.
  write.source_stream.clear();
  write.source_seq.reset();
  write.expected_version.reset();
  p.write = std::move(write);
  p.where = where;
  impl_->pending.push_back(std::move(p));
  if (static_cast<std::int64_t>(impl_->pending.size()) >= impl_->batch_size) impl_->flush();
}

ReprojectCounts Reprojection::finish(
    const std::function<void(const char*, std::int64_t)>& progress) {
  impl_->flush();
  if (progress)
    progress("compared", impl_->counts.unchanged + impl_->counts.changed + impl_->counts.created);
  // Live docs the input did not list become tombstones, page by page.
  std::string after;
  for (;;) {
    const pqxx::result missing = internal::db_step("find docs missing from the input", [&] {
      pqxx::read_transaction tx(*impl_->conn);
      return tx.exec_params(kUnlistedDocsSql, impl_->topic, after, impl_->batch_size);
    });
    Batch removes;
    for (const auto& row : missing) {
      DocWrite w;
      w.topic = impl_->topic;
      w.doc_key = row["doc_key"].as<std::string>();
      w.op = Op::delete_;
      after = w.doc_key;
      removes.writes.push_back(std::move(w));
    }
    impl_->counts.deleted += static_cast<std::int64_t>(removes.writes.size());
    impl_->apply(removes);
    if (progress && !removes.writes.empty()) progress("deleted", impl_->counts.deleted);
    if (static_cast<std::int64_t>(missing.size()) < impl_->batch_size) break;
  }
  return impl_->counts;
}

}  // namespace oasync
