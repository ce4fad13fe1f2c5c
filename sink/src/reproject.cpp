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

// The stored state of a batch's keys, as the sink's rules see it, and when
// each last changed.
const char* const kStoredDocsSql = R"SQL(
SELECT doc_key, scope, doc_version, deleted, payload_hash,
       last_watermark
FROM oasync.docs
WHERE topic = $1 AND doc_version > 0 AND doc_key IN (SELECT json_array_elements_text($2::json))
)SQL";

// A page of live docs that the input did not list, with their versions.
const char* const kUnlistedDocsSql = R"SQL(
SELECT d.doc_key, d.doc_version, d.last_watermark FROM oasync.docs AS d
WHERE d.topic = $1 AND NOT d.deleted AND d.doc_version > 0 AND d.doc_key > $2
  AND NOT EXISTS (SELECT 1 FROM pg_temp.oasync_reproject_keys AS k WHERE k.doc_key = d.doc_key)
ORDER BY d.doc_key
LIMIT $3
)SQL";

const char* const kHeadSql = "SELECT head FROM oasync.topics WHERE topic = $1";

}  // namespace

struct Reprojection::Impl {
  std::unique_ptr<pqxx::connection> conn;
  std::unique_ptr<Sink> sink;
  std::string topic;
  ReprojectOptions options;
  std::int64_t as_of = 0;
  ReprojectCounts counts;
  struct Pending {
    DocWrite write;
    std::string hash;  // raw SHA-256 of the canonical payload
    std::string where;
  };
  std::vector<Pending> pending;

  // The count each write of a batch was added to, taken back if the sink
  // answers that the doc changed meanwhile (a conflict).
  using Counter = std::int64_t ReprojectCounts::*;

  void flush() {
    if (pending.empty()) return;
    nlohmann::json keys = nlohmann::json::array();
    for (const auto& p : pending) keys.push_back(p.write.doc_key);
    struct Stored {
      internal::DocState state;
      std::int64_t last_watermark = 0;
    };
    std::map<std::string, Stored> stored;
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
        Stored st;
        st.state.scope = row["scope"].as<std::string>();
        st.state.version = row["doc_version"].as<std::int64_t>();
        st.state.deleted = row["deleted"].as<bool>();
        st.state.hash =
            row["payload_hash"].is_null() ? "" : pqxx::binarystring(row["payload_hash"]).str();
        st.last_watermark = row["last_watermark"].as<std::int64_t>();
        stored.emplace(row["doc_key"].as<std::string>(), std::move(st));
      }
      tx.commit();
    });
    Batch changes;
    std::vector<Counter> counted;
    for (auto& p : pending) {
      const auto it = stored.find(p.write.doc_key);
      const Stored none;
      const Stored& doc = it == stored.end() ? none : it->second;
      if (doc.last_watermark > as_of) {
        ++counts.skipped;
        continue;
      }
      if (internal::unchanged(doc.state, Op::upsert, p.hash, p.write.scope)) {
        ++counts.unchanged;
        continue;
      }
      const Counter counter =
          doc.state.live() ? &ReprojectCounts::changed : &ReprojectCounts::created;
      ++(counts.*counter);
      counted.push_back(counter);
      // Compare-and-set: applied only if nobody changed the doc since.
      p.write.expected_version = doc.state.version;
      changes.writes.push_back(std::move(p.write));
    }
    pending.clear();
    apply(changes, counted);
  }

  // Applies the batch; a conflict means the doc changed after it was
  // compared, so the write moves from its count to skipped.
  void apply(const Batch& batch, const std::vector<Counter>& counted) {
    if (options.dry_run == DryRun::yes || batch.writes.empty()) return;
    const auto results = sink->apply(batch);
    for (std::size_t i = 0; i < results.size(); ++i) {
      switch (results[i].outcome) {
        case Outcome::applied:
        case Outcome::unchanged:
        case Outcome::duplicate:
          break;
        case Outcome::conflict:
          --(counts.*counted[i]);
          ++counts.skipped;
          break;
        case Outcome::rejected:
          throw Error(Code::invalid_input, fmt::format("doc_key \"{}\" was rejected: {}",
                                                       batch.writes[i].doc_key, results[i].detail));
      }
    }
  }
};

Reprojection::Reprojection(const std::string& conninfo, std::string topic, ReprojectOptions options)
    : impl_(std::make_unique<Impl>()) {
  if (options.batch_size <= 0) {
    throw Error(Code::invalid_argument,
                fmt::format("batch_size must be positive, found {}", options.batch_size));
  }
  if (options.as_of && *options.as_of < 0) {
    throw Error(Code::invalid_argument,
                fmt::format("as_of must not be negative, found {}", *options.as_of));
  }
  impl_->conn = connect(conninfo);
  impl_->topic = std::move(topic);
  impl_->options = options;
  internal::db_step("prepare reprojection", [&] {
    pqxx::work tx(*impl_->conn);
    const pqxx::result head = tx.exec_params(kHeadSql, impl_->topic);
    if (head.empty()) {
      throw Error(Code::not_found, fmt::format("topic \"{}\" is not registered", impl_->topic));
    }
    impl_->as_of = options.as_of.value_or(head[0]["head"].as<std::int64_t>());
    tx.exec(kCreateSeenKeysSql);
    tx.commit();
  });
  impl_->sink = std::make_unique<Sink>(*impl_->conn);
}

std::int64_t Reprojection::as_of() const {
  return impl_->as_of;
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
    const auto digest = canonicalize(write.payload, JsonShape::object).sha256;
    p.hash.assign(reinterpret_cast<const char*>(digest.data()), digest.size());
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
  if (static_cast<std::int64_t>(impl_->pending.size()) >= impl_->options.batch_size) {
    impl_->flush();
  }
}

ReprojectCounts Reprojection::finish(
    const std::function<void(const char*, std::int64_t)>& progress) {
  impl_->flush();
  if (progress)
    progress("compared", impl_->counts.unchanged + impl_->counts.changed + impl_->counts.created +
                             impl_->counts.skipped);
  // Live docs the input did not list become tombstones, page by page.
  std::string after;
  for (;;) {
    const pqxx::result missing = internal::db_step("find docs missing from the input", [&] {
      pqxx::read_transaction tx(*impl_->conn);
      return tx.exec_params(kUnlistedDocsSql, impl_->topic, after, impl_->options.batch_size);
    });
    Batch removes;
    std::vector<Impl::Counter> counted;
    for (const auto& row : missing) {
      after = row["doc_key"].as<std::string>();
      if (row["last_watermark"].as<std::int64_t>() > impl_->as_of) {
        ++impl_->counts.skipped;
        continue;
      }
      DocWrite w;
      w.topic = impl_->topic;
      w.doc_key = after;
      w.op = Op::delete_;
      w.expected_version = row["doc_version"].as<std::int64_t>();
      removes.writes.push_back(std::move(w));
      ++impl_->counts.deleted;
      counted.push_back(&ReprojectCounts::deleted);
    }
    impl_->apply(removes, counted);
    if (progress && !removes.writes.empty()) progress("deleted", impl_->counts.deleted);
    if (static_cast<std::int64_t>(missing.size()) < impl_->options.batch_size) break;
  }
  return impl_->counts;
}

}  // namespace oasync
