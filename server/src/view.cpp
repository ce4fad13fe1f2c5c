#include "view.hpp"

#include <nlohmann/json.hpp>

#include "oasync/serve/messages.hpp"

namespace oasync::serve {
namespace {

namespace pb = openagents::sync::v1;

std::string serialized(const pb::ServerMessage& m) {
  std::string out;
  m.SerializeToString(&out);
  return out;
}

// The Update of a change `event` makes to `view`: `exit_from` set for the
// view's scope a doc left (an OP_DELETE of it there).
std::string update(const Event& event, const View& view, const std::string* exit_from) {
  pb::ServerMessage m;
  pb::Update* u = m.mutable_update();
  messages::to_proto(event, u);
  // The channel fills pointer payloads in: nothing to fetch, unless withheld.
  u->set_fetch_required(false);
  if (exit_from != nullptr) {
    u->set_op(pb::OP_DELETE);
    u->set_scope(*exit_from);
    u->clear_payload();
    u->clear_payload_hash();
  } else if (view.max_push_payload > 0 &&
             static_cast<std::int64_t>(event.payload.size()) > view.max_push_payload) {
    u->clear_payload();
    u->set_fetch_required(true);
  }
  return serialized(m);
}

// Appends `s` as a JSON string: plain text as is, anything else through the
// JSON library.
void append_quoted(std::string& out, std::string_view s) {
  for (const unsigned char c : s) {
    if (c < 0x20 || c == '"' || c == '\\' || c >= 0x80) {
      out += nlohmann::json(std::string(s))
                 .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      return;
    }
  }
  out += '"';
  out += s;
  out += '"';
}

// A change message; `payload` is null for a delete, whose value is null (the
// schema requires a value for inserts and updates only, but a value on every
// change keeps the messages one shape).
std::string change(std::string_view topic, std::string_view key, std::string_view operation,
                   std::int64_t version, const std::string* payload, Headers headers) {
  std::string out;
  out.reserve(96 + topic.size() + key.size() + (payload ? payload->size() : 0));
  out += R"({"type":)";
  append_quoted(out, topic);
  out += R"(,"key":)";
  append_quoted(out, key);
  out += R"(,"value":)";
  out += payload != nullptr ? std::string_view(*payload) : std::string_view("null");
  out += R"(,"headers":{"operation":")";
  out += operation;
  out += '"';
  if (headers == Headers::with_version) {
    out += R"(,"version":)";
    out += std::to_string(version);
  }
  out += "}}";
  return out;
}

}  // namespace

std::vector<std::string> View::parts() const {
  std::vector<std::string> out{scope};
  if (unscoped && !scope.empty()) out.emplace_back();
  return out;
}

namespace {

// How an event changes a view: all that its message depends on beside the
// view's encoding (Form). nullopt: the view does not see it.
enum class Relation { inserted, updated, left, deleted };
std::optional<Relation> relation(const Event& e, const View& view) {
  const bool in = view.contains(e.scope);
  if (e.op == Op::upsert) {
    if (in) {
      if (e.payload.empty()) return std::nullopt;
      const bool entered = e.previous_scope && !view.contains(*e.previous_scope);
      return e.doc_version == 1 || entered ? Relation::inserted : Relation::updated;
    }
    if (e.previous_scope && view.contains(*e.previous_scope)) return Relation::left;
    return std::nullopt;
  }
  return in ? std::optional<Relation>(Relation::deleted) : std::nullopt;
}

std::string encode(const Event& e, const View& view, Relation r) {
  if (view.format == Format::sync_proto) {
    return update(e, view, r == Relation::left ? &*e.previous_scope : nullptr);
  }
  switch (r) {
    case Relation::inserted:
      return change(e.topic, e.doc_key, "insert", e.doc_version, &e.payload, view.headers);
    case Relation::updated:
      return change(e.topic, e.doc_key, "update", e.doc_version, &e.payload, view.headers);
    case Relation::left:
    case Relation::deleted:
      break;
  }
  return change(e.topic, e.doc_key, "delete", e.doc_version, nullptr, view.headers);
}

}  // namespace

std::optional<std::string> message_for(const Event& e, const View& view) {
  const auto r = relation(e, view);
  if (!r) return std::nullopt;
  return encode(e, view, *r);
}

Message shared(std::string bytes) {
  return std::make_shared<const std::string>(std::move(bytes));
}

SharedEvent::SharedEvent(Event event, std::shared_ptr<EncodingBudget> budget)
    : Event(std::move(event)), budget_(std::move(budget)) {}

SharedEvent::~SharedEvent() {
  budget_->used -= kept_bytes_;
}

std::optional<Message> SharedEvent::message(const View& view) const {
  const auto r = relation(*this, view);
  if (!r) return std::nullopt;
  // What the bytes depend on: JSON has the headers, and an insert apart from
  // an update; protobuf the payload limit, and a move out apart from a delete.
  const bool proto = view.format == Format::sync_proto;
  Form form{view.format, Headers::operation_only, 0, static_cast<int>(*r)};
  if (proto) {
    form.max_push_payload = view.max_push_payload;
    if (*r == Relation::inserted) form.change = static_cast<int>(Relation::updated);
  } else {
    form.headers = view.headers;
    if (*r == Relation::left) form.change = static_cast<int>(Relation::deleted);
  }
  const auto kept = [&]() -> std::optional<Message> {
    for (const auto& [f, m] : forms_) {
      if (f == form) return m;
    }
    return std::nullopt;
  };
  {
    std::lock_guard lock(mutex_);
    if (auto m = kept()) return m;
  }
  Message m = shared(encode(*this, view, *r));
  std::lock_guard lock(mutex_);
  if (auto other = kept()) return other;  // encoded meanwhile by another reader
  const std::int64_t cost = static_cast<std::int64_t>(m->size()) + kFormOverhead;
  if (forms_.size() < kMaxForms && budget_->used.fetch_add(cost) + cost <= budget_->limit) {
    forms_.emplace_back(form, m);
    kept_bytes_ += cost;
  } else if (forms_.size() < kMaxForms) {
    budget_->used -= cost;
  }
  return m;
}

std::string snapshot_message(const Doc& doc, const View& view) {
  if (view.format == Format::sync_proto) {
    pb::ServerMessage m;
    messages::to_proto(doc, m.mutable_doc());
    return serialized(m);
  }
  return change(doc.topic, doc.doc_key, "insert", doc.doc_version, &doc.payload, view.headers);
}

namespace {
std::string json_control(std::string_view control) {
  std::string out = R"({"headers":{"control":")";
  out += control;
  out += R"("}})";
  return out;
}
}  // namespace

std::string control_message(Control control, const View& view, const TopicPosition& snapshot) {
  if (view.format == Format::sync_proto) {
    pb::ServerMessage m;
    messages::to_proto(snapshot, control == Control::snapshot_start
                                     ? m.mutable_snapshot_header()->mutable_position()
                                     : m.mutable_snapshot_end()->mutable_position());
    return serialized(m);
  }
  return json_control(control == Control::snapshot_start ? "snapshot-start" : "snapshot-end");
}

std::string reset_message(const View& view, const ResumeCheck& stale,
                          const std::string& cursor_epoch, std::int64_t cursor_watermark) {
  if (view.format == Format::sync_proto) {
    pb::ServerMessage m;
    messages::to_proto(stale, cursor_epoch, cursor_watermark, m.mutable_error());
    return serialized(m);
  }
  return json_control("reset");
}

std::string json_array(const std::vector<Message>& messages) {
  std::size_t size = 2;
  for (const auto& m : messages) size += m->size() + 1;
  std::string out;
  out.reserve(size);
  out += '[';
  for (std::size_t i = 0; i < messages.size(); ++i) {
    if (i > 0) out += ',';
    out += *messages[i];
  }
  out += ']';
  return out;
}

}  // namespace oasync::serve
