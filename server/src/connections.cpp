#include "connections.hpp"

#include <algorithm>

#include <boost/asio/ip/address.hpp>
#include <utility>

namespace oasync::serve {

std::string Connections::canonical(const std::string& text) {
  boost::system::error_code ec;
  auto address = boost::asio::ip::make_address(text, ec);
  if (ec) return text;
  if (address.is_v6() && address.to_v6().is_v4_mapped()) {
    address = boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, address.to_v6());
  }
  return address.to_string();
}

Connections::Connections(std::int64_t max_connections, std::int64_t max_per_client,
                         std::vector<std::string> trusted_proxies)
    : max_connections_(max_connections), max_per_client_(max_per_client) {
  for (const std::string& proxy : trusted_proxies) trusted_proxies_.push_back(canonical(proxy));
}

bool Connections::trusted(const std::string& peer) const {
  return std::find(trusted_proxies_.begin(), trusted_proxies_.end(), peer) !=
         trusted_proxies_.end();
}

Connections::Admission Connections::admit(const std::string& address) {
  // A trusted proxy carries many clients: its requests count against them.
  if (const auto it = per_client_.find(address);
      !trusted(address) && it != per_client_.end() && it->second >= max_per_client_) {
    return Admission::refuse_client;
  }
  if (open_ < max_connections_) return Admission::admit;
  if (idle_.empty()) return Admission::refuse_full;
  // The longest idle makes room: its read is cancelled, and it closes.
  Idle* oldest = idle_.front();
  idle_.pop_front();
  oldest->listed_ = false;
  oldest->stream_.cancel();
  return Admission::admit;
}

Connections::Lease::Lease(Connections* owner, std::string address)
    : owner_(owner), address_(std::move(address)) {
  ++owner_->per_client_[address_];
}

Connections::Lease::Lease(Lease&& other) noexcept
    : owner_(std::exchange(other.owner_, nullptr)), address_(std::move(other.address_)) {}

Connections::Lease& Connections::Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    release();
    owner_ = std::exchange(other.owner_, nullptr);
    address_ = std::move(other.address_);
  }
  return *this;
}

Connections::Lease::~Lease() {
  release();
}

void Connections::Lease::release() {
  if (owner_ == nullptr) return;
  const auto it = owner_->per_client_.find(address_);
  if (it != owner_->per_client_.end() && --it->second <= 0) owner_->per_client_.erase(it);
  owner_ = nullptr;
}

Connections::Lease Connections::lease(const std::string& address) {
  if (trusted(address)) return {};
  return Lease(this, address);
}

Connections::Lease Connections::lease_forwarded(const std::string& peer,
                                                std::string_view forwarded_for, bool& over) {
  over = false;
  if (forwarded_for.empty() || !trusted(peer)) return {};
  // The last address is the one the trusted proxy itself appended: the peer
  // it saw. Earlier ones are the client's own words.
  std::string_view last = forwarded_for;
  if (const auto comma = last.rfind(','); comma != std::string_view::npos) {
    last.remove_prefix(comma + 1);
  }
  while (!last.empty() && (last.front() == ' ' || last.front() == '\t')) last.remove_prefix(1);
  while (!last.empty() && (last.back() == ' ' || last.back() == '\t')) last.remove_suffix(1);
  if (last.empty() || last.size() > 64) return {};
  const std::string client = canonical(std::string(last));
  if (const auto it = per_client_.find(client);
      it != per_client_.end() && it->second >= max_per_client_) {
    over = true;
    return {};
  }
  return Lease(this, client);
}

Connections::Idle::Idle(Connections& owner, boost::beast::tcp_stream& stream)
    : owner_(owner), stream_(stream), at_(owner.idle_.insert(owner.idle_.end(), this)) {}

Connections::Idle::~Idle() {
  // (admit() takes a connection off the list when it cancels it.)
  if (listed_) owner_.idle_.erase(at_);
}

void Connections::cancel_idle() {
  for (Idle* idle : idle_) idle->stream_.cancel();
}

}  // namespace oasync::serve
