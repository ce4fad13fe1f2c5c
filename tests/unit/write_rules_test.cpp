// The sink's decisions (sink/src/write_rules.hpp) without a database:
// validation, fencing, resolution and numbering, table by table.
#include <doctest/doctest.h>

#include <variant>

#include "oasync/canonical_json.hpp"
#include "oasync/error.hpp"
#include "write_rules.hpp"

using namespace oasync;
using namespace oasync::internal;

namespace {

const Registry kRegistry = {
    {"runs", TopicInfo{"run:", PayloadMode::inline_payload, 20, 1}},
    {"workers", TopicInfo{"worker:", PayloadMode::pointer, 1000, 1}},
};

DocWrite write(std::string key, std::string payload = R"({"a":1})") {
  DocWrite w;
  w.topic = "runs";
  w.doc_key = std::move(key);
  w.payload = std::move(payload);
  return w;
}

// The raw SHA-256 of a payload's canonical form, as the rules keep it.
std::string hash_of(const std::string& payload) {
  const auto digest = canonicalize(payload).sha256;
  return std::string(reinterpret_cast<const char*>(digest.data()), digest.size());
}

ValidWrite valid(const DocWrite& w) {
  auto checked = validate_write(w, kRegistry);
  REQUIRE_MESSAGE(std::holds_alternative<ValidWrite>(checked),
                  std::get<WriteResult>(checked).detail);
  return std::get<ValidWrite>(std::move(checked));
}

DocState live(const std::string& payload, std::int64_t version, std::string scope = "") {
  DocState st;
  st.version = version;
  st.hash = hash_of(payload);
  st.scope = std::move(scope);
  return st;
}

DocState with_seq(DocState st, std::string stream, std::int64_t seq) {
  st.source_stream = std::move(stream);
  st.source_seq = seq;
  return st;
}

DocState tombstone(std::int64_t version) {
  DocState st;
  st.version = version;
  st.deleted = true;
  return st;
}

}  // namespace

TEST_CASE("validation: each limit at its boundary, each rejection with its reason") {
  struct Case {
    const char* name;
    DocWrite w;
    RejectReason reason;  // none: valid
  };
  const auto with = [](DocWrite w, auto change) {
    change(w);
    return w;
  };
  const std::vector<Case> cases = {
      {"plain upsert", write("run:1"), RejectReason::none},
      {"empty topic", with(write("run:1"), [](DocWrite& w) { w.topic.clear(); }),
       RejectReason::invalid_topic},
      {"topic of 129 bytes", with(write("run:1"), [](DocWrite& w) { w.topic.assign(129, 't'); }),
       RejectReason::invalid_topic},
      {"topic with NUL",
       with(write("run:1"), [](DocWrite& w) { w.topic = std::string("ru\0ns", 5); }),
       RejectReason::invalid_topic},
      {"unregistered topic", with(write("run:1"), [](DocWrite& w) { w.topic = "nope"; }),
       RejectReason::topic_not_registered},
      {"empty key", write(""), RejectReason::invalid_key},
      {"key of 512 bytes", write("run:" + std::string(508, 'k')), RejectReason::none},
      {"key of 513 bytes", write("run:" + std::string(509, 'k')), RejectReason::invalid_key},
      {"key with NUL", write(std::string("run:\0", 5)), RejectReason::invalid_key},
      {"key that is only the prefix", write("run:"), RejectReason::key_prefix_mismatch},
      {"key of invalid UTF-8", write("run:\xff\xfe"), RejectReason::invalid_key},
      {"key cut inside a UTF-8 sequence", write("run:\xc3"), RejectReason::invalid_key},
      {"key of UTF-8 beyond ASCII", write("run:caf\xc3\xa9"), RejectReason::none},
      {"scope of invalid UTF-8",
       with(write("run:1"), [](DocWrite& w) { w.scope = "org:\xed\xa0\x80"; }),
       RejectReason::invalid_scope},
      {"key of another prefix", write("worker:1"), RejectReason::key_prefix_mismatch},
      {"scope of 128 bytes", with(write("run:1"), [](DocWrite& w) { w.scope.assign(128, 's'); }),
       RejectReason::none},
      {"scope of 129 bytes", with(write("run:1"), [](DocWrite& w) { w.scope.assign(129, 's'); }),
       RejectReason::invalid_scope},
      {"source_stream of 513 bytes",
       with(write("run:1"), [](DocWrite& w) { w.source_stream.assign(513, 'x'); }),
       RejectReason::invalid_write},
      {"negative source_seq", with(write("run:1"), [](DocWrite& w) { w.source_seq = -1; }),
       RejectReason::invalid_write},
      {"negative expected_version",
       with(write("run:1"), [](DocWrite& w) { w.expected_version = -1; }),
       RejectReason::invalid_write},
      {"payload that is an array", write("run:1", "[1]"), RejectReason::payload_not_object},
      {"payload that is not JSON", write("run:1", "{"), RejectReason::payload_not_object},
      {"missing payload", write("run:1", ""), RejectReason::payload_not_object},
      // The limit (20 bytes) applies to the canonical form.
      {"canonical payload of exactly the limit", write("run:1", R"({ "a" : "0123456789ab" })"),
       RejectReason::none},
      {"canonical payload one byte over", write("run:1", R"({"a":"0123456789abc"})"),
       RejectReason::payload_too_large},
      {"delete needs no payload", with(write("run:1", ""), [](DocWrite& w) { w.op = Op::delete_; }),
       RejectReason::none},
  };
  for (const Case& c : cases) {
    INFO(c.name);
    const auto checked = validate_write(c.w, kRegistry);
    if (c.reason == RejectReason::none) {
      REQUIRE(std::holds_alternative<ValidWrite>(checked));
    } else {
      REQUIRE(std::holds_alternative<WriteResult>(checked));
      const WriteResult& r = std::get<WriteResult>(checked);
      CHECK(r.outcome == Outcome::rejected);
      CHECK(r.reason == c.reason);
      CHECK_FALSE(r.detail.empty());
    }
  }
}

TEST_CASE("validation: a valid upsert carries its canonical payload and hash") {
  const ValidWrite v = valid(write("run:1", R"({ "b": 2, "a": 1 })"));
  CHECK(v.canonical == R"({"a":1,"b":2})");
  CHECK(v.hash == hash_of(R"({"a":1,"b":2})"));
  const auto too_large = validate_write(write("run:1", R"({"a":"0123456789abc"})"), kRegistry);
  CHECK(std::get<WriteResult>(too_large).detail ==
        "payload of doc \"run:1\" is 21 bytes, topic \"runs\" allows 20");
}

TEST_CASE("fencing: the last checkpoint of a producer wins, a lower epoch after it is fenced") {
  const auto batch = [](std::string id, std::int64_t epoch, std::int64_t position) {
    Batch b;
    b.checkpoint = ProducerCheckpoint{std::move(id), epoch, position};
    return b;
  };
  const Batch a1 = batch("p", 1, 10), a2 = batch("p", 2, 20), a2b = batch("p", 2, 30),
              q = batch("q", 0, 5), low = batch("p", 1, 40), none;
  const auto stored = collect_checkpoints({&a1, &none, &q, &a2, &a2b});
  REQUIRE(stored.size() == 2);
  CHECK(stored.at("p").epoch == 2);
  CHECK(stored.at("p").position == 30);
  CHECK(stored.at("q").position == 5);
  try {
    collect_checkpoints({&a2, &low});
    FAIL("a lower epoch after a higher one must be fenced");
  } catch (const Error& e) {
    CHECK(e.code() == Code::fenced);
    CHECK(std::string(e.what()) == "producer \"p\" is fenced: epoch 1 is below epoch 2");
  }
  for (const Batch& bad : {batch("", 1, 1), batch("p", -1, 1), batch("p", 1, -1)}) {
    CHECK_THROWS_AS(collect_checkpoints({&bad}), Error);
  }
}

TEST_CASE("resolution: one write against one stored state, every outcome and boundary") {
  struct Case {
    const char* name;
    std::optional<DocState> stored;  // nullopt: the doc does not exist (a placeholder)
    DocWrite w;
    Outcome outcome;
    std::int64_t version;  // the result's doc_version
  };
  const auto seq = [](DocWrite w, std::string stream, std::int64_t n) {
    w.source_stream = std::move(stream);
    w.source_seq = n;
    return w;
  };
  const auto expect = [](DocWrite w, std::int64_t v) {
    w.expected_version = v;
    return w;
  };
  const auto scoped = [](DocWrite w, std::string scope) {
    w.scope = std::move(scope);
    return w;
  };
  const auto del = [](DocWrite w) {
    w.op = Op::delete_;
    w.payload.clear();
    return w;
  };
  const std::string a = R"({"a":1})";
  const std::vector<Case> cases = {
      {"a new doc", std::nullopt, write("run:1"), Outcome::applied, 1},
      {"a changed payload", live(R"({"a":0})", 3), write("run:1"), Outcome::applied, 4},
      {"the same canonical payload", live(a, 3), write("run:1", R"({ "a" : 1 })"),
       Outcome::unchanged, 3},
      {"the same payload in another scope", live(a, 3), scoped(write("run:1"), "org:1"),
       Outcome::applied, 4},
      {"a tombstone brought back", tombstone(4), write("run:1"), Outcome::applied, 5},
      {"a delete of a live doc", live(a, 2), del(write("run:1")), Outcome::applied, 3},
      {"a delete of a tombstone", tombstone(3), del(write("run:1")), Outcome::unchanged, 3},
      {"a delete of a doc that does not exist", std::nullopt, del(write("run:1")),
       Outcome::unchanged, 0},
      {"seq below the stored one", with_seq(live(R"({"a":0})", 2), "s", 5),
       seq(write("run:1"), "s", 4), Outcome::duplicate, 2},
      {"seq equal to the stored one", with_seq(live(R"({"a":0})", 2), "s", 5),
       seq(write("run:1"), "s", 5), Outcome::duplicate, 2},
      {"seq just above the stored one", with_seq(live(R"({"a":0})", 2), "s", 5),
       seq(write("run:1"), "s", 6), Outcome::applied, 3},
      {"seq of another stream", with_seq(live(R"({"a":0})", 2), "s", 5),
       seq(write("run:1"), "t", 1), Outcome::applied, 3},
      {"no seq on the write", with_seq(live(R"({"a":0})", 2), "s", 5), write("run:1"),
       Outcome::applied, 3},
      {"no seq stored", live(R"({"a":0})", 2), seq(write("run:1"), "s", 0), Outcome::applied, 3},
      {"expected 0 on a new doc", std::nullopt, expect(write("run:1"), 0), Outcome::applied, 1},
      {"expected 0 on an existing doc", live(R"({"a":0})", 3), expect(write("run:1"), 0),
       Outcome::conflict, 3},
      {"expected the current version", live(R"({"a":0})", 3), expect(write("run:1"), 3),
       Outcome::applied, 4},
      {"expected one below", live(R"({"a":0})", 3), expect(write("run:1"), 2), Outcome::conflict,
       3},
      {"expected one above", live(R"({"a":0})", 3), expect(write("run:1"), 4), Outcome::conflict,
       3},
      {"expected on a tombstone's version", tombstone(3), expect(write("run:1"), 3),
       Outcome::applied, 4},
      {"duplicate is decided before conflict", with_seq(live(a, 3), "s", 5),
       expect(seq(write("run:1"), "s", 5), 1), Outcome::duplicate, 3},
      {"conflict is decided before unchanged", live(a, 3), expect(write("run:1"), 1),
       Outcome::conflict, 3},
  };
  for (const Case& c : cases) {
    INFO(c.name);
    const DocKey key{"runs", "run:1"};
    DocState placeholder;
    placeholder.placeholder = true;
    const Resolution r = resolve({{key, c.stored.value_or(placeholder)}}, {valid(c.w)});
    REQUIRE(r.results.size() == 1);
    CHECK(r.results[0].outcome == c.outcome);
    CHECK(r.results[0].doc_version == c.version);
    CHECK(r.results[0].watermark == 0);
    if (c.outcome == Outcome::applied) {
      REQUIRE(r.events.size() == 1);
      CHECK(r.events[0].version == c.version);
      CHECK(r.events[0].op == c.w.op);
      CHECK(r.events[0].scope == c.w.scope);
      REQUIRE(r.docs.size() == 1);
      CHECK(r.docs[0].state.version == c.version);
      CHECK(r.docs[0].state.deleted == (c.w.op == Op::delete_));
      CHECK(r.unused_placeholders.empty());
    } else {
      CHECK(r.events.empty());
      CHECK(r.docs.empty());
      // A doc that did not exist keeps only its placeholder, which goes again.
      CHECK(r.unused_placeholders.size() == (c.stored ? 0u : 1u));
      CHECK_FALSE((c.outcome == Outcome::unchanged) != r.results[0].detail.empty());
    }
  }
}

TEST_CASE("resolution: several writes to one doc in a batch see each other, in order") {
  DocWrite first = write("run:1", R"({"v":1})");
  first.source_stream = "s";
  first.source_seq = 1;
  DocWrite again = first;  // the same seq again: a duplicate of the write before it
  DocWrite second = write("run:1", R"({"v":2})");
  second.source_stream = "s";
  second.source_seq = 2;
  second.expected_version = 1;
  DocWrite same = write("run:1", R"({"v":2})");  // equal to what second wrote
  DocWrite gone = write("run:1", "");
  gone.op = Op::delete_;
  DocWrite other = write("run:2", R"({"o":1})");
  const Resolution r =
      resolve({{{"runs", "run:1"}, DocState{}}, {{"runs", "run:2"}, live(R"({"o":1})", 7)}},
              {valid(first), valid(again), valid(second), valid(same), valid(gone), valid(other)});
  const std::vector<std::pair<Outcome, std::int64_t>> expected = {
      {Outcome::applied, 1},   {Outcome::duplicate, 1}, {Outcome::applied, 2},
      {Outcome::unchanged, 2}, {Outcome::applied, 3},   {Outcome::unchanged, 7}};
  REQUIRE(r.results.size() == expected.size());
  for (std::size_t i = 0; i < expected.size(); ++i) {
    CAPTURE(i);
    CHECK(r.results[i].outcome == expected[i].first);
    CHECK(r.results[i].doc_version == expected[i].second);
  }
  REQUIRE(r.events.size() == 3);
  CHECK(r.events[0].write == 0);
  CHECK(r.events[0].payload == R"({"v":1})");
  CHECK(r.events[1].write == 2);
  CHECK(r.events[1].payload == R"({"v":2})");
  CHECK(r.events[2].write == 4);
  CHECK(r.events[2].op == Op::delete_);
  CHECK(r.events[2].payload.empty());
  REQUIRE(r.docs.size() == 1);
  CHECK(r.docs[0].key == DocKey{"runs", "run:1"});
  CHECK(r.docs[0].last_event == 2);
  CHECK(r.docs[0].state.version == 3);
  CHECK(r.docs[0].state.deleted);
  CHECK(r.docs[0].state.hash.empty());
  CHECK(r.docs[0].state.source_seq == 2);  // the delete carried no seq
  CHECK(r.unused_placeholders.empty());
}

TEST_CASE("numbering: each topic's events get 1, 2, ... and then their head plus that") {
  DocWrite w1 = write("run:1");
  DocWrite w2 = write("worker:1");
  w2.topic = "workers";
  DocWrite w3 = write("run:2", R"({"a":2})");
  DocWrite w4 = write("run:3", "");
  w4.op = Op::delete_;
  DocState tomb = tombstone(2);
  Resolution r = resolve({{{"runs", "run:1"}, DocState{}},
                          {{"runs", "run:2"}, live(R"({"a":1})", 1)},
                          {{"runs", "run:3"}, live(R"({"a":1})", 4)},
                          {{"workers", "worker:1"}, tomb}},
                         {valid(w1), valid(w2), valid(w3), valid(w4)});
  const auto changes = number_events(r);
  REQUIRE(changes.size() == 2);
  // runs: a new doc (+1 live), a changed one (0), a deleted one (-1 live, +1 tombstone).
  CHECK(changes.at("runs").events == 3);
  CHECK(changes.at("runs").live_docs == 0);
  CHECK(changes.at("runs").tombstones == 1);
  // workers: a tombstone brought back.
  CHECK(changes.at("workers").events == 1);
  CHECK(changes.at("workers").live_docs == 1);
  CHECK(changes.at("workers").tombstones == -1);
  CHECK(r.events[0].sequence == 1);
  CHECK(r.events[1].sequence == 1);
  CHECK(r.events[2].sequence == 2);
  CHECK(r.events[3].sequence == 3);
  place_events(r, {{"runs", 41}, {"workers", 0}});
  CHECK(r.events[0].watermark == 42);
  CHECK(r.events[1].watermark == 1);
  CHECK(r.events[2].watermark == 43);
  CHECK(r.events[3].watermark == 44);
  CHECK(r.results[0].watermark == 42);
  CHECK(r.results[1].watermark == 1);
  CHECK(r.results[3].watermark == 44);
}

TEST_CASE("unchanged: the rule reproject shares with the sink") {
  const std::string h = hash_of(R"({"a":1})");
  CHECK(unchanged(live(R"({"a":1})", 1, "org:1"), Op::upsert, h, "org:1"));
  CHECK_FALSE(unchanged(live(R"({"a":1})", 1, "org:1"), Op::upsert, h, "org:2"));
  CHECK_FALSE(unchanged(live(R"({"a":2})", 1), Op::upsert, h, ""));
  CHECK_FALSE(unchanged(tombstone(2), Op::upsert, "", ""));
  CHECK_FALSE(unchanged(DocState{}, Op::upsert, h, ""));
  CHECK(unchanged(tombstone(2), Op::delete_, "", ""));
  CHECK(unchanged(DocState{}, Op::delete_, "", ""));
  CHECK_FALSE(unchanged(live(R"({"a":1})", 1), Op::delete_, "", ""));
}
