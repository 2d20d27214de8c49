// One FCALL per Redis node (per slot on a Redis Cluster, which refuses declared keys
// of several slots in one call) per loop pass: items for one Redis function (one message
// each) gathered while the loop handles a batch of deliveries, sent together when the
// pass ends (uv_check) or when max_items are waiting, so a lone message goes at once
// and a burst costs one round trip and one function call per node. While a group
// already has kMaxInFlight calls unanswered, its next batch keeps filling until one
// answers (or it is full): under load the calls grow towards max_items, where a
// function call costs Redis least per item, and Redis, which runs calls one at a time,
// would have kept the smaller calls waiting anyway.
//
// Call layout: call_layout.hpp (plain, or with the items' last `group_keys` keys sent
// once per run of items that share them). The function returns one result per item,
// in call order; an item's failure is its own result (an error element), never the
// others'.
//
// When the call as a whole fails: a redirect (MOVED, ASK, TRYAGAIN: the map moved
// under a batch that spans slots) sends each item again on its own, following the
// redirect; anything else (a lost node: nullptr) is every item's result, and each
// message runs again later as a whole, its idempotency key keeping it effectively once.
#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "eventd/redis/call_layout.hpp"
#include "eventd/redis_client.hpp"
#include "eventd/uv_handle.hpp"

namespace eventd::redis {

// An item's keys or arguments, written as a braced list of strings: each temporary is
// moved in (a std::vector<std::string> built from braces copies every element, and on
// the quote path those copies were a malloc and a memcpy per key).
class Strings {
 public:
  template <typename... S>
    requires(std::is_constructible_v<std::string, S &&> && ...)
  Strings(S&&... s) {  // NOLINT(google-explicit-constructor): braced lists are the point
    values_.reserve(sizeof...(S));
    (values_.emplace_back(std::forward<S>(s)), ...);
  }
  // A list made elsewhere (e.g. unwatched_quote_item), moved in whole.
  Strings(std::vector<std::string>&& values) : values_(std::move(values)) {}  // NOLINT(google-explicit-constructor)
  std::vector<std::string> take() && { return std::move(values_); }

 private:
  std::vector<std::string> values_;
};

class Batcher {
 public:
  using Callback = RedisClient::Callback;
  // `group_keys`: how many of each item's keys, at the end, are sent once per run of
  // items (call_layout.hpp); every item has more keys than that.
  Batcher(uv_loop_t* loop, RedisClient& redis, std::string function, std::size_t max_items,
          std::size_t group_keys = 0);
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // Arguments every call carries after the item count (e.g. a TTL). Set before add().
  void set_shared_args(std::vector<std::string> args) { shared_args_ = std::move(args); }

  // Queues one item; false (and `done` never called) when no reachable node serves
  // its first key. `done` gets the item's own result, or nullptr. With group keys,
  // `run_args` is called, and what it makes goes with the call, if the item leads its
  // run (the highest `rank`; call_layout.hpp).
  bool add(Strings keys, Strings args, Callback done, RunArgs run_args = {}, int64_t rank = 0);

  std::size_t calls() const { return calls_; }  // FCALLs sent, for tests and benchmarks

 private:
  struct Item {
    std::vector<std::string> keys;
    std::vector<std::string> args;
    Callback done;
    RunArgs run_args;
    int64_t rank;
  };
  using Items = std::vector<Item>;
  using Group = std::pair<const void*, uint16_t>;  // node, and slot on a cluster
  // Two, so that Redis has the next call as soon as it answers one.
  static constexpr unsigned kMaxInFlight = 2;

  void flush();
  void send(Group group, Items items);
  unsigned in_flight(const Group& group) const;
  void answered(const Group& group);
  bool send_alone(std::shared_ptr<Item> item);
  static void on_check(uv_check_t* handle);

  RedisClient& redis_;
  std::string function_;
  std::size_t max_items_;
  std::size_t group_keys_;
  std::vector<std::string> shared_args_;
  std::map<Group, Items> waiting_;
  std::map<Group, unsigned> in_flight_;  // calls sent and not yet answered, per group
  std::size_t calls_ = 0;
  UvHandle<uv_check_t> check_;
};

}  // namespace eventd::redis
