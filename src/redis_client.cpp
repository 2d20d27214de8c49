// Standalone or cluster routing over node connections (see redis_client.hpp).
#include "eventd/redis_client.hpp"

#include <hiredis/hiredis.h>
#include <xxhash.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "eventd/log.hpp"
#include "eventd/redis/slot.hpp"
#include "eventd/text.hpp"

namespace eventd {
namespace {

// A request bounces at most this often (MOVED, ASK, TRYAGAIN) before it is reported
// lost: more means the map keeps changing under it, and it is better run again later.
constexpr int kMaxRedirects = 16;
// TRYAGAIN (a multi-key request whose keys a slot migration has split) lasts until
// the migration of that slot ends: wait for it up to about 5 s, then report the error.
constexpr uint64_t kTryAgainMs = 50;
constexpr int kMaxTryAgain = 100;
constexpr uint64_t kRefreshDegradedMs = 1000;
constexpr uint64_t kRefreshHealthyMs = 10000;

std::vector<std::string_view> views(const std::vector<std::string>& v) { return {v.begin(), v.end()}; }

}  // namespace

// A cluster request, kept whole so that a redirect can send it again.
struct RedisClient::Request {
  std::string function;            // not empty: FCALL of that function with `keys` and `args`
  std::vector<std::string> keys;
  std::vector<std::string> args;   // a command: its arguments, the command first
  Callback done;
  uint16_t slot = 0;
  int redirects = 0;
  int tryagains = 0;
  bool asking = false;             // the last redirect was ASK: send ASKING first
  bool follow_redirects = true;
};

RedisClient::RedisClient(uv_loop_t* loop, const RedisConfig& config, Handlers handlers)
    : loop_(loop), config_(config), handlers_(std::move(handlers)) {
  check_.init(this, [loop](uv_check_t* c) { return uv_check_init(loop, c); });
  refresh_timer_.init(this, [loop](uv_timer_t* t) { return uv_timer_init(loop, t); });
  tryagain_timer_.init(this, [loop](uv_timer_t* t) { return uv_timer_init(loop, t); });
}

RedisClient::~RedisClient() = default;

std::string RedisClient::add_library(std::string_view code) {
  char name[32];
  std::snprintf(name, sizeof name, "eventd_%016llx",
                static_cast<unsigned long long>(XXH3_64bits(code.data(), code.size())));
  const std::string body = replace_all(std::string(code), "@lib", name);
  libraries_.push_back({name, "#!lua name=" + std::string(name) + "\n" + body});
  return name;
}

bool RedisClient::fcall(std::string_view function, const std::vector<std::string_view>& keys,
                        const std::vector<std::string_view>& args, Callback done, bool follow_redirects) {
  if (stopping_) return false;
  const std::string_view key = keys.empty() ? std::string_view() : keys.front();
  if (mode_ == Mode::Standalone) {
    redis::Connection* conn = connection_for_key(key);
    return conn != nullptr && conn->fcall(function, keys, args, std::move(done));
  }
  if (mode_ != Mode::Cluster) return false;
  auto req = std::make_shared<Request>();
  req->function = function;
  req->follow_redirects = follow_redirects;
  req->keys.assign(keys.begin(), keys.end());
  req->args.assign(args.begin(), args.end());
  req->done = std::move(done);
  req->slot = redis::key_slot(key);
  return route(req);
}

void RedisClient::start() {
  stopping_ = false;
  for (const auto& seed : config_.endpoint.nodes) node(seed);
}

RedisClient::Node& RedisClient::node(const redis::NodeAddress& address) {
  const std::string name = address.text();
  auto it = nodes_.find(name);
  if (it != nodes_.end()) return it->second;
  Node& n = nodes_[name];
  n.conn = std::make_unique<redis::Connection>(loop_, address, config_, libraries_, redis::Connection::Handlers{});
  redis::Connection* conn = n.conn.get();
  conn->set_handlers({[this, conn] { on_node_up(conn); },
                      [this, conn](const std::string& why) { on_node_down(conn, why); }});
  if (!stopping_) conn->start();
  return n;
}

void RedisClient::on_node_up(redis::Connection* conn) {
  if (stopping_) return;
  switch (mode_) {
    case Mode::Discovering:
      if (conn->cluster()) {
        mode_ = Mode::Cluster;
        log::info("redis is a cluster; reading its slot map", {{"seed", conn->node().text()}});
        refresh_map();
        return;
      }
      mode_ = Mode::Standalone;
      for (auto& [name, n] : nodes_) {
        if (n.conn.get() != conn) {
          log::warn("redis is standalone: only the node that answered first is used",
                    {{"used", conn->node().text()}, {"ignored", name}});
          retire(n);
        }
      }
      was_up_ = true;
      if (handlers_.on_up) handlers_.on_up();
      return;
    case Mode::Standalone:
      was_up_ = true;
      if (handlers_.on_up) handlers_.on_up();
      return;
    case Mode::Cluster:
      // A node is back, or a new master is reachable: the map may have moved on too.
      refresh_map();
      if (!map_.empty()) {
        was_up_ = true;
        if (handlers_.on_up) handlers_.on_up();
      }
      return;
  }
}

void RedisClient::on_node_down(redis::Connection* conn, const std::string& reason) {
  if (stopping_) return;
  if (mode_ == Mode::Cluster) refresh_map();
  if (was_up_ && !up()) {
    was_up_ = false;
    if (handlers_.on_down) handlers_.on_down(reason);
  }
  (void)conn;
}

bool RedisClient::up() const {
  if (mode_ == Mode::Discovering) return false;
  if (mode_ == Mode::Cluster && map_.empty()) return false;
  for (const auto& [name, n] : nodes_) {
    if (!n.retired && n.conn->up()) return true;
  }
  return false;
}

void RedisClient::refresh_map() {
  if (mode_ != Mode::Cluster || stopping_ || refresh_in_flight_) return;
  redis::Connection* asked = nullptr;
  for (auto& [name, n] : nodes_) {
    if (!n.retired && n.conn->up()) {
      asked = n.conn.get();
      break;
    }
  }
  if (asked == nullptr) {
    // Nobody to ask: go back to the seeds (their on_up asks again).
    for (const auto& seed : config_.endpoint.nodes) node(seed);
    start_timer_ms(kRefreshDegradedMs);
    return;
  }
  refresh_in_flight_ = true;
  bool sent = asked->command({"CLUSTER", "SLOTS"}, [this, asked](const redisReply* r) {
    refresh_in_flight_ = false;
    if (stopping_) return;
    if (r == nullptr || !map_.load(r, asked->node())) {
      log::warn("redis CLUSTER SLOTS failed", {{"node", asked->node().text()},
                                               {"error", r && r->type == REDIS_REPLY_ERROR ? r->str : "no reply"}});
      start_timer_ms(kRefreshDegradedMs);
      return;
    }
    apply_map();
  });
  if (!sent) refresh_in_flight_ = false;
}

void RedisClient::apply_map() {
  bool degraded = map_.unserved() > 0;
  for (const auto& master : map_.masters()) {
    Node& n = node(master);
    degraded = degraded || n.retired || !n.conn->up();
  }
  for (auto& [name, n] : nodes_) {
    if (n.retired) continue;
    const bool is_master = std::any_of(map_.masters().begin(), map_.masters().end(),
                                       [&](const redis::NodeAddress& m) { return m.text() == name; });
    if (!is_master) retire(n);
  }
  start_timer_ms(degraded ? kRefreshDegradedMs : kRefreshHealthyMs);
  // Slots may have moved to masters already connected: let waiting work try again.
  if (up()) {
    was_up_ = true;
    if (handlers_.on_up) handlers_.on_up();
  }
}

void RedisClient::start_timer_ms(uint64_t ms) {
  if (refresh_timer_.initialised() && !stopping_) uv_timer_start(refresh_timer_.get(), on_refresh_timer, ms, 0);
}

void RedisClient::on_refresh_timer(uv_timer_t* handle) {
  if (auto* self = owner_of<RedisClient>(handle)) self->refresh_map();
}

void RedisClient::retire(Node& n) {
  if (n.retired) return;
  n.retired = true;
  retired_reconnects_ += n.conn->reconnects();
  n.conn->stop([this, &n] {
    n.closed = true;
    arm_check();
  });
}

redis::Connection* RedisClient::connection_for_key(std::string_view key) {
  return connection_for_slot(mode_ == Mode::Cluster ? redis::key_slot(key) : uint16_t{0});
}

redis::Connection* RedisClient::connection_for_slot(uint16_t slot) {
  if (mode_ == Mode::Standalone) {
    for (auto& [name, n] : nodes_) {
      if (!n.retired) return n.conn.get();
    }
    return nullptr;
  }
  if (mode_ != Mode::Cluster) return nullptr;
  const redis::NodeAddress* master = map_.master_of(slot);
  if (master == nullptr) return nullptr;
  auto it = nodes_.find(master->text());
  return it == nodes_.end() || it->second.retired ? nullptr : it->second.conn.get();
}

bool RedisClient::command(std::initializer_list<std::string_view> args, Callback done) {
  return command(std::vector<std::string_view>(args), std::move(done));
}

bool RedisClient::command(const std::vector<std::string_view>& args, Callback done) {
  if (args.empty() || stopping_) return false;
  const std::string_view key = args.size() > 1 ? args[1] : std::string_view();
  if (mode_ == Mode::Standalone) {
    redis::Connection* conn = connection_for_key(key);
    return conn != nullptr && conn->command(args, std::move(done));
  }
  if (mode_ != Mode::Cluster) return false;
  auto req = std::make_shared<Request>();
  req->args.assign(args.begin(), args.end());
  req->done = std::move(done);
  req->slot = redis::key_slot(key);
  return route(req);
}

RedisClient::KeyHome RedisClient::home_of(std::string_view key) {
  const uint16_t slot = mode_ == Mode::Cluster ? redis::key_slot(key) : uint16_t{0};
  redis::Connection* conn = connection_for_slot(slot);
  return {conn != nullptr && conn->up() ? conn : nullptr, slot};
}

bool RedisClient::route(const std::shared_ptr<Request>& req) {
  const redis::NodeAddress* master = map_.master_of(req->slot);
  if (master == nullptr) return false;
  Node& n = node(*master);
  if (n.retired || !n.conn->up()) return false;
  return send(req, *n.conn);
}

bool RedisClient::send(const std::shared_ptr<Request>& req, redis::Connection& conn) {
  if (req->asking && !conn.command({"ASKING"}, [](const redisReply*) {})) return false;
  redis::Connection* c = &conn;
  auto on_reply = [this, req, c](const redisReply* r) { on_request_reply(req, c, r); };
  if (!req->function.empty()) return conn.fcall(req->function, views(req->keys), views(req->args), on_reply);
  return conn.command(views(req->args), on_reply);
}

void RedisClient::on_request_reply(const std::shared_ptr<Request>& req, redis::Connection* conn,
                                   const redisReply* reply) {
  if (reply != nullptr && reply->type == REDIS_REPLY_ERROR && !stopping_) {
    const std::string_view error(reply->str, reply->len);
    auto redirect = redis::parse_redirect(error);
    if (redirect && redirect->kind == redis::Redirect::Kind::Moved) {
      map_.assign(redirect->slot, redirect->node);
      refresh_map();
    }
    if (redirect && req->follow_redirects && req->redirects < kMaxRedirects) {
      ++req->redirects;
      req->asking = redirect->kind == redis::Redirect::Kind::Ask;
      Node& target = node(redirect->node);
      if (!target.retired && target.conn->up() && send(req, *target.conn)) return;
      return req->done(nullptr);  // that node is still connecting: run again once it is up
    }
    if (error.starts_with("TRYAGAIN") && req->follow_redirects && req->tryagains < kMaxTryAgain) {
      // A multi-key request during a slot migration: the keys are split for a moment.
      // After an ASK this is the importing node, which has some of the keys but not
      // all (a new idempotency key, say) until the slot is its own: the ASK that led
      // here is part of that wait, which kMaxTryAgain bounds, not a bounce of the
      // redirect budget (16 rounds of ASK then TRYAGAIN would end it in under a second).
      if (req->asking && req->redirects > 0) --req->redirects;
      ++req->tryagains;
      req->asking = false;
      tryagain_.push_back(req);
      if (tryagain_timer_.initialised()) uv_timer_start(tryagain_timer_.get(), on_tryagain_timer, kTryAgainMs, 0);
      return;
    }
    if (error.starts_with("CLUSTERDOWN")) {
      refresh_map();
      return req->done(nullptr);
    }
  }
  redis::Connection* outer = std::exchange(replying_, conn);
  req->done(reply);
  replying_ = outer;
}

void RedisClient::on_tryagain_timer(uv_timer_t* handle) {
  auto* self = owner_of<RedisClient>(handle);
  if (self == nullptr) return;
  std::vector<std::shared_ptr<Request>> again = std::move(self->tryagain_);
  self->tryagain_.clear();
  for (auto& req : again) {
    if (self->stopping_ || !self->route(req)) req->done(nullptr);
  }
}

void RedisClient::wait_replicated(std::string_view key, std::function<void(bool ok)> done) {
  if (config_.min_replicas == 0) return done(true);
  redis::Connection* conn = replying_ != nullptr ? replying_ : connection_for_key(key);
  if (conn == nullptr || !conn->up() || stopping_) return done(false);
  auto it = nodes_.find(conn->node().text());
  if (it == nodes_.end() || it->second.retired) return done(false);
  it->second.waiters.push_back(std::move(done));
  arm_check();
}

void RedisClient::arm_check() {
  if (check_.initialised()) uv_check_start(check_.get(), on_check);
}

void RedisClient::on_check(uv_check_t* handle) {
  auto* self = owner_of<RedisClient>(handle);
  if (self == nullptr) return;
  uv_check_stop(handle);
  self->flush_waits();
  self->reap();
}

// One WAIT per node with waiters: it covers every write sent to that node before it.
// Waiters that arrive while one is out go with the next.
void RedisClient::flush_waits() {
  const std::string replicas = std::to_string(config_.min_replicas);
  const std::string timeout = std::to_string(config_.replica_timeout_ms);
  for (auto& [name, n] : nodes_) {
    if (n.waiters.empty() || n.wait_in_flight) continue;
    auto waiters = std::make_shared<std::vector<std::function<void(bool)>>>(std::move(n.waiters));
    n.waiters.clear();
    Node* np = &n;
    n.wait_in_flight = true;
    bool sent = n.conn->command({"WAIT", replicas, timeout}, [this, np, waiters](const redisReply* r) {
      np->wait_in_flight = false;
      const bool ok = r != nullptr && r->type == REDIS_REPLY_INTEGER &&
                      r->integer >= static_cast<long long>(config_.min_replicas);
      if (!ok && !np->replicas_short) {
        log::warn("redis replicas did not confirm; messages wait",
                  {{"node", np->conn->node().text()}, {"required", config_.min_replicas},
                   {"confirmed", r != nullptr && r->type == REDIS_REPLY_INTEGER ? r->integer : -1}});
      } else if (ok && np->replicas_short) {
        log::info("redis replicas confirm again", {{"node", np->conn->node().text()}});
      }
      np->replicas_short = !ok;
      for (auto& w : *waiters) w(ok);
      if (!np->waiters.empty()) arm_check();
    });
    if (!sent) {
      n.wait_in_flight = false;
      for (auto& w : *waiters) w(false);
    }
  }
}

void RedisClient::reap() {
  for (auto it = nodes_.begin(); it != nodes_.end();) {
    if (it->second.closed) it = nodes_.erase(it);
    else ++it;
  }
  maybe_finish_stop();
}

void RedisClient::stop(std::function<void()> done) {
  stopping_ = true;
  stop_done_ = std::move(done);
  if (refresh_timer_.initialised()) uv_timer_stop(refresh_timer_.get());
  if (tryagain_timer_.initialised()) uv_timer_stop(tryagain_timer_.get());
  std::vector<std::shared_ptr<Request>> again = std::move(tryagain_);
  tryagain_.clear();
  for (auto& req : again) req->done(nullptr);
  for (auto& [name, n] : nodes_) retire(n);
  arm_check();
  maybe_finish_stop();
}

void RedisClient::maybe_finish_stop() {
  if (!stopping_ || !stop_done_) return;
  for (const auto& [name, n] : nodes_) {
    if (!n.closed) return;
  }
  check_.close();
  refresh_timer_.close();
  tryagain_timer_.close();
  std::exchange(stop_done_, nullptr)();
}

uint64_t RedisClient::reconnects() const {
  uint64_t total = retired_reconnects_;
  for (const auto& [name, n] : nodes_) {
    if (!n.retired) total += n.conn->reconnects();
  }
  return total;
}

std::size_t RedisClient::pending() const {
  std::size_t total = 0;
  for (const auto& [name, n] : nodes_) total += n.conn->pending();
  return total;
}

std::size_t RedisClient::nodes_known() const {
  if (mode_ == Mode::Cluster) return map_.masters().size();
  return 1;
}

std::size_t RedisClient::nodes_up() const {
  std::size_t total = 0;
  for (const auto& [name, n] : nodes_) total += !n.retired && n.conn->up();
  return total;
}

}  // namespace eventd
