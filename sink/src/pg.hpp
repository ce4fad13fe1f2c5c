// Internal: libpq beneath libpqxx, for what libpqxx 6.4 cannot do: send
// several prepared statements in one round trip (pipeline mode), with binary
// array parameters (no quoting, no JSON to parse on the server).
//
// The sink's hot path runs through it: a batch costs two round trips whatever
// its size (see sink.cpp). Everything else uses libpqxx.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <libpq-fe.h>
#include <pqxx/pqxx>

namespace oasync::internal::pg {

// A libpq message without its trailing newlines and spaces ("" for NULL).
std::string trimmed(const char* message);

// The libpq connection under a libpqxx transaction (valid while it lives).
PGconn* raw_connection(const pqxx::dbtransaction& tx);

// The libpq connection of a libpqxx connection, borrowed without a round
// trip: a libpqxx transaction object that never sends BEGIN, so statements
// run on the connection in autocommit mode, each in its own snapshot. While
// it lives, libpqxx refuses to open another transaction on the connection.
class Borrowed final : public pqxx::dbtransaction {
 public:
  explicit Borrowed(pqxx::connection_base& conn);
  ~Borrowed() override;
  PGconn* get() const { return raw_connection(*this); }

 private:
  void do_commit() override {}
};

// A libpq connection of oasync's own, set up as oasync::connect sets up its
// libpqxx ones (redacted errors, kSessionSetupSql).
class Connection {
 public:
  // Throws oasync::Error (database, retryable) when it cannot connect.
  // With `stalled_timeout_ms` above 0, the connection gives up on a peer
  // that stops answering after about that long: TCP keepalives probe it,
  // unacknowledged data is dropped after it (tcp_user_timeout), and the
  // attempt to connect is bounded by it too. Settings in `conninfo` win.
  explicit Connection(const std::string& conninfo, int stalled_timeout_ms = 0);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  PGconn* get() const { return conn_; }
  bool ok() const { return PQstatus(conn_) == CONNECTION_OK; }

 private:
  PGconn* conn_ = nullptr;
};

// A row's physical address (ctid). The sink locks its rows before it reads
// their ctids, so they stay valid until its transaction ends.
struct Tid {
  std::uint32_t block = 0;
  std::uint16_t offset = 0;
};

// Parameters of one statement, in binary format. Each add_* appends one.
class Params {
 public:
  void add_null(Oid type);
  void add_text(std::string_view value);
  void add_int8(std::int64_t value);
  void add_bool(bool value);
  // One-dimensional arrays; a nullopt element is NULL.
  void add_text_array(const std::vector<std::optional<std::string_view>>& values);
  void add_bytea_array(const std::vector<std::optional<std::string_view>>& values);
  void add_int8_array(const std::vector<std::optional<std::int64_t>>& values);
  void add_bool_array(const std::vector<bool>& values);
  void add_tid_array(const std::vector<Tid>& values);

  int size() const { return static_cast<int>(types_.size()); }
  const Oid* types() const { return types_.data(); }
  // Pointers into the buffers; valid until the next add_*.
  std::vector<const char*> values() const;
  const int* lengths() const { return lengths_.data(); }
  const int* formats() const { return formats_.data(); }

 private:
  void add(Oid type, std::string bytes, bool null = false);

  std::vector<Oid> types_;
  std::vector<std::string> buffers_;
  std::vector<int> lengths_;
  std::vector<int> formats_;
  std::vector<bool> nulls_;
};

// The result of one statement; owns its PGresult. Text format.
class Result {
 public:
  explicit Result(PGresult* result) : result_(result, &PQclear) {}
  int rows() const { return PQntuples(result_.get()); }
  // The column's number; throws oasync::Error (internal) for an unknown name.
  int column(const char* name) const;
  bool is_null(int row, int column) const { return PQgetisnull(result_.get(), row, column) != 0; }
  std::string_view text(int row, int column) const {
    return {PQgetvalue(result_.get(), row, column),
            static_cast<std::size_t>(PQgetlength(result_.get(), row, column))};
  }
  std::int64_t int8(int row, int column) const;
  bool boolean(int row, int column) const { return text(row, column) == "t"; }
  // A bytea column's bytes (hex output form).
  std::string bytes(int row, int column) const;
  Tid tid(int row, int column) const;

 private:
  std::unique_ptr<PGresult, decltype(&PQclear)> result_;
};

// A statement a pipeline prepares on first use, under a name of its own on
// the connection (so pipelines sharing a connection never clash), with
// parameters typed by `types`.
struct Statement {
  std::string name;
  const char* sql = nullptr;
  std::vector<Oid> types;
};

// One statement to run: a prepared one with parameters, or plain SQL text
// without any ("BEGIN", "COMMIT").
struct Call {
  const Statement* statement = nullptr;
  Params params;
  const char* sql = nullptr;
};

// Runs calls on libpq connections, all calls of one run in one round trip.
// Remembers which statements it prepared on which session (backend), so each
// is prepared once per session.
class Pipeline {
 public:
  Pipeline();

  // Sends every call (preparing statements this session has not seen), then
  // reads every result. What a failure means is decided by the connection,
  // not by the result that reported it:
  //   - a statement failed (an ERROR; the server then skipped every call
  //     after it, a "COMMIT" included): throws oasync::Error named after
  //     `step` for it;
  //   - the session ended (the connection broke, or a FATAL error, such as
  //     57P01 from a terminated backend, reached a call): throws a retryable
  //     Code::database error (SQLSTATE 08006) if no "COMMIT" was among the
  //     calls, and Code::outcome_unknown if one was and its result had not
  //     arrived: the server may have committed;
  //   - a "COMMIT" whose result arrived is committed, whatever happens to the
  //     connection after it: run() returns the results.
  // `conn` is left in blocking mode, outside pipeline mode; idle, unless
  // it broke.
  std::vector<Result> run(PGconn* conn, std::vector<Call>& calls, const std::string& step);

  // run() in two halves, so that the caller can work while the server does:
  // send() leaves `conn` in pipeline mode, waiting for receive(), and
  // nothing else may use `conn` in between. send() throws only when the
  // connection broke; receive() throws as run() does.
  void send(PGconn* conn, std::vector<Call>& calls, const std::string& step);
  std::vector<Result> receive(PGconn* conn);

  // Runs one plain statement outside a pipeline (a ROLLBACK after a
  // failure); never throws.
  static void run_quietly(PGconn* conn, const char* sql) noexcept;

  // Whether the pipeline may trust its record of what it prepared on a
  // session. A connection that is not oasync's own may have run DISCARD ALL
  // or DEALLOCATE ALL (a pooler's reset) since the last run: with
  // Prepared::verify, the next run asks the session which statements it
  // holds, in the same round trip, and sends its own calls unprepared.
  enum class Prepared { trusted, verify };
  void set_prepared(Prepared prepared) { prepared_mode_ = prepared; }

 private:
  // The name a statement has on the connection.
  std::string name_of(const Statement& statement) const;

  // What send() sent, in order: a preparation (the statement's name) or a
  // call (by index).
  struct Sent {
    std::string prepared;
    std::size_t call = 0;
  };
  struct InFlight {
    std::string step;
    std::vector<Sent> sent;
    std::size_t calls = 0;
    std::size_t commit_at = 0;  // the index of a "COMMIT" call, or `calls`
    bool listed = false;        // the last result lists the session's statements
  };

  std::string prefix_;
  int backend_pid_ = 0;
  std::vector<std::string> prepared_;
  Prepared prepared_mode_ = Prepared::trusted;
  InFlight in_flight_;
};

// Types of Params values (pg_type OIDs).
inline constexpr Oid kBool = 16, kBytea = 17, kInt8 = 20, kText = 25, kTid = 27, kJson = 114,
                     kBoolArray = 1000, kByteaArray = 1001, kTextArray = 1009, kTidArray = 1010,
                     kInt8Array = 1016;

}  // namespace oasync::internal::pg
