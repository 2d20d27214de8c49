// One Redis node connection (see connection.hpp for the ownership contract).
#include "eventd/redis/connection.hpp"

#include <hiredis/hiredis.h>

#include <memory>

#include "eventd/log.hpp"
#include "eventd/redis/resp.hpp"

namespace eventd::redis {
namespace {

constexpr uint64_t kPingIntervalMs = 1000;

struct PendingCall {
  Connection::Callback done;
  Connection* client;
  char command[48];  // for a refusal's log line: "FCALL eventd_..._quote", "SET"
};

// The command and, for the ones Redis' ACL splits or that name a function, its first
// argument; cut to fit `out`.
void command_name(const std::vector<std::string_view>& args, char (&out)[48]) {
  std::size_t n = 0;
  auto put = [&](std::string_view s) {
    for (const char c : s) {
      if (n + 1 >= sizeof out) break;
      out[n++] = c;
    }
  };
  if (!args.empty()) put(args[0]);
  if (args.size() > 1 && (args[0] == "FCALL" || args[0] == "FUNCTION" || args[0] == "CLUSTER")) {
    put(" ");
    put(args[1]);
  }
  out[n] = '\0';
}

// hiredis's event-loop glue for libuv. Debian's hiredis 0.14 ships one in
// <hiredis/adapters/libuv.h>, but it drops poll errors: a refused connect then never
// completes. This one hands an error to hiredis as a read or write event, so hiredis
// finds the socket error itself and reports it through the usual callbacks.
struct LoopEvents {
  redisAsyncContext* context;
  uv_poll_t handle;
  int events;
};

void loop_events_poll(uv_poll_t* handle, int status, int events) {
  auto* ev = static_cast<LoopEvents*>(handle->data);
  if (ev->context == nullptr) return;
  if (status < 0) {
    // libuv stopped the poll; let hiredis run into the error and tear down.
    if (!(ev->context->c.flags & REDIS_CONNECTED)) redisAsyncHandleWrite(ev->context);
    else redisAsyncHandleRead(ev->context);
    return;
  }
  if (events & UV_READABLE) redisAsyncHandleRead(ev->context);
  if (ev->context != nullptr && (events & UV_WRITABLE)) redisAsyncHandleWrite(ev->context);
}

void loop_events_update(void* privdata, int add, int del) {
  auto* ev = static_cast<LoopEvents*>(privdata);
  const int events = (ev->events | add) & ~del;
  // hiredis asks for writes and reads around every command; restarting the poll
  // with the same mask would cost an epoll_ctl round each time.
  if (events == ev->events && uv_is_active(reinterpret_cast<uv_handle_t*>(&ev->handle))) return;
  ev->events = events;
  if (ev->events != 0) uv_poll_start(&ev->handle, ev->events, loop_events_poll);
  else uv_poll_stop(&ev->handle);
}

void loop_events_cleanup(void* privdata) {
  auto* ev = static_cast<LoopEvents*>(privdata);
  ev->context = nullptr;  // hiredis is freeing the context
  uv_close(reinterpret_cast<uv_handle_t*>(&ev->handle), [](uv_handle_t* h) {
    std::unique_ptr<LoopEvents> owned(static_cast<LoopEvents*>(h->data));
  });
}

bool attach_to_loop(redisAsyncContext* ac, uv_loop_t* loop) {
  if (ac->ev.data != nullptr) return false;
  auto ev = std::make_unique<LoopEvents>();
  ev->context = ac;
  ev->events = 0;
  if (uv_poll_init(loop, &ev->handle, ac->c.fd) != 0) return false;
  ev->handle.data = ev.get();
  ac->ev.addRead = [](void* p) { loop_events_update(p, UV_READABLE, 0); };
  ac->ev.delRead = [](void* p) { loop_events_update(p, 0, UV_READABLE); };
  ac->ev.addWrite = [](void* p) { loop_events_update(p, UV_WRITABLE, 0); };
  ac->ev.delWrite = [](void* p) { loop_events_update(p, 0, UV_WRITABLE); };
  ac->ev.cleanup = loop_events_cleanup;
  ac->ev.data = ev.release();  // freed by loop_events_cleanup's close callback
  return true;
}

// A stop closes the timers, possibly from a callback nested below a caller that
// still means to touch them: act only on live handles.
void start_timer(UvHandle<uv_timer_t>& timer, uv_timer_cb cb, uint64_t timeout_ms, uint64_t repeat_ms) {
  if (timer.initialised()) uv_timer_start(timer.get(), cb, timeout_ms, repeat_ms);
}

void stop_timer(UvHandle<uv_timer_t>& timer) {
  if (timer.initialised()) uv_timer_stop(timer.get());
}

// An ACL refusal: NOPERM for the command or its keys, or, for a command a script or
// function runs, "ERR The user executing the script can't ...", also as an element of
// a batch's reply. The text of the first one, or empty.
std::string_view acl_refusal(const redisReply* r) {
  if (r == nullptr) return {};
  if (r->type == REDIS_REPLY_ERROR) {
    const std::string_view e(r->str, r->len);
    if (e.starts_with("NOPERM") || e.find("The user executing the script can't") != std::string_view::npos) return e;
    return {};
  }
  if (r->type == REDIS_REPLY_ARRAY) {
    for (std::size_t i = 0; i < r->elements; ++i) {
      const redisReply* e = r->element[i];
      if (e != nullptr && e->type == REDIS_REPLY_ERROR) {
        if (auto refusal = acl_refusal(e); !refusal.empty()) return refusal;
      }
    }
  }
  return {};
}

std::string reply_error(const redisReply* r) {
  if (r == nullptr) return "no reply (connection lost)";
  if (r->type == REDIS_REPLY_ERROR) return std::string(r->str, r->len);
  return {};
}

}  // namespace

Connection::Connection(uv_loop_t* loop, NodeAddress node, const RedisConfig& config,
                       const std::vector<Library>& libraries, Handlers handlers)
    : loop_(loop), node_(std::move(node)), config_(config), handlers_(std::move(handlers)), libraries_(libraries) {
  connect_timer_.init(this, [loop](uv_timer_t* t) { return uv_timer_init(loop, t); });
  reconnect_timer_.init(this, [loop](uv_timer_t* t) { return uv_timer_init(loop, t); });
  ping_timer_.init(this, [loop](uv_timer_t* t) { return uv_timer_init(loop, t); });
  close_timer_.init(this, [loop](uv_timer_t* t) { return uv_timer_init(loop, t); });
}

Connection::~Connection() {
  if (ac_ != nullptr) {
    ac_->data = nullptr;
    redisAsyncFree(ac_);  // runs pending callbacks with nullptr; owner pointers stay valid until then
    ac_ = nullptr;
  }
}

void Connection::start() {
  stopping_ = false;
  if (state_ == RedisState::Closed) connect();
}

void Connection::connect() {
  redisAsyncContext* ac = node_.unix_path.empty() ? redisAsyncConnect(node_.host.c_str(), node_.port)
                                                  : redisAsyncConnectUnix(node_.unix_path.c_str());
  if (ac == nullptr || ac->err != 0) {
    std::string why = ac != nullptr ? ac->errstr : "out of memory";
    if (ac != nullptr) redisAsyncFree(ac);
    log::warn("redis connect failed", {{"error", why}, {"node", node_.text()}});
    schedule_reconnect();
    return;
  }
  if (!attach_to_loop(ac, loop_)) {
    redisAsyncFree(ac);
    log::error("cannot attach redis to the loop");
    schedule_reconnect();
    return;
  }
  ac->data = this;
  redisAsyncSetConnectCallback(ac, on_connect);
  redisAsyncSetDisconnectCallback(ac, on_disconnect);
  ac_ = ac;
  state_ = RedisState::Connecting;
  start_timer(connect_timer_, on_connect_timer, config_.connect_timeout_ms, 0);
}

void Connection::on_connect_timer(uv_timer_t* handle) {
  auto* self = owner_of<Connection>(handle);
  if (self == nullptr || self->ac_ == nullptr) return;
  if (self->state_ == RedisState::Connecting || self->state_ == RedisState::Handshake) {
    self->drop_context("connect timed out after " + std::to_string(self->config_.connect_timeout_ms) + " ms");
  }
}

// Frees the context now, from outside any hiredis callback (timers, stop()). Every
// pending callback gets nullptr before this returns, and may call back into us,
// stop() included: callers check stopping_ afterwards.
void Connection::free_context() {
  redisAsyncContext* ac = std::exchange(ac_, nullptr);
  if (ac == nullptr) return;
  ac->data = nullptr;  // on_disconnect (if hiredis calls it) must not touch us
  redisAsyncFree(ac);
}

// Gives up on the connection (timers only).
void Connection::drop_context(const std::string& reason) {
  const bool was_connected = state_ != RedisState::Connecting;
  free_context();
  if (stopping_) {
    // stop() waited for this context, or a pending callback just called stop(),
    // which found no context and finished already (then this does nothing).
    finish_stop();
    return;
  }
  if (was_connected) lost(reason);
  else {
    state_ = RedisState::Closed;
    log::warn("redis connect failed", {{"error", reason}, {"node", node_.text()}});
    schedule_reconnect();
  }
}

// Disconnects once the pending replies are in, but waits for them only
// connect_timeout_ms: a hung Redis (CLIENT PAUSE, a partition) would otherwise keep
// the context, and the stop or the reconnect, waiting forever.
void Connection::close_gracefully() {
  if (state_ == RedisState::Closing || ac_ == nullptr) return;  // already on its way, deadline armed
  state_ = RedisState::Closing;
  stop_timer(connect_timer_);
  stop_timer(ping_timer_);
  start_timer(close_timer_, on_close_timer, config_.connect_timeout_ms, 0);
  redisAsyncDisconnect(ac_);  // on_disconnect (maybe right now) or on_close_timer follows
}

void Connection::on_close_timer(uv_timer_t* handle) {
  auto* self = owner_of<Connection>(handle);
  if (self == nullptr || self->ac_ == nullptr || self->state_ != RedisState::Closing) return;
  std::string why = "no reply within " + std::to_string(self->config_.connect_timeout_ms) + " ms while closing";
  log::warn("redis did not answer; dropping the connection", {{"error", why}, {"node", self->node_.text()}});
  self->drop_context(why);
}

void Connection::finish_stop() {
  state_ = RedisState::Closed;
  connect_timer_.close();
  reconnect_timer_.close();
  ping_timer_.close();
  close_timer_.close();
  if (stop_done_) std::exchange(stop_done_, nullptr)();
}

void Connection::on_connect(const redisAsyncContext* ac, int status) {
  auto* self = static_cast<Connection*>(ac->data);
  if (self == nullptr) return;
  if (status != REDIS_OK) {
    // hiredis frees the context after this callback.
    self->ac_ = nullptr;
    self->state_ = RedisState::Closed;
    stop_timer(self->connect_timer_);
    log::warn("redis connect failed", {{"error", ac->errstr}, {"node", self->node_.text()}});
    if (self->stopping_) return self->finish_stop();
    self->schedule_reconnect();
    return;
  }
  if (self->stopping_) {
    self->close_gracefully();  // on_disconnect completes the stop
    return;
  }
  self->state_ = RedisState::Handshake;
  self->handshake();
}

// AUTH and INFO cluster are pipelined; the rest waits for INFO's answer, since a
// cluster node has only database 0 (and refuses SELECT of any other).
void Connection::handshake() {
  if (!config_.endpoint.password.empty()) {
    std::vector<std::string_view> auth{"AUTH"};
    if (!config_.endpoint.user.empty()) auth.push_back(config_.endpoint.user);
    auth.push_back(config_.endpoint.password);
    send(auth, [this](const redisReply* r) { handshake_failed(r, "AUTH"); }, true);
  }
  send({"INFO", "cluster"},
       [this](const redisReply* r) {
         if (handshake_failed(r, "INFO cluster") || state_ != RedisState::Handshake) return;
         cluster_ = r->type == REDIS_REPLY_STRING && info_says_cluster(std::string_view(r->str, r->len));
         if (cluster_ && config_.endpoint.db != 0) {
           log::error("redis handshake failed",
                      {{"step", "SELECT"}, {"node", node_.text()},
                       {"error", "a Redis Cluster has only database 0; drop /" + std::to_string(config_.endpoint.db) +
                                     " from the Redis URL"}});
           if (ac_ != nullptr) redisAsyncDisconnect(ac_);
           return;
         }
         finish_handshake();
       },
       true);
}

std::string Connection::user() const { return config_.endpoint.user.empty() ? "default" : config_.endpoint.user; }

bool Connection::handshake_failed(const redisReply* r, const char* what) {
  std::string err = reply_error(r);
  if (err.empty()) return false;
  if (r != nullptr && state_ == RedisState::Handshake && ac_ != nullptr) {
    log::error("redis handshake failed", {{"step", what}, {"node", node_.text()}, {"user", user()}, {"error", err}});
    redisAsyncDisconnect(ac_);  // reconnect with backoff; a wrong password keeps being logged
  }
  return true;
}

// SELECT (standalone only) and the library checks are pipelined; a PING behind them marks us up.
void Connection::finish_handshake() {
  if (!cluster_) {
    std::string db = std::to_string(config_.endpoint.db);
    send({"SELECT", db}, [this](const redisReply* r) { handshake_failed(r, "SELECT"); }, true);
  }
  // FUNCTION LIST (a read) first and LOAD only what is missing: a connect writes
  // nothing in the usual case, and comes up while Redis refuses writes (CLIENT PAUSE
  // WRITE, a replica being promoted) as long as the libraries are there.
  libraries_waiting_ = libraries_.size();
  if (libraries_waiting_ == 0) return send_ready_ping();
  for (const Library& library : libraries_) {
    send({"FUNCTION", "LIST", "LIBRARYNAME", library.name},
         [this, &library](const redisReply* r) {
           if (handshake_failed(r, "FUNCTION LIST") || state_ != RedisState::Handshake) return;
           if (r->type == REDIS_REPLY_ARRAY && r->elements > 0) return library_ready();
           send({"FUNCTION", "LOAD", library.code},
                [this](const redisReply* loaded) {
                  // Another connection or instance may have loaded it meanwhile: the name says it is this code.
                  const bool exists = loaded != nullptr && loaded->type == REDIS_REPLY_ERROR &&
                                      std::string_view(loaded->str, loaded->len).find("already exists") !=
                                          std::string_view::npos;
                  if (!exists && handshake_failed(loaded, "FUNCTION LOAD")) return;
                  if (state_ == RedisState::Handshake) library_ready();
                },
                true);
         },
         true);
  }
}

void Connection::library_ready() {
  if (--libraries_waiting_ == 0) send_ready_ping();
}

// The PING behind every handshake step: its answer marks the connection up.
void Connection::send_ready_ping() {
  send({"PING"},
       [this](const redisReply* r) {
         if (r == nullptr || r->type == REDIS_REPLY_ERROR || state_ != RedisState::Handshake) return;
         stop_timer(connect_timer_);
         state_ = RedisState::Up;
         if (!refused_) backoff_.reset();  // a refusal would come back at once: keep backing off
         ping_outstanding_ = false;
         start_timer(ping_timer_, on_ping_timer, kPingIntervalMs, kPingIntervalMs);
         log::info("redis connected", {{"node", node_.text()}, {"host", node_.host}, {"port", node_.port},
                                       {"cluster", cluster_},
                                       {"db", cluster_ ? 0 : config_.endpoint.db}});
         if (handlers_.on_up) handlers_.on_up();
       },
       true);
}

void Connection::on_ping_timer(uv_timer_t* handle) {
  auto* self = owner_of<Connection>(handle);
  if (self == nullptr || self->state_ != RedisState::Up || self->ac_ == nullptr) return;
  uint64_t now = uv_now(self->loop_);
  if (self->ping_outstanding_) {
    // Redis accepted the connection but stopped answering (stopped process, full
    // network buffers): give up on it rather than wait forever.
    if (now - self->ping_sent_ms_ > self->config_.connect_timeout_ms) {
      self->drop_context("no reply to PING for " + std::to_string(now - self->ping_sent_ms_) + " ms");
    }
    return;
  }
  self->ping_outstanding_ = true;
  self->ping_sent_ms_ = now;
  self->send({"PING"}, [self](const redisReply*) { self->ping_outstanding_ = false; });
}

void Connection::on_disconnect(const redisAsyncContext* ac, int status) {
  auto* self = static_cast<Connection*>(ac->data);
  if (self == nullptr) return;
  // hiredis frees the context after this callback returns.
  self->ac_ = nullptr;
  stop_timer(self->close_timer_);
  std::string reason = status == REDIS_OK ? "disconnected" : (ac->errstr[0] ? ac->errstr : "connection lost");
  if (self->stopping_) return self->finish_stop();
  self->lost(reason);
}

void Connection::lost(const std::string& reason) {
  state_ = RedisState::Closed;
  stop_timer(ping_timer_);
  stop_timer(connect_timer_);
  stop_timer(close_timer_);
  log::warn("redis connection lost", {{"reason", reason}, {"node", node_.text()}});
  if (handlers_.on_down) handlers_.on_down(reason);
  schedule_reconnect();
}

void Connection::schedule_reconnect() {
  if (stopping_) return;
  uint32_t delay = backoff_.next();
  ++reconnects_;
  start_timer(reconnect_timer_, on_reconnect_timer, delay, 0);
}

void Connection::on_reconnect_timer(uv_timer_t* handle) {
  auto* self = owner_of<Connection>(handle);
  if (self == nullptr || self->stopping_ || self->state_ != RedisState::Closed) return;
  self->connect();
}

void Connection::stop(std::function<void()> done) {
  stopping_ = true;
  stop_done_ = std::move(done);
  stop_timer(reconnect_timer_);
  stop_timer(ping_timer_);
  // Not connected yet: nothing to flush, drop the attempt (no callbacks pending).
  if (state_ == RedisState::Connecting) free_context();
  if (ac_ == nullptr) return finish_stop();
  close_gracefully();  // after pending replies (or the deadline), the stop completes
}

void Connection::on_reply(redisAsyncContext* /*ac*/, void* reply, void* privdata) {
  std::unique_ptr<PendingCall> call(static_cast<PendingCall*>(privdata));
  Connection* self = call->client;
  --self->pending_;
  const auto* r = static_cast<const redisReply*>(reply);
  if (self->state_ == RedisState::Up || self->state_ == RedisState::Closing) {
    if (const std::string_view refusal = acl_refusal(r); !refusal.empty()) {
      // The first one says it; those pipelined behind it go the same way. What a batch
      // did record is found by its idempotency keys when it runs again.
      if (self->state_ == RedisState::Up) self->refused(call->command, refusal);
      call->done(nullptr);  // not done: the caller holds the message, as while Redis is down
      return;
    }
  }
  if (self->refused_ && r != nullptr && r->type != REDIS_REPLY_ERROR && self->state_ == RedisState::Up &&
      std::string_view(call->command) != "PING") {
    self->refused_ = false;  // the rights are back
  }
  call->done(r);
}

// The ACL refuses what eventd needs: nothing it does can be recorded. Said in one line,
// then the connection goes down and comes back with backoff, as for a lost Redis: the
// consumers stop, nothing is acked, and the messages held run once the rights are there.
void Connection::refused(std::string_view command, std::string_view error) {
  log::error("redis refused a command", {{"command", command}, {"user", user()}, {"node", node_.text()},
                                         {"error", error}});
  refused_ = true;
  if (ac_ != nullptr) close_gracefully();
}

bool Connection::send(const std::vector<std::string_view>& args, Callback done, bool handshake_ok) {
  if (ac_ == nullptr) return false;
  if (!(state_ == RedisState::Up || (handshake_ok && state_ == RedisState::Handshake))) return false;
  auto call = std::make_unique<PendingCall>(PendingCall{std::move(done), this, {}});
  command_name(args, call->command);
  // Encoded here into a buffer kept between calls (hiredis copies it into its output
  // buffer): no allocation per command once the buffer has grown.
  request_.clear();
  append_command(request_, args);
  const int rc = redisAsyncFormattedCommand(ac_, on_reply, call.get(), request_.data(), request_.size());
  constexpr std::size_t kKeptBytes = 1 << 20;  // a rare huge command's buffer is not kept
  if (request_.capacity() > kKeptBytes) std::string().swap(request_);
  if (rc != REDIS_OK) return false;
  (void)call.release();  // reclaimed in on_reply, which hiredis calls exactly once
  ++pending_;
  return true;
}

bool Connection::command(std::initializer_list<std::string_view> args, Callback done) {
  return send(std::vector<std::string_view>(args), std::move(done));
}

bool Connection::command(const std::vector<std::string_view>& args, Callback done) {
  return send(args, std::move(done));
}

bool Connection::fcall(std::string_view function, const std::vector<std::string_view>& keys,
                       const std::vector<std::string_view>& args, Callback done) {
  std::string numkeys = std::to_string(keys.size());
  std::vector<std::string_view> argv;
  argv.reserve(3 + keys.size() + args.size());
  argv.push_back("FCALL");
  argv.push_back(function);
  argv.push_back(numkeys);
  argv.insert(argv.end(), keys.begin(), keys.end());
  argv.insert(argv.end(), args.begin(), args.end());
  const bool sent = send(argv, [this, done = std::move(done)](const redisReply* r) {
    if (r != nullptr && r->type == REDIS_REPLY_ERROR &&
        std::string_view(r->str, r->len).starts_with("ERR Function not found")) {
      if (state_ == RedisState::Up && ac_ != nullptr) {
        log::warn("redis lost its functions; reconnecting to load them again", {{"node", node_.text()}});
        close_gracefully();
      }
      done(nullptr);
      return;
    }
    done(r);
  });
  // A function call is a batch (or a lone message): on its way at once, so Redis runs
  // it while the loop goes on reading deliveries, instead of after all of them.
  if (sent) write_now();
  return sent;
}

void Connection::write_now() {
  if (ac_ == nullptr || ac_->c.err != 0) return;
  // The context's own buffered write (hiredis' async write without its teardown on
  // failure): an error stays in the context, and the writable event that is still
  // armed reports it through hiredis as usual.
  int done = 0;
  if (redisBufferWrite(&ac_->c, &done) == REDIS_OK && done != 0 && ac_->ev.delWrite != nullptr) {
    ac_->ev.delWrite(ac_->ev.data);
  }
}

}  // namespace eventd::redis
