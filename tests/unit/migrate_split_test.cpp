// split_sql: where statements start and end, so a failing one can be named.
#include <doctest/doctest.h>

#include "oasync/migrate.hpp"

TEST_CASE("split_sql honours comments, quotes and dollar quotes and records start lines") {
  const std::string sql =
      "-- header comment; not a statement\n"
      "CREATE TABLE a (x text DEFAULT ';');\n"
      "\n"
      "/* block; comment */ INSERT INTO a VALUES ('it''s; fine');\n"
      "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $body$\n"
      "BEGIN RETURN 1; END;\n"
      "$body$;\n"
      "SELECT \"odd;name\" FROM a; SELECT $$;$$\n";
  const auto statements = oasync::split_sql(sql);
  REQUIRE(statements.size() == 5);
  CHECK(statements[0].line == 2);
  CHECK(statements[0].text.find("CREATE TABLE a") != std::string::npos);
  CHECK(statements[1].line == 4);
  CHECK(statements[1].text.find("'it''s; fine'") != std::string::npos);
  CHECK(statements[2].line == 5);
  CHECK(statements[2].text.find("END;\n$body$") != std::string::npos);
  CHECK(statements[3].line == 8);
  CHECK(statements[4].line == 8);
  CHECK(statements[4].text.find("$$;$$") != std::string::npos);
}

TEST_CASE("split_sql of only comments and blanks is empty") {
  CHECK(oasync::split_sql("-- nothing\n\n/* here */\n").empty());
}

TEST_CASE("split_sql keeps a BEGIN ATOMIC body, CASE ... END included, in one statement") {
  const std::string sql =
      "CREATE FUNCTION f(x int) RETURNS int LANGUAGE sql\n"
      "BEGIN ATOMIC\n"
      "  SELECT CASE WHEN x > 0 THEN 1 ELSE case when x < 0 then -1 end END;\n"
      "  SELECT x_end FROM t WHERE \"end\" = 'END;';\n"
      "END;\n"
      "SELECT 'after';\n"
      "CREATE TABLE begin_atomic_like (atomic int);\n";
  const auto statements = oasync::split_sql(sql);
  REQUIRE(statements.size() == 3);
  CHECK(statements[0].line == 1);
  CHECK(statements[0].text.find("x_end FROM t") != std::string::npos);
  CHECK(statements[0].text.substr(statements[0].text.size() - 5) == "\nEND;");
  CHECK(statements[1].line == 6);
  CHECK(statements[1].text.find("'after'") != std::string::npos);
  CHECK(statements[2].line == 7);
}
