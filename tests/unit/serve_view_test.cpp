// The State Protocol messages a tenant's view receives for each kind of event.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "openagents/sync/v1/sync.pb.h"
#include "view.hpp"

using namespace oasync;
using namespace oasync::serve;
using json = nlohmann::json;

namespace {

Event event(Op op, std::int64_t version, std::string scope,
            std::optional<std::string> previous = std::nullopt,
            std::string payload = R"({"n":1})") {
  Event e;
  e.topic = "t.a";
  e.doc_key = "k:1";
  e.op = op;
  e.doc_version = version;
  e.scope = std::move(scope);
  e.previous_scope = std::move(previous);
  if (op == Op::upsert) e.payload = std::move(payload);
  return e;
}

std::string operation(const std::optional<std::string>& m) {
  REQUIRE(m.has_value());
  return json::parse(*m)["headers"]["operation"];
}

}  // namespace

TEST_CASE("a tenant's view: inserts, updates, deletes, moves in and out, and what it never sees") {
  const View org1{"org:1", false};
  CHECK(operation(message_for(event(Op::upsert, 1, "org:1"), org1)) == "insert");
  CHECK(operation(message_for(event(Op::upsert, 4, "org:1"), org1)) == "update");
  CHECK(operation(message_for(event(Op::delete_, 5, "org:1"), org1)) == "delete");
  // A move into the view is an insert; out of it, a delete with a null value.
  CHECK(operation(message_for(event(Op::upsert, 6, "org:1", "org:2"), org1)) == "insert");
  const auto out = message_for(event(Op::upsert, 7, "org:2", "org:1"), org1);
  CHECK(operation(out) == "delete");
  CHECK(json::parse(*out).at("value").is_null());
  // Another tenant's events, and the unscoped docs unless configured.
  CHECK_FALSE(message_for(event(Op::upsert, 1, "org:2"), org1).has_value());
  CHECK_FALSE(message_for(event(Op::delete_, 2, "org:2"), org1).has_value());
  CHECK_FALSE(message_for(event(Op::upsert, 1, ""), org1).has_value());
  // A payload withheld (a pointer doc that has left the scope since) skips.
  CHECK_FALSE(message_for(event(Op::upsert, 3, "org:1", std::nullopt, ""), org1).has_value());
}

TEST_CASE("a view with the unscoped docs: a move between its own scopes is an update") {
  const View both{"org:1", true};
  CHECK(operation(message_for(event(Op::upsert, 1, ""), both)) == "insert");
  CHECK(operation(message_for(event(Op::upsert, 3, "", "org:1"), both)) == "update");
  CHECK(operation(message_for(event(Op::upsert, 3, "org:1", ""), both)) == "update");
  CHECK(both.parts() == std::vector<std::string>{"org:1", ""});
  CHECK(View{"org:1", false}.parts() == std::vector<std::string>{"org:1"});
}

TEST_CASE("a move out of the unscoped docs is a move like any other") {
  // Into another tenant: the view that shows unscoped docs sees it go.
  const View both{"org:1", true};
  const auto gone = message_for(event(Op::upsert, 4, "org:2", ""), both);
  CHECK(operation(gone) == "delete");
  CHECK(json::parse(*gone).at("value").is_null());
  // Into this tenant, for a view without the unscoped docs: it arrives.
  CHECK(operation(message_for(event(Op::upsert, 4, "org:1", ""), View{"org:1", false})) ==
        "insert");
  // An upsert that moved nothing, in an unscoped doc: not a delete for anyone.
  CHECK_FALSE(message_for(event(Op::upsert, 4, "org:2"), both).has_value());
}

TEST_CASE("messages are State Protocol JSON, the payload verbatim") {
  const auto m =
      message_for(event(Op::upsert, 1, "org:1", std::nullopt, R"({"a":"é \"q\""})"), View{"org:1"});
  const json j = json::parse(*m);
  CHECK(j["type"] == "t.a");
  CHECK(j["key"] == "k:1");
  CHECK(j["value"] == json::parse(R"({"a":"é \"q\""})"));
  CHECK(j["headers"] == json::parse(R"({"operation":"insert"})"));
  ResumeCheck stale;
  stale.reason = StaleReason::retention_floor_breach;
  CHECK(json::parse(reset_message(View{"org:1"}, stale, "", 3)) ==
        json::parse(R"({"headers":{"control":"reset"}})"));
  CHECK(json_array({shared("1"), shared("{}")}) == "[1,{}]");
  CHECK(json_array({}) == "[]");
}

// The wire format, byte for byte: what the published schema
// (state-protocol.schema.json) allows by default, and the version only for a
// reader that asked for it (versions=true).
TEST_CASE("golden messages: each operation, with and without versions") {
  const View plain{"org:1"};
  const View versioned{"org:1", false, Headers::with_version};
  struct Case {
    Event event;
    const char* plain;
    const char* versioned;
  };
  const Case cases[] = {
      {event(Op::upsert, 1, "org:1"),
       R"({"type":"t.a","key":"k:1","value":{"n":1},"headers":{"operation":"insert"}})",
       R"({"type":"t.a","key":"k:1","value":{"n":1},"headers":{"operation":"insert","version":1}})"},
      {event(Op::upsert, 4, "org:1"),
       R"({"type":"t.a","key":"k:1","value":{"n":1},"headers":{"operation":"update"}})",
       R"({"type":"t.a","key":"k:1","value":{"n":1},"headers":{"operation":"update","version":4}})"},
      {event(Op::delete_, 5, "org:1"),
       R"({"type":"t.a","key":"k:1","value":null,"headers":{"operation":"delete"}})",
       R"({"type":"t.a","key":"k:1","value":null,"headers":{"operation":"delete","version":5}})"},
      {event(Op::upsert, 7, "org:2", "org:1"),
       R"({"type":"t.a","key":"k:1","value":null,"headers":{"operation":"delete"}})",
       R"({"type":"t.a","key":"k:1","value":null,"headers":{"operation":"delete","version":7}})"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.plain);
    CHECK(message_for(c.event, plain) == std::optional<std::string>(c.plain));
    CHECK(message_for(c.event, versioned) == std::optional<std::string>(c.versioned));
  }
  Doc doc;
  doc.topic = "t.a";
  doc.doc_key = "k:\"2\"";
  doc.doc_version = 3;
  doc.payload = R"({"s":[1,2]})";
  CHECK(snapshot_message(doc, plain) ==
        R"({"type":"t.a","key":"k:\"2\"","value":{"s":[1,2]},"headers":{"operation":"insert"}})");
  CHECK(
      snapshot_message(doc, versioned) ==
      R"({"type":"t.a","key":"k:\"2\"","value":{"s":[1,2]},"headers":{"operation":"insert","version":3}})");
  CHECK(control_message(Control::snapshot_start, plain, TopicPosition{}) ==
        R"({"headers":{"control":"snapshot-start"}})");
  CHECK(control_message(Control::snapshot_end, plain, TopicPosition{}) ==
        R"({"headers":{"control":"snapshot-end"}})");
}

namespace pb = openagents::sync::v1;

pb::ServerMessage decoded(const std::optional<std::string>& bytes) {
  REQUIRE(bytes.has_value());
  pb::ServerMessage m;
  REQUIRE(m.ParseFromString(*bytes));
  return m;
}

TEST_CASE("a buffered event is encoded once per form, and the readers of a form share the bytes") {
  const auto budget = std::make_shared<EncodingBudget>(1 << 20);
  const SharedEvent e(event(Op::upsert, 4, "org:1"), budget);
  View org1{"org:1"};
  View other_socket{"org:1"};  // another reader of the same tenant
  const auto a = e.message(org1);
  const auto b = e.message(other_socket);
  REQUIRE(a.has_value());
  REQUIRE(b.has_value());
  CHECK(*a == *b);  // the same bytes, not a copy
  CHECK(**a == *message_for(e, org1));
  // Another tenant's view with the unscoped docs and this scope's event: not seen.
  CHECK_FALSE(e.message(View{"org:2", true}).has_value());
  // Another form (versions asked for): its own bytes, shared in turn.
  View versions{"org:1"};
  versions.headers = Headers::with_version;
  const auto c = e.message(versions);
  REQUIRE(c.has_value());
  CHECK(*c != *a);
  CHECK(**c == *message_for(e, versions));
  CHECK(*e.message(versions) == *c);
  // Beyond kMaxForms (2) forms, a reader encodes for itself: right, not kept.
  View proto{"org:1"};
  proto.format = Format::sync_proto;
  const auto d = e.message(proto);
  const auto d2 = e.message(proto);
  REQUIRE(d.has_value());
  REQUIRE(d2.has_value());
  CHECK(**d == *message_for(e, proto));
  CHECK(**d2 == **d);
  CHECK(*d2 != *d);
  // A move out is its own form: a delete, shared by the readers of the scope left.
  const SharedEvent moved(event(Op::upsert, 5, "org:2", "org:1"), budget);
  CHECK(operation(**moved.message(org1)) == "delete");
  CHECK(*moved.message(org1) == *moved.message(other_socket));
  CHECK(operation(**moved.message(View{"org:2"})) == "insert");
}

TEST_CASE("the messages buffered events keep stay within their budget, and go with the events") {
  const auto budget = std::make_shared<EncodingBudget>(400);
  const View org1{"org:1"};
  const std::string payload = R"({"n":")" + std::string(100, 'x') + R"("})";
  {
    const SharedEvent a(event(Op::upsert, 4, "org:1", std::nullopt, payload), budget);
    const SharedEvent b(event(Op::upsert, 5, "org:1", std::nullopt, payload), budget);
    // a's message fits the 400 bytes (its size and kFormOverhead), b's then no longer.
    const auto a1 = a.message(org1);
    const std::int64_t cost = static_cast<std::int64_t>((*a1)->size()) + SharedEvent::kFormOverhead;
    REQUIRE(cost <= 400);
    REQUIRE(2 * cost > 400);
    CHECK(budget->used == cost);
    CHECK(*a.message(org1) == *a1);  // kept
    const auto b1 = b.message(org1);
    const auto b2 = b.message(org1);
    CHECK(**b1 == *message_for(b, org1));  // right, but encoded for each reader
    CHECK(*b1 != *b2);
    CHECK(budget->used == cost);
  }
  CHECK(budget->used == 0);  // the events went, and their messages' bytes with them
}

// The sync:v1 channel's encoding: the same rules, as sync.proto messages.
TEST_CASE("sync_proto: updates, deletes, moves out, withheld and oversized payloads") {
  View org1{"org:1"};
  org1.format = Format::sync_proto;
  Event e = event(Op::upsert, 4, "org:1");
  e.epoch = "e-1";
  e.watermark = 9;
  e.payload_hash = std::string(32, 'h');
  e.payload_fetched = true;  // a pointer topic's payload, filled in
  auto m = decoded(message_for(e, org1));
  REQUIRE(m.has_update());
  CHECK(m.update().topic() == "t.a");
  CHECK(m.update().doc_key() == "k:1");
  CHECK(m.update().doc_version() == 4);
  CHECK(m.update().watermark() == 9);
  CHECK(m.update().epoch() == "e-1");
  CHECK(m.update().scope() == "org:1");
  CHECK(m.update().op() == pb::OP_UPSERT);
  CHECK(m.update().payload() == R"({"n":1})");
  CHECK(m.update().payload_hash() == std::string(32, 'h'));
  CHECK_FALSE(m.update().fetch_required());

  // Out of the view: a delete in the scope it left, without payload.
  m = decoded(message_for(event(Op::upsert, 7, "org:2", "org:1"), org1));
  CHECK(m.update().op() == pb::OP_DELETE);
  CHECK(m.update().scope() == "org:1");
  CHECK(m.update().payload().empty());
  CHECK(m.update().payload_hash().empty());
  m = decoded(message_for(event(Op::delete_, 5, "org:1"), org1));
  CHECK(m.update().op() == pb::OP_DELETE);
  // Another tenant's event, and a withheld pointer payload: nothing.
  CHECK_FALSE(message_for(event(Op::upsert, 1, "org:2"), org1).has_value());
  CHECK_FALSE(message_for(event(Op::upsert, 2, "org:1", std::nullopt, ""), org1).has_value());

  // Larger than max_push_payload: sent without it, to be fetched.
  org1.max_push_payload = 6;
  m = decoded(message_for(event(Op::upsert, 3, "org:1", std::nullopt, R"({"n":12})"), org1));
  CHECK(m.update().payload().empty());
  CHECK(m.update().fetch_required());
  m = decoded(message_for(event(Op::upsert, 3, "org:1", std::nullopt, R"({"n")"), org1));
  CHECK(m.update().payload() == R"({"n")");
  CHECK_FALSE(m.update().fetch_required());
}

TEST_CASE("sync_proto: snapshot docs, its header and end, and the stale notice") {
  View v{"org:1"};
  v.format = Format::sync_proto;
  Doc doc;
  doc.topic = "t.a";
  doc.doc_key = "k:2";
  doc.scope = "org:1";
  doc.doc_version = 3;
  doc.payload = R"({"s":1})";
  doc.last_watermark = 11;
  auto m = decoded(snapshot_message(doc, v));
  REQUIRE(m.has_doc());
  CHECK(m.doc().doc_key() == "k:2");
  CHECK(m.doc().doc_version() == 3);
  CHECK(m.doc().last_watermark() == 11);
  CHECK(m.doc().payload() == R"({"s":1})");
  TopicPosition at;
  at.topic = "t.a";
  at.epoch = "e-2";
  at.head = 40;
  at.purged_through = 10;
  m = decoded(control_message(Control::snapshot_start, v, at));
  REQUIRE(m.has_snapshot_header());
  CHECK(m.snapshot_header().position().head() == 40);
  CHECK(m.snapshot_header().position().epoch() == "e-2");
  m = decoded(control_message(Control::snapshot_end, v, at));
  REQUIRE(m.has_snapshot_end());
  CHECK(m.snapshot_end().position().head() == 40);
  CHECK(m.snapshot_end().position().purged_through() == 10);
  ResumeCheck stale;
  stale.reason = StaleReason::retention_floor_breach;
  stale.position = at;
  m = decoded(reset_message(v, stale, "e-2", 7));
  REQUIRE(m.has_error());
  CHECK(m.error().code() == pb::ERROR_CODE_STALE_CURSOR);
  CHECK(m.error().stale().reason() == pb::STALE_REASON_RETENTION_FLOOR_BREACH);
  CHECK(m.error().stale().floor() == 10);
  CHECK(m.error().stale().head() == 40);
  CHECK(m.error().stale().epoch() == "e-2");
  CHECK(m.error().stale().cursor_watermark() == 7);
  CHECK(m.error().stale().cursor_epoch() == "e-2");
}
