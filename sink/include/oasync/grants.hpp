// Least privilege: the roles that use oasync, and exactly what each may do.
//
//   owner   owns the schema, its tables and functions; runs migrations.
//   writer  runs the sink: reads the registry, writes docs, events, heads and
//           producer checkpoints. It cannot drop, truncate, purge (delete
//           events) or move purged_through, epochs or the registry.
//   reader  reads topics, docs and events (directly or through the read
//           functions) and records its consumer position; it writes nothing else.
//
// Scope security (optional): row-level security on docs and events so that a
// reader sees only the rows whose scope equals its session setting
// `oasync.scope` (SET oasync.scope = 'org:42'). A reader that set none sees
// nothing: it fails closed. The writer and the owner are not restricted.
#pragma once

#include <string>

#include <pqxx/connection_base>

namespace oasync {

enum class ScopeSecurity { unchanged, on, off };

struct GrantRoles {
  std::string writer;
  std::string reader;
  // Empty: ownership is left as it is.
  std::string owner;
  ScopeSecurity scope_security = ScopeSecurity::unchanged;
};

// Grants (and revokes) exactly the privileges above, in one transaction.
// The roles must exist. Throws oasync::Error naming the role or statement.
void apply_grants(pqxx::connection_base& conn, const GrantRoles& roles);

}  // namespace oasync
