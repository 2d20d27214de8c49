// eventd's Redis client: one standalone Redis, or a Redis Cluster, behind one
// interface, on the libuv loop.
//
// At start it connects to every node of the URL (the seeds); the first to answer says
// (INFO cluster) which it is. Standalone: that one connection carries everything.
// Cluster: the slot map is read with CLUSTER SLOTS, each master gets a connection of
// its own (redis::Connection, with its own reconnect backoff), and every request goes
// to the master of its key's slot: a command's first argument, a function's first key
// (a message's keys share one hash tag, so one slot). MOVED updates the map and
// resends; ASK resends once with ASKING; TRYAGAIN resends a moment later; a redirect,
// CLUSTERDOWN or a lost node refreshes the map, and so does a timer (every second
// while some slot has no reachable master).
//
// Contract for callers, as for one connection: every callback runs exactly once,
// with the reply (borrowed) or nullptr when the node's connection failed first; a
// call that cannot be sent now (no reachable master for its slot) returns false and
// never calls back. The caller keeps such a message waiting and runs it again on
// on_up, which fires whenever a node becomes reachable.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "eventd/config.hpp"
#include "eventd/redis/cluster_map.hpp"
#include "eventd/redis/connection.hpp"
#include "eventd/uv_handle.hpp"

namespace eventd {

class RedisClient {
 public:
  using Callback = redis::Connection::Callback;
  struct Handlers {
    std::function<void()> on_up;                             // a node became reachable: waiting work may go
    std::function<void(const std::string& reason)> on_down;  // no node is reachable any more
  };

  RedisClient(uv_loop_t* loop, const RedisConfig& config, Handlers handlers);
  ~RedisClient();
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  // Registers a Redis Functions library before start(): Lua that registers its
  // functions with redis.register_function, each named "@lib_<name>". "@lib" is
  // replaced by the library's name, eventd_<hash of the code>, which is returned: a
  // function is called as fcall(name + "_<name>", ...).
  std::string add_library(std::string_view code);

  void start();
  // Every connection waits for its pending replies (within connect_timeout_ms), then
  // closes; `done` runs once.
  void stop(std::function<void()> done);

  // Standalone: connected. Cluster: the slot map is known and a master is reachable.
  bool up() const;
  bool cluster() const { return mode_ == Mode::Cluster; }
  uint64_t reconnects() const;
  std::size_t pending() const;
  // Masters of the slot map (cluster) or the one node, and how many are connected.
  std::size_t nodes_known() const;
  std::size_t nodes_up() const;

  // Routed by the command's first argument (its key).
  bool command(std::initializer_list<std::string_view> args, Callback done);
  bool command(const std::vector<std::string_view>& args, Callback done);

  // FCALL routed by keys[0]. Every key of one call must be on one node (a cluster
  // allows keys of several slots only to functions flagged allow-cross-slot-keys).
  // follow_redirects false: a MOVED, ASK or TRYAGAIN comes back as the reply (a batch
  // of several slots is split by its sender instead, see redis/batch.hpp).
  bool fcall(std::string_view function, const std::vector<std::string_view>& keys,
             const std::vector<std::string_view>& args, Callback done, bool follow_redirects = true);

  // The node that serves `key` now, as an identity to group requests by (nullptr
  // when no reachable node serves it), and on a cluster the key's slot (else 0).
  struct KeyHome {
    const void* node;
    uint16_t slot;
  };
  KeyHome home_of(std::string_view key);

  // With redis.minReplicas > 0: calls `done(true)` once WAIT confirms that many
  // replicas of the node holding `key` have every write sent to it so far, else
  // done(false) (too few in replicaTimeoutMs, or the node is lost). Called from
  // inside a reply's callback, it waits on the node that sent the reply (after an
  // ASK that is not the slot's master). One WAIT per node per loop pass covers
  // every waiter of that node. Without minReplicas: done(true) at once.
  bool replicas_required() const { return config_.min_replicas > 0; }
  void wait_replicated(std::string_view key, std::function<void(bool ok)> done);

 private:
  enum class Mode { Discovering, Standalone, Cluster };
  struct Request;
  struct Node {
    std::unique_ptr<redis::Connection> conn;
    std::vector<std::function<void(bool)>> waiters;  // for the next WAIT
    bool wait_in_flight = false;
    bool replicas_short = false;                     // the last WAIT fell short (logged once)
    bool retired = false;                            // being stopped; destroyed once closed
    bool closed = false;
  };

  redis::Connection* connection_for_key(std::string_view key);
  redis::Connection* connection_for_slot(uint16_t slot);  // the slot is ignored on a standalone Redis
  Node& node(const redis::NodeAddress& address);  // creates and starts it if new
  void on_node_up(redis::Connection* conn);
  void on_node_down(redis::Connection* conn, const std::string& reason);
  void refresh_map();
  void start_timer_ms(uint64_t ms);  // the next map refresh
  void apply_map();
  void retire(Node& node);
  bool send(const std::shared_ptr<Request>& req, redis::Connection& conn);
  void on_request_reply(const std::shared_ptr<Request>& req, redis::Connection* conn, const redisReply* reply);
  bool route(const std::shared_ptr<Request>& req);
  void flush_waits();
  void reap();
  void maybe_finish_stop();
  void arm_check();
  static void on_check(uv_check_t* handle);
  static void on_refresh_timer(uv_timer_t* handle);
  static void on_tryagain_timer(uv_timer_t* handle);

  uv_loop_t* loop_;
  RedisConfig config_;
  Handlers handlers_;
  std::vector<redis::Library> libraries_;  // shared by every connection
  Mode mode_ = Mode::Discovering;
  bool stopping_ = false;
  bool refresh_in_flight_ = false;
  bool was_up_ = false;
  std::function<void()> stop_done_;
  redis::SlotMap map_;
  std::map<std::string, Node, std::less<>> nodes_;  // by "host:port"
  redis::Connection* replying_ = nullptr;  // whose reply is being handled (see wait_replicated)
  std::vector<std::shared_ptr<Request>> tryagain_;
  uint64_t retired_reconnects_ = 0;
  UvHandle<uv_check_t> check_;
  UvHandle<uv_timer_t> refresh_timer_;
  UvHandle<uv_timer_t> tryagain_timer_;
};

}  // namespace eventd
