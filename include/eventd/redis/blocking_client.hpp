// Blocking Redis for eventctl (no loop there): a standalone Redis or a Redis Cluster,
// like RedisClient but one request at a time. Each request goes to the master of
// its key's slot (a script's first key, a command's first argument), following MOVED
// and ASK.
#pragma once

#include <hiredis/hiredis.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "eventd/config.hpp"
#include "eventd/redis/cluster_map.hpp"

namespace eventd::redis {

class BlockingClient {
 public:
  // Connects to the first node of the URL that answers. Throws std::runtime_error
  // with one line naming the nodes when none does.
  explicit BlockingClient(const RedisConfig& config);

  using Reply = std::unique_ptr<redisReply, decltype(&freeReplyObject)>;
  // Throws std::runtime_error("Redis: <error>") on an error reply or a lost node.
  Reply run(const std::vector<std::string>& args);
  bool cluster() const { return cluster_; }

 private:
  struct Free {
    void operator()(redisContext* c) const { redisFree(c); }
  };
  using Context = std::unique_ptr<redisContext, Free>;

  // A connected, authenticated context to `node` (kept for later requests).
  redisContext* context(const NodeAddress& node);
  Context connect(const NodeAddress& node);
  Reply raw(redisContext* ctx, const std::vector<std::string>& args);

  const RedisConfig& config_;
  bool cluster_ = false;
  SlotMap map_;
  std::map<std::string, Context> contexts_;  // by "host:port"
  NodeAddress first_;                          // the node that answered (standalone)
};

}  // namespace eventd::redis
