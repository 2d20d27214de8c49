// Daemon wiring and lifecycle (see daemon.hpp).
#include "eventd/daemon.hpp"

#include <curl/curl.h>
#include <systemd/sd-daemon.h>
#include <uv.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <memory>

#include "eventd/amqp_connection.hpp"
#include "eventd/dispatcher.hpp"
#include "eventd/handlers/alert_triggered.hpp"
#include "eventd/handlers/analysis.hpp"
#include "eventd/handlers/notification.hpp"
#include "eventd/handlers/quote_update.hpp"
#include "eventd/http_server.hpp"
#include "eventd/log.hpp"
#include "eventd/metrics.hpp"
#include "eventd/portfolio_checks.hpp"
#include "eventd/redis_client.hpp"
#include "eventd/schema_registry.hpp"
#include "eventd/topology.hpp"
#include "eventd/uv_handle.hpp"

namespace eventd {
namespace {

class Daemon {
 public:
  Daemon(uv_loop_t* loop, const Config& config, std::string_view allocator)
      : loop_(loop),
        config_(config),
        allocator_(allocator),
        redis_(loop, config.redis, {[this] { on_redis_up(); }, [this](const std::string&) { on_redis_down(); }}),
        amqp_(loop, config, build_topology(config),
              {[this] { on_amqp_connected(); }, [this](Delivery&& d) { dispatcher_.on_delivery(std::move(d)); },
               [this](const std::string&) { on_amqp_lost(); }}),
        dispatcher_(loop, config, amqp_, redis_, schemas_, metrics_),
        checks_(loop, config, amqp_, redis_, schemas_, metrics_),
        http_(loop, [this](std::string_view method, std::string_view path) { return serve(method, path); }) {
    dispatcher_.register_handler("quote_update", std::make_unique<QuoteUpdateHandler>(loop, redis_, config));
    dispatcher_.register_handler("alert_triggered", std::make_unique<AlertTriggeredHandler>(loop, redis_, config));
    dispatcher_.register_handler("analysis_request", std::make_unique<AnalysisRequestHandler>(loop, redis_, config));
    dispatcher_.register_handler("analysis_complete", std::make_unique<AnalysisCompleteHandler>(loop, redis_, config));
    auto notifications = std::make_unique<NotificationHandler>(loop, redis_, config);
    notifications_ = notifications.get();  // owned by the dispatcher, which outlives every use here
    dispatcher_.register_handler("notification", std::move(notifications));
    dispatcher_.on_idle = [this] {
      if (draining_ && checks_.in_flight() == 0) finish_drain();
    };
    checks_.on_idle = [this] {
      if (draining_ && dispatcher_.in_flight() == 0) finish_drain();
    };
    sigterm_.init(this, [loop](uv_signal_t* s) { return uv_signal_init(loop, s); });
    sigint_.init(this, [loop](uv_signal_t* s) { return uv_signal_init(loop, s); });
    drain_timer_.init(this, [loop](uv_timer_t* t) { return uv_timer_init(loop, t); });
    shutdown_timer_.init(this, [loop](uv_timer_t* t) { return uv_timer_init(loop, t); });
    state_timer_.init(this, [loop](uv_timer_t* t) { return uv_timer_init(loop, t); });
  }

  // false when the daemon cannot run (the reason is logged).
  bool start() {
    if (config_.http.enabled) {
      if (int rc = http_.listen(config_.http.host, config_.http.port); rc != 0) {
        log::error("cannot listen for HTTP", {{"host", config_.http.host}, {"port", config_.http.port},
                                               {"error", uv_strerror(rc)}});
        close_handles();
        return false;
      }
    }
    uv_signal_start(sigterm_.get(), on_signal, SIGTERM);
    uv_signal_start(sigint_.get(), on_signal, SIGINT);
    uint64_t watchdog_usec = 0;
    uint64_t tick = 500;
    if (sd_watchdog_enabled(0, &watchdog_usec) > 0 && watchdog_usec > 0) {
      tick = std::max<uint64_t>(watchdog_usec / 1000 / 3, 100);
      watchdog_ = true;
    }
    uv_timer_start(state_timer_.get(), on_state_timer, tick, tick);
    std::string amqp_nodes;
    for (const auto& ep : config_.amqp.endpoints) amqp_nodes += (amqp_nodes.empty() ? "" : ",") + ep.node();
    log::info("eventd starting", {{"version", EVENTD_VERSION}, {"amqp_nodes", amqp_nodes},
                                  {"vhost", config_.amqp.endpoint().vhost},
                                  {"redis_host", config_.redis.endpoint.nodes.front().host},
                                  {"redis_port", config_.redis.endpoint.nodes.front().port},
                                  {"redis_nodes", static_cast<uint64_t>(config_.redis.endpoint.nodes.size())},
                                  // where the passwords came from, never what they are
                                  {"amqp_password", config_.credentials.amqp_password_from},
                                  {"redis_password", config_.credentials.redis_password_from},
                                  {"allocator", allocator_}});
    redis_.start();
    amqp_.start();
    checks_.start();
    return true;
  }

 private:
  HttpServer::Response serve(std::string_view method, std::string_view path) {
    if (method != "GET" && method != "HEAD") return {405, "text/plain; charset=utf-8", "only GET\n"};
    if (path == "/metrics") {
      refresh_metrics();
      return {200, "text/plain; version=0.0.4; charset=utf-8", metrics_.render()};
    }
    if (path == "/healthz") return {200, "text/plain; charset=utf-8", "ok\n"};
    if (path == "/readyz") {
      std::string why;
      if (draining_) why += "shutting down\n";
      if (amqp_.state() != AmqpState::Connected) why += "amqp: not connected\n";
      if (!redis_.up()) why += "redis: not connected\n";
      if (why.empty() && !amqp_.consuming()) why += "amqp: consumers not active\n";
      if (why.empty()) return {200, "text/plain; charset=utf-8", "ready\n"};
      return {503, "text/plain; charset=utf-8", why};
    }
    return {404, "text/plain; charset=utf-8", "not found; try /metrics, /healthz, /readyz\n"};
  }

  void refresh_metrics() {
    metrics_.consuming = amqp_.consuming();
    metrics_.amqp_up = amqp_.state() == AmqpState::Connected;
    metrics_.redis_up = redis_.up();
    const AmqpEndpoint* connected = amqp_.connected_node();
    metrics_.amqp_nodes.clear();
    for (const auto& node : amqp_.nodes()) metrics_.amqp_nodes.emplace_back(node.node(), &node == connected);
    metrics_.amqp_reconnects = amqp_.reconnects();
    metrics_.redis_reconnects = redis_.reconnects();
    metrics_.redis_nodes = redis_.nodes_known();
    metrics_.redis_nodes_up = redis_.nodes_up();
    metrics_.sink_circuits = notifications_->circuit_states(static_cast<int64_t>(uv_now(loop_)));
  }

  void close_handles() {
    http_.close();
    sigterm_.close();
    sigint_.close();
    drain_timer_.close();
    shutdown_timer_.close();
    state_timer_.close();
  }

  static void on_signal(uv_signal_t* handle, int signum) {
    auto* self = owner_of<Daemon>(handle);
    if (self == nullptr) return;
    if (self->draining_) {
      log::warn("second signal: exiting now", {{"signal", signum}});
      std::_Exit(128 + signum);
    }
    log::info("shutting down", {{"signal", signum}, {"in_flight", static_cast<uint64_t>(self->dispatcher_.in_flight())}});
    self->begin_drain();
  }

  // Consume only while Redis is up: nothing is acked that was not recorded.
  void update_consuming() {
    bool want = redis_.up() && !draining_;
    if (want) amqp_.consume();
    else amqp_.cancel();
  }

  void on_redis_up() {
    metrics_.redis_up = true;
    dispatcher_.resume_parked();
    update_consuming();
    checks_.poke();
  }

  void on_redis_down() {
    metrics_.redis_up = false;
    log::warn("redis unavailable: consumption paused");
    update_consuming();
  }

  void on_amqp_connected() {
    metrics_.amqp_up = true;
    update_consuming();
    checks_.poke();
  }

  void on_amqp_lost() {
    metrics_.amqp_up = false;
    metrics_.consuming = false;
    dispatcher_.on_amqp_lost();
    if (draining_ && dispatcher_.in_flight() == 0 && checks_.in_flight() == 0) finish_drain();
  }

  static void on_state_timer(uv_timer_t* handle) {
    auto* self = owner_of<Daemon>(handle);
    if (self == nullptr) return;
    bool consuming = self->amqp_.consuming();
    if (consuming && !self->ready_announced_) {
      self->ready_announced_ = true;
      sd_notify(0, "READY=1");
      log::info("ready", {{"queues", static_cast<uint64_t>(build_topology(self->config_).consumed.size())}});
    }
    self->refresh_metrics();
    if (self->watchdog_) sd_notify(0, "WATCHDOG=1");
  }

  void begin_drain() {
    draining_ = true;
    acks_at_drain_ = amqp_.acks_sent();
    sd_notify(0, "STOPPING=1");
    amqp_.cancel();
    uv_timer_start(drain_timer_.get(), on_drain_timeout, config_.shutdown_drain_ms, 0);
    uv_timer_start(shutdown_timer_.get(), on_shutdown_deadline, shutdown_deadline_ms(), 0);
    // With nothing in flight, stopping the checks may finish the drain (and close every
    // handle) right here, through checks_.on_idle: nothing may follow that touches them.
    checks_.stop();
    if (!closing_ && dispatcher_.in_flight() == 0 && checks_.in_flight() == 0) finish_drain();
  }

  // The drain, the ack settling and each connection's own close deadline, plus
  // slack: only a close that ignores its deadline can reach it.
  uint64_t shutdown_deadline_ms() const {
    uint64_t amqp_close = std::max<uint64_t>(kAmqpCloseMs, config_.amqp.connect_timeout_ms);
    return uint64_t{config_.shutdown_drain_ms} + kAckSettleMs + amqp_close + config_.redis.connect_timeout_ms +
           kShutdownSlackMs;
  }

  // Backstop: SIGTERM ends the process in bounded time whatever hangs. Unacked
  // messages go back to the broker when the process exits.
  static void on_shutdown_deadline(uv_timer_t* handle) {
    auto* self = owner_of<Daemon>(handle);
    if (self == nullptr) return;
    log::error("shutdown deadline reached; exiting without a clean close",
               {{"deadline_ms", self->shutdown_deadline_ms()},
                {"in_flight", static_cast<uint64_t>(self->dispatcher_.in_flight())}});
    std::_Exit(1);
  }

  static void on_drain_timeout(uv_timer_t* handle) {
    auto* self = owner_of<Daemon>(handle);
    if (self == nullptr) return;
    log::warn("drain deadline reached; unacked messages return to the broker",
              {{"in_flight", static_cast<uint64_t>(self->dispatcher_.in_flight())},
               {"portfolio_checks", static_cast<uint64_t>(self->checks_.in_flight())}});
    self->finish_drain();
  }

  void finish_drain() {
    if (closing_) return;
    closing_ = true;
    uv_timer_stop(drain_timer_.get());
    if (amqp_.acks_sent() > acks_at_drain_ && amqp_.state() == AmqpState::Connected) {
      // Quorum queues can lose acks sent after basic.cancel if the connection closes
      // right behind them (rabbitmq-server#10327): the messages come back and count
      // against the delivery limit. Give the broker a moment to settle them.
      uv_timer_start(drain_timer_.get(), [](uv_timer_t* t) {
        if (auto* self = owner_of<Daemon>(t)) self->close_connections();
      }, kAckSettleMs, 0);
      return;
    }
    close_connections();
  }

  void close_connections() {
    amqp_.stop([this] {
      redis_.stop([this] {
        close_handles();
        log::info("stopped");
      });
    });
  }

  uv_loop_t* loop_;
  const Config& config_;
  std::string allocator_;
  SchemaRegistry schemas_;
  Metrics metrics_;
  RedisClient redis_;
  AmqpConnection amqp_;
  Dispatcher dispatcher_;
  PortfolioChecks checks_;  // after the connections: destroyed before them
  NotificationHandler* notifications_ = nullptr;  // observer: for the breaker metrics
  HttpServer http_;
  static constexpr uint64_t kAckSettleMs = 500;
  static constexpr uint64_t kAmqpCloseMs = 2000;      // AmqpConnection's wait for close-ok
  static constexpr uint64_t kShutdownSlackMs = 2000;
  uint64_t acks_at_drain_ = 0;
  bool draining_ = false;
  bool closing_ = false;
  bool ready_announced_ = false;
  bool watchdog_ = false;
  UvHandle<uv_signal_t> sigterm_;
  UvHandle<uv_signal_t> sigint_;
  UvHandle<uv_timer_t> drain_timer_;
  UvHandle<uv_timer_t> shutdown_timer_;  // overall deadline from the first signal
  UvHandle<uv_timer_t> state_timer_;
};

}  // namespace

int run_daemon(const Config& config, std::string_view allocator) {
  std::signal(SIGPIPE, SIG_IGN);  // a dead peer is an error return, not a signal
  curl_global_init(CURL_GLOBAL_DEFAULT);
  log::set_level(config.log_level);
  uv_loop_t loop;
  if (int rc = uv_loop_init(&loop); rc != 0) {
    log::error("cannot create event loop", {{"error", uv_strerror(rc)}});
    return 1;
  }
  bool started = false;
  {
    Daemon daemon(&loop, config, allocator);
    started = daemon.start();
    if (started) uv_run(&loop, UV_RUN_DEFAULT);
  }
  uv_run(&loop, UV_RUN_DEFAULT);  // let the handles closed by destructors finish closing
  int rc = uv_loop_close(&loop);
  if (!started) return 1;
  if (rc != 0) {
    log::error("event loop closed with handles still open", {{"error", uv_strerror(rc)}});
    return 1;
  }
  return 0;
}

}  // namespace eventd
