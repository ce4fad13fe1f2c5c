#include "follower_check.hpp"

#include <fstream>
#include <optional>
#include <vector>

#include <fmt/format.h>

namespace oasync::test::delivery {

using json = nlohmann::json;

namespace {

// A journal offset (server/src/offset.hpp): epoch counter and watermark;
// nullopt for snapshot offsets and "-1".
struct JournalOffset {
  std::int64_t epoch = 0;
  std::int64_t watermark = 0;
};
std::optional<JournalOffset> journal_offset(const std::string& o) {
  if (o.size() != 16 + 1 + 20 + 2 || o[16] != '_' || o[37] != '_' || o[38] != 'j') {
    return std::nullopt;
  }
  try {
    return JournalOffset{std::stoll(o.substr(0, 16)), std::stoll(o.substr(17, 20))};
  } catch (const std::exception&) {
    return std::nullopt;
  }
}
// A snapshot offset's head.
std::optional<std::int64_t> snapshot_head(const std::string& o) {
  if (o.size() < 40 || o[16] != '_' || o[37] != '_' || o[38] != 'i') return std::nullopt;
  try {
    return std::stoll(o.substr(17, 20));
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// One change message as a follower recorded it.
struct Message {
  std::string key, op;
  std::optional<std::int64_t> version;
  std::optional<std::string> sc;
  std::string control;  // set for a control message
};

Message parse_message(const json& m) {
  Message out;
  if (m.size() == 1) {
    out.control = m[0].get<std::string>().substr(1);
    return out;
  }
  out.key = m[0].is_string() ? m[0].get<std::string>() : "";
  out.op = m[1].is_string() ? m[1].get<std::string>() : "";
  if (m[2].is_number_integer()) out.version = m[2].get<std::int64_t>();
  if (m[3].is_string()) out.sc = m[3].get<std::string>();
  return out;
}

// The tenant's view of (after, through]: (key, operation, version) as the
// server maps events (server/src/view.cpp), with whether the message may be
// missing (a pointer topic's upsert whose doc had left the scope when read).
struct Expected {
  std::string key, op;
  std::int64_t version = 0;
  bool may_skip = false;
};
std::vector<Expected> view_of(const TopicJournal& j, const std::string& scope, bool pointer,
                              std::int64_t after, std::int64_t through) {
  std::vector<Expected> out;
  for (auto it = j.events.upper_bound(after); it != j.events.end() && it->first <= through; ++it) {
    const JournalEvent& e = it->second;
    if (e.scope == scope) {
      if (e.deleted) {
        out.push_back({e.doc_key, "delete", e.version, false});
      } else {
        const bool entered = e.previous_scope && *e.previous_scope != scope;
        out.push_back(
            {e.doc_key, e.version == 1 || entered ? "insert" : "update", e.version, pointer});
      }
    } else if (!e.deleted && e.previous_scope && *e.previous_scope == scope) {
      out.push_back({e.doc_key, "delete", e.version, false});
    }
  }
  return out;
}

// Whether a received operation is the view's: a channel's update says
// "upsert" for both an insert and an update.
bool same_operation(const std::string& want, const std::string& got) {
  return want == got || (got == "upsert" && (want == "insert" || want == "update"));
}

// Whether the versions of `key` strictly between `from` and `to` can have been
// withheld from `scope`'s view of a pointer topic: each of them that the
// journal retained is an upsert of `scope`, and a later version (after `to`,
// which `scope` received) took the doc out of `scope`, as a withheld upsert's
// read requires. A version the journal no longer holds cannot be judged and
// passes; the response's own check against the journal covers what it can.
bool withheld_between(const TopicJournal& j, const std::string& scope, const std::string& key,
                      std::int64_t from, std::int64_t to) {
  if (to <= from + 1) return false;
  bool left_later = false;
  for (const auto& [watermark, e] : j.events) {
    if (e.doc_key != key || e.version <= from) continue;
    const bool in_scope = !e.deleted && e.scope == scope;
    if (e.version < to && !in_scope) return false;
    if (e.version > to && !in_scope) left_later = true;
  }
  return left_later;
}

}  // namespace

void check_follower(const FollowerCheck& c) {
  const FollowerSpec& f = c.follower;
  const TopicJournal& j = c.journal;
  const bool pointer = c.pointer;
  const std::string scope = fmt::format("org:{}", f.org);
  Counts& counts = c.counts;
  const auto problem = [&](const std::string& what, Finding kind = Finding::delivery) {
    c.problem(what, kind);
  };
  const auto channel_offset = [&](std::size_t t, const json& position) -> std::string {
    const auto counter = c.recorder.epoch_counter(t, position.value("e", ""));
    std::int64_t watermark = 0;
    try {
      watermark = std::stoll(position.value("w", ""));
    } catch (const std::exception&) {
      return "";
    }
    if (!counter) return "";
    return fmt::format("{:016}_{:020}_j", *counter, watermark);
  };
  std::ifstream in(f.out);
  std::string text;
  struct DocSeen {
    std::int64_t version;
    bool deleted;
  };
  std::map<std::string, DocSeen> docs;
  std::string last_offset = "-1";
  bool resyncing = false;  // a 410 or a reset, until its snapshot ends
  // The epoch and floor the last 410 named: a resync may go stale again
  // only when one of them moved (an epoch reset or a purge during its
  // snapshot), never in a loop with nothing changed.
  std::string stale_epoch;
  std::optional<std::int64_t> stale_floor;
  bool got_final = false;
  int line_number = 0;
  while (std::getline(in, text)) {
    ++line_number;
    json line = json::parse(text, nullptr, false);
    if (!line.is_object()) {
      problem(fmt::format("line {} is not JSON", line_number));
      continue;
    }
    if (f.channel()) {
      // A channel's positions as offsets: "" when the epoch was never seen.
      bool unmapped = false;
      for (const char* field : {"f", "o"}) {
        if (line.contains(field) && line[field].is_object()) {
          line[field] = channel_offset(static_cast<std::size_t>(f.topic), line[field]);
          unmapped = unmapped || line[field] == "";
        }
      }
      if (unmapped) ++counts.unmapped_epochs;
    }
    const std::string k = line.value("k", "");
    if (k == "bad") {
      problem(line.value("msg", ""));
      continue;
    }
    if (k == "s") {
      ++counts.sessions;
      if (f.channel()) ++counts.channel_joins;
      if (line.value("o", "") == "-1") docs.clear();
      continue;
    }
    if (k == "e") {
      const int status = line.value("status", 0);
      if (status == 401) {
        ++counts.refused_tokens;
      } else if (status == 410) {
        ++counts.stale_410;
        if (f.channel()) ++counts.channel_stale;
        const std::string reason = line.value("reason", "");
        const auto num = [&](const char* field) -> std::optional<std::int64_t> {
          try {
            return std::stoll(line.value(field, ""));
          } catch (const std::exception&) {
            return std::nullopt;
          }
        };
        const auto floor = num("floor"), head = num("head");
        const std::string epoch = line.value("epoch", "");
        if (resyncing && epoch == stale_epoch && floor <= stale_floor) {
          problem(fmt::format(
              "went stale again (floor {}, epoch {}) before its resync reached the snapshot's "
              "end, with nothing changed since the last 410",
              floor.value_or(-1), epoch));
        }
        resyncing = true;
        stale_epoch = epoch;
        stale_floor = floor;
        const std::string at = line.value("o", "");
        const auto jo = journal_offset(at);
        if (!floor || !head || line.value("epoch", "").empty()) {
          problem(fmt::format("a 410 at {} without Oasync-Floor/Head/Epoch", at));
        } else if (*floor > *head || *floor > j.floor || *head > j.head) {
          problem(
              fmt::format("a 410 at {} names floor {} and head {}; the final floor and head "
                          "are {} and {}",
                          at, *floor, *head, j.floor, j.head));
        } else if (reason == "cursor_ahead") {
          problem(fmt::format("a 410 cursor_ahead at {} (head {}), an offset the server gave", at,
                              *head));
        } else if (reason == "retention_floor_breach") {
          const std::optional<std::int64_t> w =
              jo ? std::optional<std::int64_t>(jo->watermark) : snapshot_head(at);
          if (w && *w >= *floor && jo) {
            problem(
                fmt::format("a 410 retention_floor_breach at watermark {}, not below the "
                            "floor {} it names",
                            *w, *floor));
          }
        } else if (reason == "epoch_changed") {
          if (jo && jo->epoch >= j.epoch_counter) {
            problem(fmt::format("a 410 epoch_changed at {}, in the topic's last epoch ({})", at,
                                j.epoch_counter));
          }
        } else {
          problem(fmt::format("a 410 with reason \"{}\"", reason));
        }
      } else if (status == 403) {
        problem("refused with 403 (its token names the topic)");
      }
      continue;
    }
    if (k == "final") {
      got_final = true;
      const auto& expected = c.snapshot();
      const json& state = line["state"];
      std::uint64_t missing = 0, extra = 0, different = 0;
      std::string example;
      for (const auto& [key, doc] : expected) {
        if (!state.contains(key)) {
          ++missing;
          if (example.empty()) example = key + " missing";
        } else if (state[key][0] != doc["doc_version"] || state[key][1] != doc["payload"]) {
          ++different;
          if (example.empty()) {
            example =
                fmt::format("{}: v{} {} here, v{} {} in the snapshot", key, state[key][0].dump(),
                            state[key][1].dump(), doc["doc_version"].dump(), doc["payload"].dump());
          }
        }
      }
      for (const auto& [key, v] : state.items()) {
        if (expected.count(key) == 0) {
          ++extra;
          if (example.empty()) example = key + " not in the snapshot";
        }
      }
      if (missing + extra + different != 0) {
        problem(
            fmt::format("its final state ({} docs at {}) differs from oasync snapshot "
                        "--scope {} ({} docs): {} missing, {} extra, {} different ({})",
                        state.size(), line.value("o", ""), scope, expected.size(), missing, extra,
                        different, example));
      }
      continue;
    }
    if (k != "b") continue;
    ++counts.responses;
    if (f.channel()) ++counts.channel_batches;
    const std::string from = line.value("f", ""), to = line.value("o", "");
    // ("": a channel position of an epoch the recorder never saw.)
    const bool known = !from.empty() && !to.empty() && !last_offset.empty();
    if (known && from != "-1" && (to < from || (to == from && !line["m"].empty()))) {
      problem(fmt::format("offset went from {} to {}", from, to));
    }
    if (known && from != last_offset && from != "-1") {
      problem(fmt::format("a response from {} after the offset {}", from, last_offset));
    }
    last_offset = to;
    std::vector<Message> messages;
    bool controls = false;
    for (const json& m : line["m"]) messages.push_back(parse_message(m));
    for (const Message& m : messages) {
      if (!m.control.empty()) {
        controls = true;
        if (m.control == "reset") {
          ++counts.resets;
          if (resyncing && f.on_stale == "reset") {
            problem("a second reset before the first resync's snapshot ended");
          }
          resyncing = true;
          docs.clear();
        } else if (m.control == "snapshot-start") {
          docs.clear();
        } else if (m.control == "snapshot-end") {
          resyncing = false;
        }
        continue;
      }
      ++counts.messages;
      if (m.sc && *m.sc != scope) {
        problem(fmt::format("received {} with a payload of {}", m.key, *m.sc), Finding::scope_leak);
      }
      if (m.op != "delete" && !m.sc) {
        problem(fmt::format("an {} of {} without a payload", m.op, m.key));
      }
      if (!m.version) {
        problem(fmt::format("a change of {} without headers.version", m.key));
        continue;
      }
      const auto it = docs.find(m.key);
      if (it != docs.end()) {
        const DocSeen prev = it->second;
        // A pointer topic's upsert is withheld when its doc had left the scope
        // when it was read, so the versions between may be missing, but only
        // if each of them is such an upsert of this scope.
        const bool jump_allowed =
            prev.deleted || (pointer && m.op == "delete") ||
            (pointer && withheld_between(j, scope, m.key, prev.version, *m.version));
        if (jump_allowed ? *m.version <= prev.version : *m.version != prev.version + 1) {
          problem(fmt::format("{} v{} ({}) after v{}{} (response {} .. {})", m.key, *m.version,
                              m.op, prev.version, prev.deleted ? " (deleted)" : "", from, to));
        }
      }
      docs[m.key] = DocSeen{*m.version, m.op == "delete"};
    }
    // The response against the journal: exactly the view of (W1, W2].
    const auto jf = journal_offset(from), jt = journal_offset(to);
    if (controls || !jf || !jt ||
        !c.recorder.covers(static_cast<std::size_t>(f.topic), jf->watermark, jt->watermark)) {
      ++counts.unchecked_responses;
      continue;
    }
    const std::vector<Expected> expected =
        view_of(j, scope, pointer, jf->watermark, std::min(jt->watermark, j.head));
    std::size_t e = 0, m = 0;
    while (m < messages.size()) {
      const Message& got = messages[m];
      while (e < expected.size() && expected[e].may_skip &&
             (expected[e].key != got.key || expected[e].version != got.version.value_or(-1))) {
        ++e;
        ++counts.pointer_skips;
      }
      if (e == expected.size()) {
        problem(fmt::format("{} ({} v{}) in the response {} .. {} is not in its view there",
                            got.key, got.op, got.version.value_or(-1), from, to),
                got.sc && *got.sc != scope ? Finding::scope_leak : Finding::delivery);
        break;
      }
      const Expected& want = expected[e];
      if (want.key != got.key || !same_operation(want.op, got.op) ||
          want.version != got.version.value_or(-1)) {
        problem(fmt::format("the response {} .. {} has {} {} v{} where the view has {} {} v{}",
                            from, to, got.op, got.key, got.version.value_or(-1), want.op, want.key,
                            want.version));
        break;
      }
      ++counts.deliveries_checked;
      ++e;
      ++m;
    }
    if (m == messages.size()) {
      for (; e < expected.size(); ++e) {
        if (!expected[e].may_skip) {
          problem(fmt::format("the response {} .. {} misses {} {} v{} of its view", from, to,
                              expected[e].op, expected[e].key, expected[e].version));
          break;
        }
        ++counts.pointer_skips;
      }
    }
  }
  if (!got_final) problem("wrote no final state (it did not reach the head)");
}

}  // namespace oasync::test::delivery
