// Internal: the consumer rows that purge's guard reads inside its own
// transaction.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "oasync/consumers.hpp"

namespace oasync::internal {

// Consumers of `topic` whose position is current (in the topic's epoch, or
// in an epoch forked by a timeline change and at or below the head where the
// histories part, as oasync.resume_check has it), whose watermark is below
// `floor`, and that acknowledged within the last `window_seconds`, by name.
// resumable and head are not filled in.
std::vector<ConsumerState> recent_consumers_below(pqxx::transaction_base& tx,
                                                  const std::string& topic, std::int64_t floor,
                                                  std::int64_t window_seconds);

}  // namespace oasync::internal
