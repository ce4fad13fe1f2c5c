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
