// eventctl's blocking Redis (see blocking_client.hpp).
#include "eventd/redis/blocking_client.hpp"

#include <stdexcept>
#include <string_view>
#include <thread>

#include "eventd/redis/slot.hpp"

namespace eventd::redis {
namespace {

constexpr int kMaxRedirects = 16;

// The key a request is routed by: a script's first key, else the first argument.
std::string_view routing_key(const std::vector<std::string>& args) {
  if (args.size() >= 4 && (args[0] == "EVAL" || args[0] == "EVALSHA" || args[0] == "FCALL") && args[2] != "0") {
    return args[3];
  }
  return args.size() > 1 ? std::string_view(args[1]) : std::string_view();
}

}  // namespace

BlockingClient::BlockingClient(const RedisConfig& config) : config_(config) {
  std::string failures;
  for (const auto& node : config.endpoint.nodes) {
    try {
      Context ctx = connect(node);
      Reply info = raw(ctx.get(), {"INFO", "cluster"});
      cluster_ = info->type == REDIS_REPLY_STRING && info_says_cluster(std::string_view(info->str, info->len));
      if (cluster_ && config.endpoint.db != 0) {
        throw std::runtime_error("Redis at " + node.text() + " is a cluster, which has only database 0; drop /" +
                                 std::to_string(config.endpoint.db) + " from the Redis URL");
      }
      if (cluster_) {
        Reply slots = raw(ctx.get(), {"CLUSTER", "SLOTS"});
        if (!map_.load(slots.get(), node)) throw std::runtime_error("Redis at " + node.text() + ": bad CLUSTER SLOTS reply");
      } else {
        raw(ctx.get(), {"SELECT", std::to_string(config.endpoint.db)});
      }
      first_ = node;
      contexts_.emplace(node.text(), std::move(ctx));
      return;
    } catch (const std::runtime_error& e) {
      if (config.endpoint.nodes.size() == 1) throw;
      failures += std::string(failures.empty() ? "" : "; ") + e.what();
    }
  }
  throw std::runtime_error("no Redis node answered: " + failures);
}

BlockingClient::Context BlockingClient::connect(const NodeAddress& node) {
  timeval tv{static_cast<time_t>(config_.connect_timeout_ms / 1000),
             static_cast<suseconds_t>((config_.connect_timeout_ms % 1000) * 1000)};
  Context ctx(node.unix_path.empty() ? redisConnectWithTimeout(node.host.c_str(), node.port, tv)
                                     : redisConnectUnixWithTimeout(node.unix_path.c_str(), tv));
  if (!ctx || ctx->err) {
    throw std::runtime_error("cannot connect to Redis at " + node.text() + ": " + (ctx ? ctx->errstr : "out of memory"));
  }
  redisSetTimeout(ctx.get(), tv);
  if (!config_.endpoint.password.empty()) {
    std::vector<std::string> auth{"AUTH"};
    if (!config_.endpoint.user.empty()) auth.push_back(config_.endpoint.user);
    auth.push_back(config_.endpoint.password);
    raw(ctx.get(), auth);
  }
  return ctx;
}

redisContext* BlockingClient::context(const NodeAddress& node) {
  auto it = contexts_.find(node.text());
  if (it != contexts_.end()) return it->second.get();
  return contexts_.emplace(node.text(), connect(node)).first->second.get();
}

BlockingClient::Reply BlockingClient::raw(redisContext* ctx, const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (const auto& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  auto* r = static_cast<redisReply*>(redisCommandArgv(ctx, static_cast<int>(args.size()), argv.data(), lens.data()));
  if (r == nullptr) throw std::runtime_error(std::string("Redis: ") + ctx->errstr);
  Reply reply(r, freeReplyObject);
  if (r->type == REDIS_REPLY_ERROR) {
    const std::string error(r->str, r->len);
    if (error.starts_with("NOPERM") || error.find("The user executing the script can't") != std::string::npos) {
      // The ACL user lacks a right: say which command and which user (never the password).
      std::string command = args.empty() ? "" : args[0];
      if (args.size() > 1 && (command == "FUNCTION" || command == "CLUSTER")) command += " " + args[1];
      const std::string user = config_.endpoint.user.empty() ? "default" : config_.endpoint.user;
      throw std::runtime_error("Redis refused " + command + " to user '" + user + "': " + error);
    }
    throw std::runtime_error("Redis: " + error);
  }
  return reply;
}

BlockingClient::Reply BlockingClient::run(const std::vector<std::string>& args) {
  if (!cluster_) return raw(context(first_), args);
  const uint16_t slot = key_slot(routing_key(args));
  const NodeAddress* master = map_.master_of(slot);
  if (master == nullptr) throw std::runtime_error("Redis: no master serves slot " + std::to_string(slot));
  NodeAddress target = *master;
  bool asking = false;
  for (int attempt = 0;; ++attempt) {
    redisContext* ctx = context(target);
    try {
      if (asking) raw(ctx, {"ASKING"});
      return raw(ctx, args);
    } catch (const std::runtime_error& e) {
      std::string_view what = e.what();
      if (!what.starts_with("Redis: ") || attempt >= kMaxRedirects) throw;
      what.remove_prefix(7);
      if (auto redirect = parse_redirect(what)) {
        asking = redirect->kind == Redirect::Kind::Ask;
        if (!asking) map_.assign(redirect->slot, redirect->node);
        target = redirect->node;
        continue;
      }
      if (what.starts_with("TRYAGAIN")) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));  // a slot migration splits the keys a moment
        asking = false;
        continue;
      }
      throw;
    }
  }
}

}  // namespace eventd::redis
