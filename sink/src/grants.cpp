#include "oasync/grants.hpp"

#include <fmt/format.h>
#include <pqxx/pqxx>

#include "db.hpp"
#include "oasync/error.hpp"

namespace oasync {
namespace {

const char* const kRoleExistsSql = "SELECT 1 FROM pg_roles WHERE rolname = $1";

const char* const kTablesSql = R"SQL(
SELECT format('%I.%I', schemaname, tablename) AS name FROM pg_tables WHERE schemaname = 'oasync'
)SQL";

const char* const kFunctionsSql = R"SQL(
SELECT p.oid::regprocedure::text AS name
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'oasync'
)SQL";

// Statements templates: {} is a quoted role or object name.
const char* const kOwnSchema = "ALTER SCHEMA oasync OWNER TO {}";
const char* const kOwnTable = "ALTER TABLE {} OWNER TO {}";
const char* const kOwnFunction = "ALTER FUNCTION {} OWNER TO {}";

// For the writer and the reader before their grants: nothing but what follows.
const char* const kResetRole[] = {
    "REVOKE ALL ON ALL TABLES IN SCHEMA oasync FROM {}",
    "REVOKE ALL ON ALL FUNCTIONS IN SCHEMA oasync FROM {}",
    "GRANT USAGE ON SCHEMA oasync TO {}",
};

const char* const kRevokeFunctionsFromPublic =
    "REVOKE ALL ON ALL FUNCTIONS IN SCHEMA oasync FROM PUBLIC";

// The writer: exactly what Sink::apply touches. DELETE on docs removes the
// batch's unused placeholder rows.
const char* const kWriterGrants[] = {
    "GRANT SELECT ON oasync.topics TO {}",
    "GRANT UPDATE (head) ON oasync.topics TO {}",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON oasync.docs TO {}",
    "GRANT SELECT, INSERT ON oasync.events TO {}",
    "GRANT SELECT, INSERT, UPDATE ON oasync.producer_checkpoints TO {}",
};

// The reader: read everything, through the read functions too, and record
// its consumer position.
const char* const kReaderGrants[] = {
    "GRANT SELECT ON oasync.topics, oasync.docs, oasync.events, oasync.consumers TO {}",
    "GRANT INSERT, UPDATE ON oasync.consumers TO {}",
    R"SQL(GRANT EXECUTE ON FUNCTION oasync.resume_check(text, uuid, bigint),
                            oasync.read_events(text, uuid, bigint, bigint, text),
                            oasync.resumable_mode(text, uuid, bigint),
                            oasync.snapshot_docs(text, text, bigint, text, integer),
                            oasync.topic_position(text),
                            oasync.ack_consumer(text, text, uuid, bigint),
                            oasync.get_doc(text, text)
      TO {})SQL",
};

// Scope security, per table ({0}); {1} is the reader, {2} the writer.
const char* const kDropScopePolicies[] = {
    "DROP POLICY IF EXISTS oasync_scope_read ON {0}",
    "DROP POLICY IF EXISTS oasync_writer_all ON {0}",
};
const char* const kScopeSecurityOff = "ALTER TABLE {0} DISABLE ROW LEVEL SECURITY";
const char* const kScopeSecurityOn[] = {
    "ALTER TABLE {0} ENABLE ROW LEVEL SECURITY",
    R"SQL(CREATE POLICY oasync_scope_read ON {0} FOR SELECT TO {1}
          USING (scope = current_setting('oasync.scope', true)))SQL",
    "CREATE POLICY oasync_writer_all ON {0} FOR ALL TO {2} USING (true) WITH CHECK (true)",
};

}  // namespace

void apply_grants(pqxx::connection_base& conn, const GrantRoles& roles) {
  if (roles.writer.empty() || roles.reader.empty()) {
    throw Error(Code::invalid_argument, "grants need a writer role and a reader role");
  }
  internal::db_step("grants", [&] {
    pqxx::work tx(conn, "oasync_grants");
    for (const std::string* role : {&roles.writer, &roles.reader, &roles.owner}) {
      if (role->empty()) continue;
      if (tx.exec_params(kRoleExistsSql, *role).empty()) {
        throw Error(Code::not_found, fmt::format("role \"{}\" does not exist", *role));
      }
    }
    const std::string w = tx.quote_name(roles.writer);
    const std::string r = tx.quote_name(roles.reader);
    if (!roles.owner.empty()) {
      const std::string o = tx.quote_name(roles.owner);
      tx.exec(fmt::format(fmt::runtime(kOwnSchema), o));
      for (const auto& row : tx.exec(kTablesSql)) {
        tx.exec(fmt::format(fmt::runtime(kOwnTable), row["name"].as<std::string>(), o));
      }
      for (const auto& row : tx.exec(kFunctionsSql)) {
        tx.exec(fmt::format(fmt::runtime(kOwnFunction), row["name"].as<std::string>(), o));
      }
    }
    for (const std::string& role : {w, r}) {
      for (const char* statement : kResetRole) tx.exec(fmt::format(fmt::runtime(statement), role));
    }
    tx.exec(kRevokeFunctionsFromPublic);
    for (const char* statement : kWriterGrants) tx.exec(fmt::format(fmt::runtime(statement), w));
    for (const char* statement : kReaderGrants) tx.exec(fmt::format(fmt::runtime(statement), r));
    if (roles.scope_security != ScopeSecurity::unchanged) {
      for (const char* table : {"oasync.docs", "oasync.events"}) {
        for (const char* statement : kDropScopePolicies)
          tx.exec(fmt::format(fmt::runtime(statement), table));
        if (roles.scope_security == ScopeSecurity::off) {
          tx.exec(fmt::format(fmt::runtime(kScopeSecurityOff), table));
          continue;
        }
        for (const char* statement : kScopeSecurityOn) {
          tx.exec(fmt::format(fmt::runtime(statement), table, r, w));
        }
      }
    }
    tx.commit();
  });
}

}  // namespace oasync
