// Slot map and redirects (see cluster_map.hpp).
#include "eventd/redis/cluster_map.hpp"

#include <charconv>

namespace eventd::redis {
namespace {

std::optional<long long> to_int(std::string_view s) {
  long long v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

}  // namespace

std::optional<NodeAddress> parse_node_address(std::string_view text) {
  // Redis 7 may append "@cport" (cluster bus) in some replies; it is not ours.
  if (auto at = text.find('@'); at != std::string_view::npos) text = text.substr(0, at);
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return std::nullopt;
  std::string_view host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  auto port = to_int(text.substr(colon + 1));
  if (!port || *port < 1 || *port > 65535) return std::nullopt;
  return NodeAddress{std::string(host), static_cast<int>(*port)};
}

uint16_t SlotMap::index_of(const NodeAddress& node) {
  for (std::size_t i = 0; i < nodes_.size(); ++i) {
    if (nodes_[i] == node) return static_cast<uint16_t>(i);
  }
  nodes_.push_back(node);
  return static_cast<uint16_t>(nodes_.size() - 1);
}

bool SlotMap::load(const redisReply* reply, const NodeAddress& reached) {
  if (reply == nullptr || reply->type != REDIS_REPLY_ARRAY) return false;
  SlotMap fresh;
  for (std::size_t i = 0; i < reply->elements; ++i) {
    const redisReply* range = reply->element[i];
    if (range->type != REDIS_REPLY_ARRAY || range->elements < 3) return false;
    const redisReply* start = range->element[0];
    const redisReply* end = range->element[1];
    const redisReply* master = range->element[2];
    if (start->type != REDIS_REPLY_INTEGER || end->type != REDIS_REPLY_INTEGER || start->integer < 0 ||
        end->integer >= kSlotCount || start->integer > end->integer) {
      return false;
    }
    if (master->type != REDIS_REPLY_ARRAY || master->elements < 2 || master->element[0]->type != REDIS_REPLY_STRING ||
        master->element[1]->type != REDIS_REPLY_INTEGER) {
      return false;
    }
    NodeAddress node{std::string(master->element[0]->str, master->element[0]->len),
                     static_cast<int>(master->element[1]->integer)};
    if (node.host.empty() || node.host == "?") node.host = reached.host;
    const uint16_t owner = fresh.index_of(node);
    for (long long s = start->integer; s <= end->integer; ++s) fresh.owner_[static_cast<std::size_t>(s)] = owner;
  }
  *this = std::move(fresh);
  return true;
}

void SlotMap::assign(uint16_t slot, const NodeAddress& node) {
  if (slot < kSlotCount) owner_[slot] = index_of(node);
}

std::size_t SlotMap::unserved() const {
  std::size_t n = 0;
  for (uint16_t o : owner_) n += o == kNone;
  return n;
}

std::optional<Redirect> parse_redirect(std::string_view error) {
  Redirect::Kind kind;
  if (error.starts_with("MOVED ")) kind = Redirect::Kind::Moved;
  else if (error.starts_with("ASK ")) kind = Redirect::Kind::Ask;
  else return std::nullopt;
  std::string_view rest = error.substr(error.find(' ') + 1);
  const auto space = rest.find(' ');
  if (space == std::string_view::npos) return std::nullopt;
  auto slot = to_int(rest.substr(0, space));
  auto node = parse_node_address(rest.substr(space + 1));
  if (!slot || *slot < 0 || *slot >= kSlotCount || !node) return std::nullopt;
  return Redirect{kind, static_cast<uint16_t>(*slot), std::move(*node)};
}

bool info_says_cluster(std::string_view info) {
  const auto at = info.find("cluster_enabled:");
  return at != std::string_view::npos && info.substr(at + 16, 1) == "1";
}

}  // namespace eventd::redis
