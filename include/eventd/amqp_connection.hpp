// The daemon's AMQP connection, driven from the libuv loop.
//
// Setting up (TCP connect, TLS handshake for amqps, login, channels, topology, qos,
// confirm.select) is a series of blocking RPCs, so it runs on libuv's threadpool
// (uv_queue_work). Once up, the connection belongs to the loop thread: a uv_poll on
// its socket reads frames without blocking (rabbitmq-c with a zero timeout) and
// assembles deliveries, confirms and returns; a timer keeps heartbeats flowing and
// notices a silent peer. The uv_poll fires only on socket readability, so input
// already off the socket is drained too: frames rabbitmq-c queued during set-up,
// bytes in its buffer, and records OpenSSL decrypted (SSL_pending): after every read,
// right after set-up, and over TLS once per loop pass (a uv_check), so a delivery
// never sits in a buffer until the next heartbeat. No RPC is
// made on the loop: basic.consume/cancel are sent as plain methods and their replies
// read by the frame pump. Writes (ack, publish) go straight to the socket and block
// the loop while its send buffer is full: a broker under a resource alarm announces
// that with connection.blocked first (publishes are then held, see blocked()), and
// against a peer or network that stops acknowledging, TCP_USER_TIMEOUT (twice the
// heartbeat, at least 10 s) fails the write in bounded time.
//
// On any failure the connection is torn down, every unconfirmed publish is failed,
// and a reconnect is scheduled to the next of the configured broker nodes (a short
// hop, or capped exponential backoff with jitter once every node has failed in a
// row: see node_rotation.hpp); after reconnecting, on whichever node, the topology is
// declared again and consumers resume.
#pragma once

#include <uv.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "eventd/amqp_message.hpp"
#include "eventd/config.hpp"
#include "eventd/node_rotation.hpp"
#include "eventd/topology.hpp"
#include "eventd/uv_handle.hpp"

namespace eventd {

enum class AmqpState { Closed, Connecting, Connected, Closing };

class AmqpConnection {
 public:
  struct Handlers {
    std::function<void()> on_connected;                      // channels ready, topology declared
    std::function<void(Delivery&&)> on_delivery;             // one complete message
    std::function<void(const std::string& reason)> on_disconnected;  // after pending publishes failed
  };
  // Called exactly once: ok, or why the broker did not take the message (nack,
  // unroutable with mandatory, connection lost before the confirm). An unroutable
  // message's error starts with kUnroutable.
  static constexpr std::string_view kUnroutable = "unroutable";
  // Header on every publish ("<generation>:<seq>"), so a basic.return names exactly
  // the publish it returns. eventd strips it when it copies a message.
  static constexpr std::string_view kPublishTag = "x-eventd-publish";
  using PublishDone = std::function<void(bool ok, const std::string& error)>;

  AmqpConnection(uv_loop_t* loop, const Config& config, Topology topology, Handlers handlers);
  ~AmqpConnection();
  AmqpConnection(const AmqpConnection&) = delete;
  AmqpConnection& operator=(const AmqpConnection&) = delete;

  // Starts connecting; reconnects by itself until stop().
  void start();
  // connection.close (bounded wait for close-ok), no reconnect; `done` runs once.
  void stop(std::function<void()> done);

  AmqpState state() const { return state_; }
  uint64_t generation() const { return generation_; }
  bool blocked() const { return blocked_; }
  // basic.consume acknowledged for every consumed queue.
  bool consuming() const { return state_ == AmqpState::Connected && consumers_active_ == topology_.consumed.size(); }
  uint64_t reconnects() const { return reconnects_; }
  // The configured broker nodes, in config order, and the one the open connection is
  // on (nullptr while not connected).
  const std::vector<AmqpEndpoint>& nodes() const { return endpoints_; }
  const AmqpEndpoint* connected_node() const {
    return state_ == AmqpState::Connected ? &endpoints_[rotation_.current()] : nullptr;
  }
  uint64_t acks_sent() const { return acks_sent_; }

  // Drops the connection as after a failure (pending publishes fail) and reconnects,
  // which declares the topology again; a no-op when not connected.
  void reconnect(const std::string& reason);

  // basic.consume / basic.cancel on every consumed queue; no-ops when not connected.
  void consume();
  void cancel();

  // false (and nothing sent) when `generation` is not the current connection: the
  // broker has already requeued that delivery. Acks are coalesced: once per loop
  // iteration, the completed prefix of the delivery window goes out as one
  // basic.ack with multiple=1; completions behind a message still in flight are
  // acked one by one.
  bool ack(uint64_t generation, uint64_t delivery_tag);
  bool reject(uint64_t generation, uint64_t delivery_tag, bool requeue);

  // Publishes with mandatory=true on the confirm channel. Returns false when not
  // connected; `done` is then never called. While the broker has blocked the
  // connection (resource alarm) the message is held here and sent on unblock.
  bool publish(std::string_view exchange, std::string_view routing_key, const amqp_basic_properties_t& props,
               std::string_view body, PublishDone done);
  std::size_t unconfirmed() const { return pending_.size() + held_.size(); }

 private:
  struct ConnectJob;
  struct PendingConfirm {
    uint64_t seq;
    bool returned = false;
    bool resolved = false;
    PublishDone done;
  };
  struct Held {
    std::string exchange;
    std::string routing_key;
    OwnedProperties props;
    std::string body;
    PublishDone done;
  };
  struct Inbound {
    enum class Kind { None, Delivery, Return } kind = Kind::None;
    Delivery delivery;
    std::string return_text;
    uint64_t body_size = 0;
    bool have_header = false;
  };

  static void on_work(uv_work_t* req);
  static void on_work_done(uv_work_t* req, int status);
  static void on_poll(uv_poll_t* handle, int status, int events);
  static void on_heartbeat_timer(uv_timer_t* handle);
  static void on_reconnect_timer(uv_timer_t* handle);
  static void on_close_timer(uv_timer_t* handle);
  static void on_ack_check(uv_check_t* handle);
  static void on_drain_check(uv_check_t* handle);
  void flush_acks();
  bool input_buffered() const;

  void connect();
  void adopt(amqp_connection_state_t conn);
  void pump();
  bool handle_frame(const amqp_frame_t& frame);
  bool handle_method(amqp_channel_t channel, const amqp_method_t& method);
  void finish_inbound();
  void mark_returned(const Delivery& returned);
  void resolve_confirms(uint64_t tag, bool multiple, bool ack);
  void fail(const std::string& reason);
  void teardown();
  void schedule_reconnect();
  void finish_stop();
  bool check_send(int rc, std::string_view what);
  bool send_publish(std::string_view exchange, std::string_view routing_key, const amqp_basic_properties_t& props,
                    std::string_view body, PublishDone& done);
  void release_held();

  uv_loop_t* loop_;
  std::vector<AmqpEndpoint> endpoints_;  // never empty
  uint16_t prefetch_;
  uint16_t heartbeat_sec_;             // asked for; the broker may lower it
  uint16_t negotiated_heartbeat_sec_ = 0;  // of the current connection; 0: none
  uint32_t connect_timeout_ms_;
  AmqpTlsConfig tls_config_;
  Topology topology_;
  Handlers handlers_;

  AmqpState state_ = AmqpState::Closed;
  amqp_connection_state_t conn_ = nullptr;
  uint64_t generation_ = 0;
  uint64_t reconnects_ = 0;
  uint64_t acks_sent_ = 0;
  bool stopping_ = false;
  bool tls_ = false;  // the open connection is amqps
  bool blocked_ = false;
  bool consume_requested_ = false;  // what the owner wants, across reconnects
  bool consumers_sent_ = false;     // basic.consume sent on this connection
  std::size_t consumers_active_ = 0;
  uint64_t next_seq_ = 1;
  uint64_t last_rx_ms_ = 0;
  std::deque<PendingConfirm> pending_;
  std::deque<Held> held_;  // publishes waiting for connection.unblocked

  // The delivery window of this connection, in tag order: window_[i] is tag
  // window_first_ + i.
  enum class Settle : uint8_t { InFlight, Ack, Done };
  std::deque<Settle> window_;
  uint64_t window_first_ = 1;
  std::size_t acks_waiting_ = 0;
  UvHandle<uv_check_t> ack_check_;
  UvHandle<uv_check_t> drain_check_;  // over TLS: input_buffered() once per loop pass
  Inbound inbound_;
  NodeRotation rotation_;  // which node, how long to wait
  std::function<void()> stop_done_;

  UvHandle<uv_poll_t> poll_;
  UvHandle<uv_timer_t> heartbeat_timer_;
  UvHandle<uv_timer_t> reconnect_timer_;
  UvHandle<uv_timer_t> close_timer_;
};

}  // namespace eventd
