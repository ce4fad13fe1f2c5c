// oasync serve's offsets: they round-trip, sort as the stream goes (across
// epochs, and from a snapshot into the journal), and nothing else decodes.
#include <doctest/doctest.h>

#include <algorithm>
#include <vector>

#include "offset.hpp"

using namespace oasync::serve;

namespace {

Offset journal(std::int64_t epoch, std::int64_t w) {
  Offset o;
  o.epoch_counter = epoch;
  o.watermark = w;
  return o;
}

Offset snapshot(std::int64_t epoch, std::int64_t head, std::int64_t page, int part,
                std::string key) {
  Offset o;
  o.kind = Offset::Kind::snapshot;
  o.epoch_counter = epoch;
  o.watermark = head;
  o.page = page;
  o.part = part;
  o.after_key = std::move(key);
  return o;
}

}  // namespace

TEST_CASE("offsets round-trip, keys of any text included") {
  for (const Offset& o : {journal(1, 0), journal(7, 42), journal(9999999999999999, INT64_MAX),
                          snapshot(3, 10, 1, 0, "run_summary:a"), snapshot(3, 10, 2, 1, ""),
                          snapshot(3, 10, 5, 0, "k/&=?,\"\xc3\xa9 \xf0\x9f\x99\x82")}) {
    const std::string text = encode(o);
    CAPTURE(text);
    CHECK(text.find_first_of(",&=?/") == std::string::npos);
    const auto back = decode(text);
    REQUIRE(back.has_value());
    CHECK(back->kind == o.kind);
    CHECK(back->epoch_counter == o.epoch_counter);
    CHECK(back->watermark == o.watermark);
    CHECK(back->page == o.page);
    CHECK(back->part == o.part);
    CHECK(back->after_key == o.after_key);
  }
  CHECK(encode(journal(4, 3)) == "0000000000000004_00000000000000000003_j");
  CHECK(encode(snapshot(4, 3, 1, 0, "ab")) ==
        "0000000000000004_00000000000000000003_i000000010_6162");
}

TEST_CASE("offsets sort in stream order: journal, snapshot pages, the hand-over, a new epoch") {
  // A stream read from -1 at head 10, then on; then the epoch changes.
  const std::vector<std::string> in_order = {
      encode(journal(4, 9)),                   // (a client before the snapshot's head)
      encode(snapshot(4, 10, 1, 0, "run:z")),  // pages of the snapshot at head 10
      encode(snapshot(4, 10, 2, 0, "run:a")),  // keys need not sort: pages do
      encode(snapshot(4, 10, 3, 1, "")),       // the unscoped part
      encode(journal(4, 10)),                  // the hand-over to the journal
      encode(journal(4, 11)),
      encode(journal(4, 100000)),
      encode(journal(5, 0)),  // a new epoch sorts after all of the old
  };
  CHECK(std::is_sorted(in_order.begin(), in_order.end()));
  CHECK(std::adjacent_find(in_order.begin(), in_order.end()) == in_order.end());
}

TEST_CASE("text this server never issued does not decode") {
  for (const char* text :
       {"", "-1", "now", "0", "0000000000000004_00000000000000000003",
        "0000000000000004_00000000000000000003_x", "000000000000004_00000000000000000003_j",
        "0000000000000004_0000000000000000003_j", "0000000000000004_00000000000000000003_j ",
        "000000000000000a_00000000000000000003_j", "0000000000000004_99999999999999999999_j",
        "0000000000000004_00000000000000000003_i000000012_",
        "0000000000000004_00000000000000000003_i00000001_",
        "0000000000000004_00000000000000000003_i000000010_abc",
        "0000000000000004_00000000000000000003_i000000010_zz",
        "0000000000000004_00000000000000000003_i000000010_AB",
        // Keys no doc can have: a NUL, bytes that are not UTF-8.
        "0000000000000004_00000000000000000003_i000000010_6b00",
        "0000000000000004_00000000000000000003_i000000010_6bff",
        "0000000000000004_00000000000000000003_i000000010_c328"}) {
    CAPTURE(text);
    CHECK_FALSE(decode(text).has_value());
  }
}
