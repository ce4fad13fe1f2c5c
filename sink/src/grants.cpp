#include "oasync/grants.hpp"

#include <fmt/format.h>
#include <pqxx/pqxx>

#include "db.hpp"
#include "oasync/error.hpp"

namespace oasync {

void apply_grants(pqxx::connection_base& conn, const GrantRoles& roles) {
  if (roles.writer.empty() || roles.reader.empty()) {
    throw Error("grants need a writer role and a reader role");
  }
  internal::db_step("grants", [&] {
    pqxx::work tx(conn, "oasync_grants");
    for (const std::string* role : {&roles.writer, &roles.reader, &roles.owner}) {
      if (role->empty()) continue;
      if (tx.exec_params("SELECT 1 FROM pg_roles WHERE rolname = $1", *role).empty()) {
        throw Error(fmt::format("role \"{}\" does not exist", *role));
      }
    }
    const std::string w = tx.quote_name(roles.writer);
    const std::string r = tx.quote_name(roles.reader);
    if (!roles.owner.empty()) {
      const std::string o = tx.quote_name(roles.owner);
      tx.exec("ALTER SCHEMA oasync OWNER TO " + o);
      for (const auto& row : tx.exec("SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
                                     "WHERE schemaname = 'oasync'")) {
        tx.exec("ALTER TABLE " + row[0].as<std::string>() + " OWNER TO " + o);
      }
      for (const auto& row : tx.exec("SELECT p.oid::regprocedure::text FROM pg_proc p JOIN "
                                     "pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = "
                                     "'oasync'")) {
        tx.exec("ALTER FUNCTION " + row[0].as<std::string>() + " OWNER TO " + o);
      }
    }
    for (const std::string& role : {w, r}) {
      tx.exec("REVOKE ALL ON ALL TABLES IN SCHEMA oasync FROM " + role);
      tx.exec("REVOKE ALL ON ALL FUNCTIONS IN SCHEMA oasync FROM " + role);
      tx.exec("GRANT USAGE ON SCHEMA oasync TO " + role);
    }
    tx.exec("REVOKE ALL ON ALL FUNCTIONS IN SCHEMA oasync FROM PUBLIC");
    // The writer: exactly what Sink::apply touches. DELETE on docs removes
    // the batch's unused placeholder rows.
    tx.exec("GRANT SELECT ON oasync.topics TO " + w);
    tx.exec("GRANT UPDATE (head) ON oasync.topics TO " + w);
    tx.exec("GRANT SELECT, INSERT, UPDATE, DELETE ON oasync.docs TO " + w);
    tx.exec("GRANT SELECT, INSERT ON oasync.events TO " + w);
    tx.exec("GRANT SELECT, INSERT, UPDATE ON oasync.producer_checkpoints TO " + w);
    // The reader: read everything, record its consumer position.
    tx.exec("GRANT SELECT ON oasync.topics, oasync.docs, oasync.events, oasync.consumers TO " + r);
    tx.exec("GRANT INSERT, UPDATE ON oasync.consumers TO " + r);
    tx.exec(
        "GRANT EXECUTE ON FUNCTION oasync.resume_check(text, uuid, bigint), "
        "oasync.read_events(text, uuid, bigint, bigint, text), "
        "oasync.resumable_mode(text, uuid, bigint), "
        "oasync.snapshot_docs(text, text, bigint, text, integer), "
        "oasync.topic_position(text), oasync.ack_consumer(text, text, uuid, bigint) TO " +
        r);
    if (roles.scope_security != ScopeSecurity::unchanged) {
      for (const char* table : {"oasync.docs", "oasync.events"}) {
        tx.exec(fmt::format("DROP POLICY IF EXISTS oasync_scope_read ON {}", table));
        tx.exec(fmt::format("DROP POLICY IF EXISTS oasync_writer_all ON {}", table));
        if (roles.scope_security == ScopeSecurity::off) {
          tx.exec(fmt::format("ALTER TABLE {} DISABLE ROW LEVEL SECURITY", table));
          continue;
        }
        tx.exec(fmt::format("ALTER TABLE {} ENABLE ROW LEVEL SECURITY", table));
        tx.exec(
            fmt::format("CREATE POLICY oasync_scope_read ON {} FOR SELECT TO {} USING (scope = "
                        "current_setting('oasync.scope', true))",
                        table, r));
        tx.exec(
            fmt::format("CREATE POLICY oasync_writer_all ON {} FOR ALL TO {} USING (true) WITH "
                        "CHECK (true)",
                        table, w));
      }
    }
    tx.commit();
  });
}

}  // namespace oasync
