#include "replica.hpp"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <pqxx/pqxx>

#include "process.hpp"
#include "test_db.hpp"

namespace oasync::test {
namespace {

std::string env(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr) throw std::runtime_error(fmt::format("{} is not set", name));
  return value;
}

// The words of OASYNC_PG_RUN_AS followed by `argv`.
std::vector<std::string> as_owner(std::vector<std::string> argv) {
  std::vector<std::string> words;
  std::istringstream prefix(env("OASYNC_PG_RUN_AS"));
  for (std::string word; prefix >> word;) words.push_back(word);
  words.insert(words.end(), argv.begin(), argv.end());
  return words;
}

void run(const std::vector<std::string>& argv, const std::string& what) {
  const ProcessResult r = run_process(as_owner(argv));
  if (r.exit_code != 0) {
    throw std::runtime_error(fmt::format("{} failed ({}): {}{}", what, r.exit_code, r.out, r.err));
  }
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

bool Replica::available() {
  for (const char* name : {"OASYNC_PG_BINDIR", "OASYNC_PG_RUN_AS", "OASYNC_PG_HOST",
                           "OASYNC_PG_PORT", "OASYNC_PG_DATADIR"}) {
    if (std::getenv(name) == nullptr) return false;
  }
  return true;
}

Replica::Replica() {
  host_ = env("OASYNC_PG_HOST");
  const std::string bin = env("OASYNC_PG_BINDIR");
  std::random_device rd;
  dir_ = fmt::format("{}/replica_{}_{:x}", host_, getpid(), rd());
  port_ = 0;
  for (int attempt = 0; attempt < 50 && port_ == 0; ++attempt) {
    const int candidate = 20000 + static_cast<int>(rd() % 30000);
    if (access(fmt::format("{}/.s.PGSQL.{}", host_, candidate).c_str(), F_OK) != 0 &&
        std::to_string(candidate) != env("OASYNC_PG_PORT")) {
      port_ = candidate;
    }
  }
  // A hot standby needs these at least as high as on its primary.
  std::string settings;
  {
    pqxx::connection primary(admin_url());
    pqxx::nontransaction tx(primary);
    for (const auto& row :
         tx.exec("SELECT name, setting FROM pg_settings WHERE name IN ('max_connections', "
                 "'max_worker_processes', 'max_wal_senders', 'max_prepared_transactions', "
                 "'max_locks_per_transaction', 'fsync')")) {
      settings += fmt::format(" -c {}={}", row[0].as<std::string>(), row[1].as<std::string>());
    }
  }
  run({bin + "/pg_basebackup", "-D", dir_, "-R", "-X", "stream", "-c", "fast", "-h", host_, "-p",
       env("OASYNC_PG_PORT"), "-U", "oasync"},
      "pg_basebackup");
  // The primary's log file is in its data folder, so the copy has it too:
  // the replica logs beside its folder instead.
  const std::string log = dir_ + ".log";
  try {
    run({bin + "/pg_ctl", "-D", dir_, "-l", log, "-w", "-t", "60", "-o",
         fmt::format("-k {} -p {} -c listen_addresses='' -c hot_standby=on{}", host_, port_,
                     settings),
         "start"},
        "starting the replica");
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string(e.what()) + "\n" + slurp(log));
  }
}

Replica::~Replica() {
  try {
    run({env("OASYNC_PG_BINDIR") + "/pg_ctl", "-D", dir_, "-m", "immediate", "-w", "stop"},
        "stopping the replica");
  } catch (...) {
    // Already down.
  }
  run_process({"rm", "-rf", dir_, dir_ + ".log"});
}

std::string Replica::url(const std::string& dbname) const {
  return fmt::format("host='{}' port='{}' user='oasync' dbname='{}'", host_, port_, dbname);
}

void Replica::catch_up() const {
  std::string target;
  {
    pqxx::connection primary(admin_url());
    pqxx::nontransaction tx(primary);
    target = tx.exec1("SELECT pg_current_wal_insert_lsn()::text")[0].as<std::string>();
  }
  pqxx::connection standby(url("postgres"));
  for (int i = 0; i < 300; ++i) {
    pqxx::nontransaction tx(standby);
    if (tx.exec_params1("SELECT coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, false)", target)[0]
            .as<bool>()) {
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  throw std::runtime_error("the replica did not catch up with " + target + " in 30 s");
}

void Replica::cut() {
  std::ofstream(dir_ + "/postgresql.auto.conf", std::ios::app) << "primary_conninfo = ''\n";
  run({env("OASYNC_PG_BINDIR") + "/pg_ctl", "-D", dir_, "reload"}, "reloading the replica");
  pqxx::connection standby(url("postgres"));
  for (int i = 0; i < 300; ++i) {
    pqxx::nontransaction tx(standby);
    if (tx.exec1("SELECT count(*) FROM pg_stat_wal_receiver")[0].as<int>() == 0) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  throw std::runtime_error("the replica's WAL receiver did not stop in 30 s");
}

void Replica::promote() {
  run({env("OASYNC_PG_BINDIR") + "/pg_ctl", "-D", dir_, "-w", "-t", "60", "promote"},
      "promoting the replica");
}

}  // namespace oasync::test
