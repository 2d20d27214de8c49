// Async Redis client on the libuv loop (hiredis + its libuv adapter), with
// reconnects, a connect timeout and a liveness check, and Lua scripts loaded on
// every connect.
//
// Ownership (hiredis's contract, restated): the redisAsyncContext is owned by
// hiredis once connected and freed by it after the disconnect callback, where our
// copy is cleared. A reply is borrowed: valid only inside the callback. Every
// callback passed to command()/eval() runs exactly once: with the reply, or with
// nullptr when the connection fails first. A call made while Redis is not up
// returns false and never calls back.
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
#include "eventd/uv_handle.hpp"

namespace eventd {

enum class RedisState { Closed, Connecting, Handshake, Up, Closing };

class RedisClient {
 public:
  using Callback = std::function<void(const redisReply* reply)>;
  struct Handlers {
    std::function<void()> on_up;                               // connected, db selected, scripts loaded
    std::function<void(const std::string& reason)> on_down;    // after every pending callback got nullptr
  };
  using ScriptId = std::size_t;

  RedisClient(uv_loop_t* loop, const RedisConfig& config, Handlers handlers);
  ~RedisClient();
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  // Register scripts before start(); they are loaded on every connect.
  ScriptId add_script(std::string source);

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
  // EVALSHA with the script's SHA; falls back to EVAL once if Redis lost its cache.
  bool eval(ScriptId script, const std::vector<std::string_view>& keys, const std::vector<std::string_view>& args,
            Callback done);

 private:
  struct Script {
    std::string source;
    std::string sha;
  };

  static void on_connect(const redisAsyncContext* ac, int status);
  static void on_disconnect(const redisAsyncContext* ac, int status);
  static void on_reply(redisAsyncContext* ac, void* reply, void* privdata);
  static void on_connect_timer(uv_timer_t* handle);
  static void on_reconnect_timer(uv_timer_t* handle);
  static void on_ping_timer(uv_timer_t* handle);
  static void on_close_timer(uv_timer_t* handle);

  void connect();
  void handshake();
  void lost(const std::string& reason);
  void schedule_reconnect();
  void drop_context(const std::string& reason);
  void free_context();
  void close_gracefully();
  void finish_stop();
  bool send(const std::vector<std::string_view>& args, Callback done, bool handshake_ok = false);

  uv_loop_t* loop_;
  RedisConfig config_;
  Handlers handlers_;
  std::vector<Script> scripts_;
  redisAsyncContext* ac_ = nullptr;  // not owned: hiredis frees it after on_disconnect
  RedisState state_ = RedisState::Closed;
  bool stopping_ = false;
  bool ping_outstanding_ = false;
  uint64_t ping_sent_ms_ = 0;
  std::size_t pending_ = 0;
  uint64_t reconnects_ = 0;
  Backoff backoff_;
  std::function<void()> stop_done_;
  UvHandle<uv_timer_t> connect_timer_;
  UvHandle<uv_timer_t> reconnect_timer_;
  UvHandle<uv_timer_t> ping_timer_;
  UvHandle<uv_timer_t> close_timer_;  // deadline for the replies a disconnect waits for
};

}  // namespace eventd
