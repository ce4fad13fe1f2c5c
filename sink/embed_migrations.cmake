# Writes OUTPUT: a C++ source defining oasync::bundled_migrations() from the
# migrations/NNNN_name.sql files in MIGRATIONS_DIR. Run by the build.
file(GLOB files RELATIVE ${MIGRATIONS_DIR} ${MIGRATIONS_DIR}/*.sql)
list(SORT files)
set(body "")
foreach(name IN LISTS files)
  if(NOT name MATCHES "^([0-9][0-9][0-9][0-9])_[a-z0-9_]+\\.sql$")
    message(FATAL_ERROR "migrations/${name}: migration files are named NNNN_name.sql")
  endif()
  math(EXPR version "${CMAKE_MATCH_1}")
  file(READ ${MIGRATIONS_DIR}/${name} sql)
  file(SHA256 ${MIGRATIONS_DIR}/${name} sha)
  string(FIND "${sql}" ")oasync_sql\"" clash)
  if(NOT clash EQUAL -1)
    message(FATAL_ERROR "migrations/${name} contains the raw-string delimiter )oasync_sql\"")
  endif()
  string(APPEND body "      {${version}, \"${name}\", R\"oasync_sql(${sql})oasync_sql\", \"${sha}\"},\n")
endforeach()
file(WRITE ${OUTPUT}.tmp "// Generated from migrations/*.sql by sink/embed_migrations.cmake. Do not edit.
#include \"oasync/migrate.hpp\"

namespace oasync {

std::vector<Migration> bundled_migrations() {
  return {
${body}  };
}

}  // namespace oasync
")
file(COPY_FILE ${OUTPUT}.tmp ${OUTPUT} ONLY_IF_DIFFERENT)
