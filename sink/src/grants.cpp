#include "oasync/grants.hpp"

#include <fmt/format.h>
#include <pqxx/pqxx>

#include "db.hpp"
#include "oasync/batch.hpp"
#include "oasync/error.hpp"

namespace oasync {
namespace {

const char* const kRoleExistsSql = "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1";

const char* const kTablesSql = R"SQL(
SELECT pg_catalog.format('%I.%I', schemaname, tablename) AS name
FROM pg_catalog.pg_tables WHERE schemaname = 'oasync'
)SQL";

const char* const kSequencesSql = R"SQL(
SELECT pg_catalog.format('%I.%I', schemaname, sequencename) AS name
FROM pg_catalog.pg_sequences WHERE schemaname = 'oasync'
)SQL";

const char* const kFunctionsSql = R"SQL(
SELECT p.oid::pg_catalog.regprocedure::pg_catalog.text AS name
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'oasync'
)SQL";

const char* const kClearBindingsSql = "DELETE FROM oasync.scope_bindings WHERE role = $1";
const char* const kTrustSql = R"SQL(
INSERT INTO oasync.trusted_roles (role, kind) VALUES ($1, $2)
ON CONFLICT (role) DO UPDATE SET kind = excluded.kind
)SQL";
const char* const kDistrustSql = "DELETE FROM oasync.trusted_roles WHERE role = $1";
const char* const kBindScopeSql = R"SQL(
INSERT INTO oasync.scope_bindings (role, scope) VALUES ($1, $2) ON CONFLICT DO NOTHING
)SQL";

// Statement templates: {} is a quoted role or object name.
const char* const kOwnSchema = "ALTER SCHEMA oasync OWNER TO {}";
const char* const kOwnTable = "ALTER TABLE {} OWNER TO {}";
const char* const kOwnSequence = "ALTER SEQUENCE {} OWNER TO {}";
const char* const kOwnFunction = "ALTER FUNCTION {} OWNER TO {}";

// For each granted role before its grants: nothing but what follows.
const char* const kResetRole[] = {
    "REVOKE ALL ON ALL TABLES IN SCHEMA oasync FROM {}",
    "REVOKE ALL ON ALL SEQUENCES IN SCHEMA oasync FROM {}",
    "REVOKE ALL ON ALL FUNCTIONS IN SCHEMA oasync FROM {}",
    "GRANT USAGE ON SCHEMA oasync TO {}",
};

const char* const kRevokeFunctionsFromPublic =
    "REVOKE ALL ON ALL FUNCTIONS IN SCHEMA oasync FROM PUBLIC";

// The writer: exactly what Sink::apply touches, and no DELETE.
const char* const kWriterGrants[] = {
    "GRANT SELECT ON oasync.topics TO {}",
    "GRANT UPDATE (head, live_docs, tombstones) ON oasync.topics TO {}",
    "GRANT SELECT, INSERT, UPDATE ON oasync.docs TO {}",
    "GRANT SELECT, INSERT ON oasync.events, oasync.scope_exits TO {}",
    "GRANT SELECT, INSERT, UPDATE ON oasync.producer_checkpoints TO {}",
    R"SQL(GRANT EXECUTE ON FUNCTION oasync.current_timeline(), oasync.note_timeline(json),
                            oasync.drop_placeholders(tid[]), oasync.raise(text, text, text),
                            oasync.session_scope(name), oasync.session_trusted(name) TO {})SQL",
};

// The reader (and the server): read everything, through the read functions
// too, and acknowledge through ack_consumer.
const char* const kReaderGrants[] = {
    R"SQL(GRANT SELECT ON oasync.topics, oasync.docs, oasync.events, oasync.scope_exits,
                   oasync.epoch_history, oasync.consumers TO {})SQL",
    R"SQL(GRANT EXECUTE ON FUNCTION oasync.resume_check(text, uuid, bigint),
                            oasync.resume_check(text, text, bigint),
                            oasync.read_check(text, uuid, bigint, bigint),
                            oasync.read_events(text, uuid, bigint, bigint, text),
                            oasync.snapshot_docs(text, text, bigint, text, integer),
                            oasync.topic_position(text),
                            oasync.get_doc(text, text),
                            oasync.ack_consumer(text, text, uuid, bigint),
                            oasync.session_scope(name), oasync.session_trusted(name),
                            oasync.raise(text, text, text)
      TO {})SQL",
};

// The server alone: the revoked sessions it refuses.
const char* const kServerGrants[] = {"GRANT SELECT ON oasync.revoked_sessions TO {}"};

// Scope security, per table ({}). The policies name no role: every role but
// the owner is held to them. A trusted role (a writer or a server, in
// oasync.trusted_roles) sees and writes every row; any other sees the rows of
// its session's bound scope. Several readers, writers and servers can hold
// them at once; `grants` only adds to trusted_roles and scope_bindings.
// (SELECT ...): evaluated once per query, not per row.
struct ScopedTable {
  const char* name;
  // What a row of the bound scope must also be for a non-trusted role to see
  // it ("" or a condition followed by AND). Docs hide their version-0 rows:
  // placeholders and stream positions carry the scope of an upsert that may
  // never have applied (migration 0010 says the same to a policy made before
  // it, and must stay in step with this).
  const char* reader_sees;
};
const ScopedTable kScopedTables[] = {
    {"oasync.docs", "doc_version OPERATOR(pg_catalog.>) 0 AND "},
    {"oasync.events", ""},
    {"oasync.scope_exits", ""},
};
const char* const kDropScopePolicies[] = {
    "DROP POLICY IF EXISTS oasync_scope_read ON {}",
    "DROP POLICY IF EXISTS oasync_trusted_write ON {}",
};
const char* const kScopeSecurityOff = "ALTER TABLE {} DISABLE ROW LEVEL SECURITY";
const char* const kScopeSecurityOn[] = {
    "ALTER TABLE {} ENABLE ROW LEVEL SECURITY",
    R"SQL(CREATE POLICY oasync_scope_read ON {0} FOR SELECT
          USING ((SELECT oasync.session_trusted(CURRENT_USER))
                 OR ({1}scope = (SELECT oasync.session_scope(CURRENT_USER) COLLATE pg_catalog."default"))))SQL",
    R"SQL(CREATE POLICY oasync_trusted_write ON {0} FOR ALL
          USING ((SELECT oasync.session_trusted(CURRENT_USER)))
          WITH CHECK ((SELECT oasync.session_trusted(CURRENT_USER))))SQL",
};

void run(pqxx::transaction_base& tx, const char* statement, const std::string& name) {
  tx.exec(fmt::format(fmt::runtime(statement), name));
}

void run(pqxx::transaction_base& tx, const char* statement, const ScopedTable& table) {
  tx.exec(fmt::format(fmt::runtime(statement), table.name, table.reader_sees));
}

}  // namespace

void apply_grants(pqxx::connection_base& conn, const GrantRoles& roles) {
  if (roles.writer.empty() || roles.reader.empty()) {
    throw Error(Code::invalid_argument, "grants need a writer role and a reader role");
  }
  if (roles.reader_scopes) {
    for (const std::string& scope : *roles.reader_scopes) {
      if (scope.size() > kMaxScopeBytes || scope.find('\0') != std::string::npos) {
        throw Error(Code::invalid_argument,
                    fmt::format("reader_scopes: \"{}\" is not a scope (at most {} bytes, no NUL)",
                                scope, kMaxScopeBytes));
      }
    }
  }
  internal::db_step("grants", [&] {
    pqxx::work tx(conn, "oasync_grants");
    internal::pin_search_path(tx);
    for (const std::string* role : {&roles.writer, &roles.reader, &roles.owner, &roles.server}) {
      if (role->empty()) continue;
      if (tx.exec_params(kRoleExistsSql, *role).empty()) {
        throw Error(Code::not_found, fmt::format("role \"{}\" does not exist", *role));
      }
    }
    const std::string w = tx.quote_name(roles.writer);
    const std::string r = tx.quote_name(roles.reader);
    const std::string s = roles.server.empty() ? "" : tx.quote_name(roles.server);
    if (!roles.owner.empty()) {
      const std::string o = tx.quote_name(roles.owner);
      tx.exec(fmt::format(fmt::runtime(kOwnSchema), o));
      for (const auto& [query, statement] :
           {std::pair{kTablesSql, kOwnTable}, std::pair{kSequencesSql, kOwnSequence},
            std::pair{kFunctionsSql, kOwnFunction}}) {
        for (const auto& row : tx.exec(query)) {
          tx.exec(fmt::format(fmt::runtime(statement), row["name"].as<std::string>(), o));
        }
      }
    }
    for (const std::string& role : {w, r, s}) {
      if (role.empty()) continue;
      for (const char* statement : kResetRole) run(tx, statement, role);
    }
    tx.exec(kRevokeFunctionsFromPublic);
    for (const char* statement : kWriterGrants) run(tx, statement, w);
    for (const std::string& role : {r, s}) {
      if (role.empty()) continue;
      for (const char* statement : kReaderGrants) run(tx, statement, role);
    }
    if (!s.empty()) {
      for (const char* statement : kServerGrants) run(tx, statement, s);
    }
    // The reader is held to its scopes even if it was trusted before.
    tx.exec_params(kDistrustSql, roles.reader);
    tx.exec_params(kTrustSql, roles.writer, "writer");
    if (!roles.server.empty()) tx.exec_params(kTrustSql, roles.server, "server");
    if (roles.reader_scopes) {
      tx.exec_params(kClearBindingsSql, roles.reader);
      for (const std::string& scope : *roles.reader_scopes) {
        tx.exec_params(kBindScopeSql, roles.reader, scope);
      }
    }
    if (roles.scope_security != ScopeSecurity::unchanged) {
      for (const ScopedTable& table : kScopedTables) {
        for (const char* statement : kDropScopePolicies) run(tx, statement, table);
        if (roles.scope_security == ScopeSecurity::off) {
          run(tx, kScopeSecurityOff, table);
          continue;
        }
        for (const char* statement : kScopeSecurityOn) run(tx, statement, table);
      }
    }
    tx.commit();
  });
}

}  // namespace oasync
