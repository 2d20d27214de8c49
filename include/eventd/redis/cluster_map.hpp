// Which master serves which slot of a Redis Cluster, read from CLUSTER SLOTS, and the
// redirects (MOVED, ASK) a node answers with when it does not serve a key. Pure data,
// no I/O: the cluster client asks, this module remembers and parses.
#pragma once

#include <hiredis/hiredis.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "eventd/config.hpp"
#include "eventd/redis/slot.hpp"

namespace eventd::redis {

using NodeAddress = RedisNodeAddress;

// "host:port" (IPv6 as the last ':' splits); nullopt when malformed.
std::optional<NodeAddress> parse_node_address(std::string_view text);

class SlotMap {
 public:
  SlotMap() { owner_.fill(kNone); }

  // Replaces the map from a CLUSTER SLOTS reply: [[start, end, [host, port, id, ...],
  // replicas...], ...]. A node that reports an empty host means "the address you
  // reached me at": `reached` fills it in. Returns false (map unchanged) when the
  // reply is not of that shape.
  bool load(const redisReply* reply, const NodeAddress& reached);

  // The master of `slot`, or nullptr when no node serves it (yet).
  const NodeAddress* master_of(uint16_t slot) const {
    return owner_[slot] == kNone ? nullptr : &nodes_[owner_[slot]];
  }
  // A MOVED redirect: `slot` now lives on `node`.
  void assign(uint16_t slot, const NodeAddress& node);

  const std::vector<NodeAddress>& masters() const { return nodes_; }
  bool empty() const { return nodes_.empty(); }
  // Slots no master serves.
  std::size_t unserved() const;

 private:
  static constexpr uint16_t kNone = 0xffff;
  uint16_t index_of(const NodeAddress& node);

  std::vector<NodeAddress> nodes_;
  std::array<uint16_t, kSlotCount> owner_;  // index into nodes_, or kNone
};

struct Redirect {
  enum class Kind { Moved, Ask } kind;
  uint16_t slot;
  NodeAddress node;
};

// "MOVED 3999 127.0.0.1:6381" / "ASK 3999 127.0.0.1:6381"; nullopt for other errors.
std::optional<Redirect> parse_redirect(std::string_view error);

// INFO cluster's "cluster_enabled:1".
bool info_says_cluster(std::string_view info);

}  // namespace eventd::redis
