// Served offsets: what a client holds to resume a topic's stream.
//
// Opaque to clients, but strictly increasing and lexicographically sortable,
// across epochs too, as the Durable Streams protocol asks (PROTOCOL.md §8):
//
//   journal   EEEEEEEEEEEEEEEE_WWWWWWWWWWWWWWWWWWWW_j
//             every event of the view through watermark W of the epoch
//             numbered E (topics.epoch_counter) was delivered;
//   snapshot  EEEEEEEEEEEEEEEE_HHHHHHHHHHHHHHHHHHHH_iPPPPPPPPV_KKKK...
//             inside the snapshot taken at head H: P pages delivered, the
//             last one of the view's part V (0: the tenant's scope, 1: the
//             unscoped docs), ending at key K (hex of its bytes).
//
// E and W are zero-padded decimals (16 and 20 digits), so that byte order is
// numeric order; a snapshot's offsets sort after the journal's at H - 1 and
// before the journal's at H, where the snapshot hands over. No offset holds
// ",&=?/", nor is "-1" or "now".
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace oasync::serve {

struct Offset {
  enum class Kind { journal, snapshot };
  Kind kind = Kind::journal;
  std::int64_t epoch_counter = 0;
  // journal: the last watermark delivered; snapshot: the snapshot's head.
  std::int64_t watermark = 0;
  // snapshot: pages delivered, the part of the view being paged, and the
  // last key delivered.
  std::int64_t page = 0;
  int part = 0;
  std::string after_key;
};

std::string encode(const Offset& offset);

// The offset `text` encodes; nullopt for text this server never issues.
std::optional<Offset> decode(std::string_view text);

}  // namespace oasync::serve
