#include "pg.hpp"

#include <poll.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstring>
#include <functional>

#include <fmt/format.h>

#include "db.hpp"
#include "oasync/error.hpp"

namespace oasync::internal::pg {
namespace {

// libpqxx hands out a transaction's PGconn to largeobject, through a protected
// static member; a class derived from largeobject may call it.
struct LargeObjectGate : pqxx::largeobject {
  static PGconn* of(const pqxx::dbtransaction& tx) { return largeobject::raw_connection(tx); }
};

void put32(std::string& out, std::uint32_t v) {
  const char bytes[4] = {static_cast<char>(v >> 24), static_cast<char>((v >> 16) & 0xff),
                         static_cast<char>((v >> 8) & 0xff), static_cast<char>(v & 0xff)};
  out.append(bytes, 4);
}

void put64(std::string& out, std::uint64_t v) {
  put32(out, static_cast<std::uint32_t>(v >> 32));
  put32(out, static_cast<std::uint32_t>(v & 0xffffffffu));
}

// The binary form of a one-dimensional array (array_recv): dimensions, then
// each element as its length and bytes (-1: NULL).
template <typename Element>
std::string array(Oid element_type, const std::vector<Element>& values,
                  const std::function<std::optional<std::string>(const Element&)>& encode) {
  std::string out;
  std::vector<std::optional<std::string>> encoded;
  encoded.reserve(values.size());
  bool has_null = false;
  std::size_t total = 20;
  for (const Element& v : values) {
    encoded.push_back(encode(v));
    has_null = has_null || !encoded.back();
    total += 4 + (encoded.back() ? encoded.back()->size() : 0);
  }
  out.reserve(total);
  put32(out, 1);  // dimensions
  put32(out, has_null ? 1 : 0);
  put32(out, element_type);
  put32(out, static_cast<std::uint32_t>(values.size()));
  put32(out, 1);  // lower bound
  for (const auto& e : encoded) {
    if (!e) {
      put32(out, 0xffffffffu);
      continue;
    }
    put32(out, static_cast<std::uint32_t>(e->size()));
    out += *e;
  }
  return out;
}

// Waits until `conn`'s socket is readable or writable (both wanted).
void wait_socket(PGconn* conn) {
  pollfd fd{PQsocket(conn), POLLIN | POLLOUT, 0};
  ::poll(&fd, 1, 1000);
}

}  // namespace

std::string trimmed(const char* message) {
  std::string m = message == nullptr ? "" : message;
  while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
  return m;
}

PGconn* raw_connection(const pqxx::dbtransaction& tx) {
  return LargeObjectGate::of(tx);
}

// Never begun: End() only unregisters it from the connection.
Borrowed::Borrowed(pqxx::connection_base& conn)
    : pqxx::internal::namedclass("borrowed connection"), dbtransaction(conn) {}

Borrowed::~Borrowed() {
  End();
}

namespace {

// Connects with oasync's defaults first and `conninfo` expanded after them,
// so that what the caller's string says wins.
PGconn* connect_with_defaults(const std::string& conninfo, int stalled_timeout_ms) {
  if (stalled_timeout_ms <= 0) return PQconnectdb(conninfo.c_str());
  const int seconds = std::max(1, stalled_timeout_ms / 1000);
  const std::string idle = std::to_string(std::max(1, seconds / 3));
  const std::string interval = std::to_string(std::max(1, seconds / 6));
  const std::string user_timeout = std::to_string(stalled_timeout_ms);
  const std::string connect_timeout = std::to_string(std::max(2, seconds));
  const char* keys[] = {"keepalives",
                        "keepalives_idle",
                        "keepalives_interval",
                        "keepalives_count",
                        "tcp_user_timeout",
                        "connect_timeout",
                        "dbname",
                        nullptr};
  const char* values[] = {"1",
                          idle.c_str(),
                          interval.c_str(),
                          "3",
                          user_timeout.c_str(),
                          connect_timeout.c_str(),
                          conninfo.c_str(),
                          nullptr};
  return PQconnectdbParams(keys, values, 1);
}

}  // namespace

Connection::Connection(const std::string& conninfo, int stalled_timeout_ms)
    : conn_(connect_with_defaults(conninfo, stalled_timeout_ms)) {
  if (conn_ == nullptr) throw connect_error(conninfo, "out of memory");
  if (PQstatus(conn_) != CONNECTION_OK) {
    const std::string message = trimmed(PQerrorMessage(conn_));
    PQfinish(conn_);
    conn_ = nullptr;
    throw connect_error(conninfo, message);
  }
  PGresult* r = PQexec(conn_, kSessionSetupSql);
  const bool set = r != nullptr && PQresultStatus(r) == PGRES_COMMAND_OK;
  const std::string message = set ? "" : trimmed(PQerrorMessage(conn_));
  PQclear(r);
  if (!set) {
    PQfinish(conn_);
    conn_ = nullptr;
    throw connect_error(conninfo, message);
  }
}

Connection::~Connection() {
  if (conn_ != nullptr) PQfinish(conn_);
}

void Params::add(Oid type, std::string bytes, bool null) {
  types_.push_back(type);
  lengths_.push_back(null ? 0 : static_cast<int>(bytes.size()));
  formats_.push_back(1);
  buffers_.push_back(std::move(bytes));
  nulls_.push_back(null);
}

void Params::add_null(Oid type) {
  add(type, {}, true);
}

void Params::add_text(std::string_view value) {
  add(kText, std::string(value));
}

void Params::add_int8(std::int64_t value) {
  std::string out;
  put64(out, static_cast<std::uint64_t>(value));
  add(kInt8, std::move(out));
}

void Params::add_bool(bool value) {
  add(kBool, std::string(1, value ? '\1' : '\0'));
}

void Params::add_text_array(const std::vector<std::optional<std::string_view>>& values) {
  add(kTextArray, array<std::optional<std::string_view>>(
                      kText, values, [](const std::optional<std::string_view>& v) {
                        return v ? std::optional<std::string>(std::string(*v)) : std::nullopt;
                      }));
}

void Params::add_bytea_array(const std::vector<std::optional<std::string_view>>& values) {
  add(kByteaArray, array<std::optional<std::string_view>>(
                       kBytea, values, [](const std::optional<std::string_view>& v) {
                         return v ? std::optional<std::string>(std::string(*v)) : std::nullopt;
                       }));
}

void Params::add_int8_array(const std::vector<std::optional<std::int64_t>>& values) {
  add(kInt8Array,
      array<std::optional<std::int64_t>>(kInt8, values, [](const std::optional<std::int64_t>& v) {
        if (!v) return std::optional<std::string>();
        std::string out;
        put64(out, static_cast<std::uint64_t>(*v));
        return std::optional<std::string>(std::move(out));
      }));
}

void Params::add_bool_array(const std::vector<bool>& values) {
  add(kBoolArray, array<bool>(kBool, values, [](const bool& v) {
        return std::optional<std::string>(std::string(1, v ? '\1' : '\0'));
      }));
}

void Params::add_tid_array(const std::vector<Tid>& values) {
  add(kTidArray, array<Tid>(kTid, values, [](const Tid& t) {
        std::string out;
        put32(out, t.block);
        out.push_back(static_cast<char>(t.offset >> 8));
        out.push_back(static_cast<char>(t.offset & 0xff));
        return std::optional<std::string>(std::move(out));
      }));
}

std::vector<const char*> Params::values() const {
  std::vector<const char*> out;
  out.reserve(buffers_.size());
  for (std::size_t i = 0; i < buffers_.size(); ++i) {
    out.push_back(nulls_[i] ? nullptr : buffers_[i].data());
  }
  return out;
}

int Result::column(const char* name) const {
  const int n = PQfnumber(result_.get(), name);
  if (n < 0) throw Error(Code::internal, fmt::format("no column \"{}\" in the result", name));
  return n;
}

std::int64_t Result::int8(int row, int column) const {
  const std::string_view t = text(row, column);
  std::int64_t v = 0;
  const auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
  if (ec != std::errc() || end != t.data() + t.size()) {
    throw Error(Code::internal, fmt::format("\"{}\" is not a bigint", t));
  }
  return v;
}

std::string Result::bytes(int row, int column) const {
  if (is_null(row, column)) return {};
  std::size_t length = 0;
  unsigned char* raw = PQunescapeBytea(
      reinterpret_cast<const unsigned char*>(PQgetvalue(result_.get(), row, column)), &length);
  if (raw == nullptr) throw Error(Code::internal, "cannot decode a bytea value");
  std::string out(reinterpret_cast<const char*>(raw), length);
  PQfreemem(raw);
  return out;
}

Tid Result::tid(int row, int column) const {
  // Text form: "(block,offset)".
  const std::string_view t = text(row, column);
  const std::size_t comma = t.find(',');
  Tid tid;
  std::uint32_t block = 0;
  std::uint32_t offset = 0;
  if (t.size() < 5 || t.front() != '(' || t.back() != ')' || comma == std::string_view::npos ||
      std::from_chars(t.data() + 1, t.data() + comma, block).ec != std::errc() ||
      std::from_chars(t.data() + comma + 1, t.data() + t.size() - 1, offset).ec != std::errc()) {
    throw Error(Code::internal, fmt::format("\"{}\" is not a tid", t));
  }
  tid.block = block;
  tid.offset = static_cast<std::uint16_t>(offset);
  return tid;
}

Pipeline::Pipeline() {
  static std::atomic<int> pipelines{0};
  prefix_ = fmt::format("oasync_{}_", ++pipelines);
}

std::string Pipeline::name_of(const Statement& statement) const {
  return prefix_ + statement.name;
}

std::vector<Result> Pipeline::run(PGconn* conn, std::vector<Call>& calls, const std::string& step) {
  send(conn, calls, step);
  return receive(conn);
}

namespace {

// Lists the pipeline's statements that the session still holds.
constexpr const char* kListPreparedSql = R"SQL(
SELECT p.name FROM pg_catalog.pg_prepared_statements AS p
WHERE pg_catalog.starts_with(p.name, $1::pg_catalog.text)
)SQL";

// Whether a failed result ended the session rather than the statement: a
// FATAL or PANIC from the server, or an error libpq made up for a lost
// connection (no SQLSTATE).
bool ends_session(const PGresult* r) {
  const char* severity = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
  const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  if (severity == nullptr || state == nullptr) return true;
  return std::strcmp(severity, "FATAL") == 0 || std::strcmp(severity, "PANIC") == 0;
}

}  // namespace

void Pipeline::send(PGconn* conn, std::vector<Call>& calls, const std::string& step) {
  std::size_t commit_at = calls.size();
  for (std::size_t i = 0; i < calls.size(); ++i) {
    if (calls[i].statement == nullptr && std::strcmp(calls[i].sql, "COMMIT") == 0) commit_at = i;
  }
  const auto broken = [&] {
    const std::string message = trimmed(PQerrorMessage(conn));
    if (commit_at < calls.size()) {
      // Some of the pipeline, COMMIT included, may have reached the server.
      return Error(Code::outcome_unknown,
                   fmt::format("{}: connection lost while sending the commit; the outcome is "
                               "unknown ({})",
                               step, message),
                   Retryable::yes, "08006", "commit");
    }
    return Error(Code::database, fmt::format("{}: connection lost: {}", step, message),
                 Retryable::yes, "08006", step);
  };
  if (PQbackendPID(conn) != backend_pid_) {
    // Another session (or one that was away, with apply_within on a
    // caller's in between): ask it what it holds rather than assume.
    backend_pid_ = PQbackendPID(conn);
    prepared_.clear();
    prepared_mode_ = Prepared::verify;
  }
  if (PQenterPipelineMode(conn) != 1) throw broken();
  in_flight_ = InFlight{};
  in_flight_.step = step;
  in_flight_.calls = calls.size();
  in_flight_.commit_at = commit_at;
  // A session that may have dropped its prepared statements lists them, and
  // this run prepares nothing: each call is parsed unnamed.
  const bool verify = prepared_mode_ == Prepared::verify;
  bool ok = PQsetnonblocking(conn, 1) == 0;
  std::vector<std::string> newly_prepared;
  for (std::size_t i = 0; ok && i < calls.size(); ++i) {
    Call& call = calls[i];
    if (call.statement == nullptr) {
      ok = PQsendQueryParams(conn, call.sql, 0, nullptr, nullptr, nullptr, nullptr, 0) == 1;
      in_flight_.sent.push_back({"", i});
      continue;
    }
    const Statement& s = *call.statement;
    const std::vector<const char*> values = call.params.values();
    if (verify) {
      ok = PQsendQueryParams(conn, s.sql, call.params.size(), call.params.types(), values.data(),
                             call.params.lengths(), call.params.formats(), 0) == 1;
      in_flight_.sent.push_back({"", i});
      continue;
    }
    const std::string name = name_of(s);
    const bool known =
        std::find(prepared_.begin(), prepared_.end(), name) != prepared_.end() ||
        std::find(newly_prepared.begin(), newly_prepared.end(), name) != newly_prepared.end();
    if (!known) {
      ok = PQsendPrepare(conn, name.c_str(), s.sql, static_cast<int>(s.types.size()),
                         s.types.data()) == 1;
      newly_prepared.push_back(name);
      in_flight_.sent.push_back({name, i});
    }
    ok = ok && PQsendQueryPrepared(conn, name.c_str(), call.params.size(), values.data(),
                                   call.params.lengths(), call.params.formats(), 0) == 1;
    in_flight_.sent.push_back({"", i});
  }
  if (ok && verify) {
    // Last, so that a BEGIN among the calls is the first statement.
    const char* values[] = {prefix_.c_str()};
    ok = PQsendQueryParams(conn, kListPreparedSql, 1, nullptr, values, nullptr, nullptr, 0) == 1;
    in_flight_.listed = true;
  }
  ok = ok && PQpipelineSync(conn) == 1;
  // Send everything, reading what comes back meanwhile, so that neither side
  // can block the other on a full socket buffer.
  for (int flushed = ok ? PQflush(conn) : -1; flushed != 0; flushed = PQflush(conn)) {
    if (flushed < 0 || PQstatus(conn) == CONNECTION_BAD) {
      ok = false;
      break;
    }
    wait_socket(conn);
    if (PQconsumeInput(conn) != 1) {
      ok = false;
      break;
    }
  }
  PQsetnonblocking(conn, 0);
  if (!ok) {
    PQexitPipelineMode(conn);
    throw broken();
  }
}

std::vector<Result> Pipeline::receive(PGconn* conn) {
  const std::string& step = in_flight_.step;
  const std::size_t commit_at = in_flight_.commit_at;
  std::vector<Result> results;
  results.reserve(in_flight_.sent.size());
  std::optional<Error> failure;  // a statement failed; the server skipped the rest
  std::string session_end;       // why the session ended, when a result said so
  bool lost = false;
  bool committed = false;  // COMMIT's result arrived
  std::optional<std::vector<std::string>> listed;
  const std::size_t expected = in_flight_.sent.size() + (in_flight_.listed ? 1 : 0);
  for (std::size_t k = 0; k < expected; ++k) {
    const bool list = k == in_flight_.sent.size();
    const Sent* s = list ? nullptr : &in_flight_.sent[k];
    PGresult* r = PQgetResult(conn);
    if (r == nullptr) {
      lost = true;
      break;
    }
    Result result(r);
    const ExecStatusType status = PQresultStatus(r);
    const bool prepare = s != nullptr && !s->prepared.empty();
    if (status == PGRES_FATAL_ERROR) {
      if (ends_session(r)) {
        session_end = trimmed(PQresultErrorMessage(r));
        lost = true;
        break;
      }
      if (!failure) {
        const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        failure = database_error(step, state, trimmed(PQresultErrorMessage(r)),
                                 prepare ? s->prepared : step);
      }
    }
    if (prepare && status == PGRES_COMMAND_OK) prepared_.push_back(s->prepared);
    if (list && status == PGRES_TUPLES_OK) {
      listed.emplace();
      for (int row = 0; row < result.rows(); ++row) listed->emplace_back(result.text(row, 0));
    }
    if (s != nullptr && !prepare && s->call == commit_at && status == PGRES_COMMAND_OK) {
      committed = true;
    }
    if (PQstatus(conn) == CONNECTION_BAD) {
      lost = true;
      break;
    }
    // Each command's results end with a NULL.
    while (PGresult* extra = PQgetResult(conn)) PQclear(extra);
    if (s != nullptr && !prepare) results.push_back(std::move(result));
  }
  if (!lost) {
    // The sync point.
    PGresult* sync = PQgetResult(conn);
    lost = sync == nullptr;
    if (sync != nullptr) PQclear(sync);
  }
  lost = lost || PQstatus(conn) == CONNECTION_BAD;
  if (lost) {
    // After a FATAL the server closes the session: read until libpq has seen
    // it, so that the connection says it is bad and is replaced (a bounded
    // wait: 10 s).
    for (int i = 0; i < 100 && PQstatus(conn) != CONNECTION_BAD; ++i) {
      pollfd fd{PQsocket(conn), POLLIN, 0};
      ::poll(&fd, 1, 100);
      if (PQconsumeInput(conn) != 1) break;
      while (PQstatus(conn) != CONNECTION_BAD && !PQisBusy(conn)) {
        PGresult* r = PQgetResult(conn);
        if (r == nullptr) break;
        PQclear(r);
      }
    }
  }
  PQexitPipelineMode(conn);
  if (listed) {
    prepared_ = std::move(*listed);
    prepared_mode_ = Prepared::trusted;
  }
  // A COMMIT whose result arrived is committed, whatever the sync did.
  if (committed) return results;
  // A failed statement made the server skip the rest, COMMIT included.
  if (failure) throw *failure;
  if (lost) {
    const std::string why = session_end.empty() ? trimmed(PQerrorMessage(conn)) : session_end;
    if (commit_at < in_flight_.calls) {
      throw Error(
          Code::outcome_unknown,
          fmt::format("{}: connection lost during commit; the outcome is unknown ({})", step, why),
          Retryable::yes, "08006", "commit");
    }
    throw Error(Code::database, fmt::format("{}: connection lost: {}", step, why), Retryable::yes,
                "08006", step);
  }
  return results;
}

void Pipeline::run_quietly(PGconn* conn, const char* sql) noexcept {
  if (PGresult* r = PQexec(conn, sql)) PQclear(r);
}

}  // namespace oasync::internal::pg
