// One async connection to one Redis node on the libuv loop (hiredis + a libuv
// adapter), with reconnects, a connect timeout and a liveness check, and the Lua
// function libraries loaded on every connect. It finds out whether the node is part of a Redis
// Cluster (INFO cluster) before it selects a database. RedisClient (redis_client.hpp)
// routes requests over one or many of these.
//
// Ownership (hiredis's contract, restated): the redisAsyncContext is owned by
// hiredis once connected and freed by it after the disconnect callback, where our
// copy is cleared. A reply is borrowed: valid only inside the callback. Every
// callback passed to command()/fcall() runs exactly once: with the reply, or with
// nullptr when the connection fails first. A call made while Redis is not up
// returns false and never calls back. An ACL refusal (NOPERM, or a script's "can't run
// this command", also inside a batch's reply) is logged once, with the command and the
// user, and reported as nullptr: the connection reconnects with backoff, as if Redis
// were lost.
#pragma once

#include <hiredis/async.h>
#include <uv.h>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "eventd/backoff.hpp"
#include "eventd/config.hpp"
#include "eventd/redis/cluster_map.hpp"
#include "eventd/uv_handle.hpp"

namespace eventd {

enum class RedisState { Closed, Connecting, Handshake, Up, Closing };

namespace redis {

// A Redis Functions library: loaded by FUNCTION LOAD on every connect. Its name carries
// a hash of its code, so two eventd versions (a rolling upgrade) each find their own.
struct Library {
  std::string name;  // eventd_<hash>
  std::string code;  // with the "#!lua name=" line
};

class Connection {
 public:
  using Callback = std::function<void(const redisReply* reply)>;
  struct Handlers {
    std::function<void()> on_up;                               // connected, db selected, libraries loaded
    std::function<void(const std::string& reason)> on_down;    // after every pending callback got nullptr
  };

  // `libraries` is owned by the caller and outlives the connection.
  Connection(uv_loop_t* loop, NodeAddress node, const RedisConfig& config, const std::vector<Library>& libraries,
             Handlers handlers);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Before start(): the handlers may need the connection's own address.
  void set_handlers(Handlers handlers) { handlers_ = std::move(handlers); }
  const NodeAddress& node() const { return node_; }
  // Known once up: the node runs in cluster mode.
  bool cluster() const { return cluster_; }

  void start();
  // Waits for pending replies, then disconnects; `done` runs once. Redis gets
  // connect_timeout_ms to answer; after that the connection is dropped (pending
  // callbacks get nullptr), so a hung Redis cannot hold the stop.
  void stop(std::function<void()> done);

  bool up() const { return state_ == RedisState::Up; }
  RedisState state() const { return state_; }
  uint64_t reconnects() const { return reconnects_; }
  std::size_t pending() const { return pending_; }

  bool command(std::initializer_list<std::string_view> args, Callback done);
  bool command(const std::vector<std::string_view>& args, Callback done);
  // FCALL of a function of a loaded library; "Function not found" (the node lost its
  // libraries) reconnects, which loads them again, and the call is reported lost.
  bool fcall(std::string_view function, const std::vector<std::string_view>& keys,
             const std::vector<std::string_view>& args, Callback done);

 private:
  static void on_connect(const redisAsyncContext* ac, int status);
  static void on_disconnect(const redisAsyncContext* ac, int status);
  static void on_reply(redisAsyncContext* ac, void* reply, void* privdata);
  static void on_connect_timer(uv_timer_t* handle);
  static void on_reconnect_timer(uv_timer_t* handle);
  static void on_ping_timer(uv_timer_t* handle);
  static void on_close_timer(uv_timer_t* handle);

  void connect();
  void handshake();
  void finish_handshake();
  void library_ready();
  void send_ready_ping();
  // Logs a failed handshake step and disconnects (a reconnect follows); false if `r` is fine.
  bool handshake_failed(const redisReply* r, const char* what);
  // A NOPERM reply once up: logs it, naming the command and the user, and reconnects.
  void refused(std::string_view command, std::string_view error);
  std::string user() const;  // the ACL user eventd logs in as ("default" when none)
  void lost(const std::string& reason);
  void schedule_reconnect();
  void drop_context(const std::string& reason);
  void free_context();
  void close_gracefully();
  void finish_stop();
  bool send(const std::vector<std::string_view>& args, Callback done, bool handshake_ok = false);
  // Writes what is buffered now instead of at the socket's next writable event.
  void write_now();

  uv_loop_t* loop_;
  NodeAddress node_;
  const RedisConfig& config_;
  Handlers handlers_;
  const std::vector<Library>& libraries_;
  bool cluster_ = false;
  std::size_t libraries_waiting_ = 0;  // handshake: libraries not yet known to be loaded
  redisAsyncContext* ac_ = nullptr;  // not owned: hiredis frees it after on_disconnect
  RedisState state_ = RedisState::Closed;
  bool stopping_ = false;
  bool ping_outstanding_ = false;
  bool refused_ = false;  // a NOPERM since the last command that went through
  uint64_t ping_sent_ms_ = 0;
  std::size_t pending_ = 0;
  std::string request_;  // send()'s encoding buffer, reused
  uint64_t reconnects_ = 0;
  Backoff backoff_;
  std::function<void()> stop_done_;
  UvHandle<uv_timer_t> connect_timer_;
  UvHandle<uv_timer_t> reconnect_timer_;
  UvHandle<uv_timer_t> ping_timer_;
  UvHandle<uv_timer_t> close_timer_;  // deadline for the replies a disconnect waits for
};

}  // namespace redis
}  // namespace eventd
