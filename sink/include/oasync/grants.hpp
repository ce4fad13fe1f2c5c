// Least privilege: the roles that use oasync, and exactly what each may do.
//
//   owner   owns the schema, its tables, sequences and functions; runs
//           migrations, topics apply, reset-epoch, purge and reproject.
//   writer  runs the sink: reads the registry, writes docs, events, scope
//           exits, heads and producer checkpoints. It cannot drop, truncate,
//           purge (delete events) or move purged_through, epochs or the
//           registry, and it deletes no doc: the placeholders it inserts for
//           new docs go through oasync.drop_placeholders, which removes
//           version-0 rows and nothing else.
//   reader  reads topics, docs, events and scope exits (directly or through
//           the read functions) and records consumer positions through
//           oasync.ack_consumer (forward only, current epoch); nothing else.
//   server  a trusted delivery service: the reader's rights, and it reads
//           every scope even under scope security; it must enforce scopes
//           itself (see README, "Scope security").
//
// Scope security (optional): row-level security on docs, events and scope
// exits, for every role but the owner (the tables are not FORCE ROW LEVEL
// SECURITY). A reader sees only the rows of one scope: the one its session
// names (SET oasync.scope = 'org:42', or SET oasync.unscoped = on for the
// unscoped docs, scope ''), and only when that scope is bound to its role
// (GrantRoles::reader_scopes). No binding, or no scope named, means no rows.
// A session can narrow itself to one of its role's scopes, never widen.
// Writers and servers are trusted (oasync.trusted_roles): they see every row.
// Each call adds its roles; any number of readers (each bound to its own
// scopes), writers and servers can exist at once. The bindings and the
// trusted roles are readable by the owner only; the policies ask
// oasync.session_scope and oasync.session_trusted, SECURITY DEFINER functions
// that answer only for the session's own roles.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <pqxx/connection_base>

namespace oasync {

enum class ScopeSecurity { unchanged, on, off };

struct GrantRoles {
  std::string writer;
  std::string reader;
  // Empty: ownership is left as it is.
  std::string owner;
  // Empty: no server role is granted.
  std::string server;
  ScopeSecurity scope_security = ScopeSecurity::unchanged;
  // The scopes the reader role may read under scope security ("" is the
  // unscoped docs); nullopt leaves its bindings as they are.
  std::optional<std::vector<std::string>> reader_scopes;
};

// Grants (and revokes) exactly the privileges above, in one transaction.
// The roles must exist. Throws oasync::Error naming the role or statement.
void apply_grants(pqxx::connection_base& conn, const GrantRoles& roles);

}  // namespace oasync
