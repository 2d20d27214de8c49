// Loop-driven AMQP connection (see amqp_connection.hpp for the threading contract).
#include "eventd/amqp_connection.hpp"

#include <amqp_tcp_socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <memory>
#include <vector>

#include "eventd/amqp_session.hpp"
#include "eventd/amqp_table.hpp"
#include "eventd/amqp_tls.hpp"
#include "eventd/log.hpp"

namespace eventd {
namespace {

constexpr std::string_view kConsumerTagPrefix = "eventd:";
constexpr uint64_t kCloseTimeoutMs = 2000;
constexpr unsigned int kMinUserTimeoutMs = 10000;

std::string consumer_tag(const std::string& queue) { return std::string(kConsumerTagPrefix) + queue; }

// A write the peer does not acknowledge fails after this long instead of blocking
// the loop (rabbitmq-c waits for a writable socket without a deadline).
void set_user_timeout(int fd, uint16_t heartbeat_sec) {
  unsigned int ms = std::max<unsigned int>(heartbeat_sec * 2000u, kMinUserTimeoutMs);
  if (setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof ms) != 0) {
    log::warn("cannot set TCP_USER_TIMEOUT on the AMQP socket", {{"error", std::strerror(errno)}});
  }
}

// Bytes the loop has not read yet: the broker is alive even if they turn out to be
// a heartbeat that rabbitmq-c consumes without handing it to us.
bool bytes_waiting(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & POLLIN) != 0;
}

std::string publish_tag(uint64_t generation, uint64_t seq) {
  return std::to_string(generation) + ":" + std::to_string(seq);
}

bool parse_publish_tag(std::string_view tag, uint64_t& generation, uint64_t& seq) {
  const char* end = tag.data() + tag.size();
  auto [colon, ec] = std::from_chars(tag.data(), end, generation);
  if (ec != std::errc() || colon == end || *colon != ':') return false;
  auto [rest, ec2] = std::from_chars(colon + 1, end, seq);
  return ec2 == std::errc() && rest == end;
}

}  // namespace

struct AmqpConnection::ConnectJob {
  uv_work_t req{};
  AmqpConnection* owner = nullptr;
  AmqpEndpoint endpoint;
  SessionOptions options;
  const Topology* topology = nullptr;  // owned by `owner`, which outlives the job
  uint16_t prefetch = 0;
  amqp_connection_state_t conn = nullptr;
  std::string error;
  std::vector<KeptArgument> kept;  // logged on the loop
};

AmqpConnection::AmqpConnection(uv_loop_t* loop, const Config& config, Topology topology, Handlers handlers)
    : loop_(loop),
      endpoints_(config.amqp.endpoints),
      prefetch_(config.amqp.prefetch),
      heartbeat_sec_(config.amqp.heartbeat_sec),
      connect_timeout_ms_(config.amqp.connect_timeout_ms),
      tls_config_(config.amqp.tls),
      topology_(std::move(topology)),
      handlers_(std::move(handlers)),
      rotation_(endpoints_.size()) {
  heartbeat_timer_.init(this, [loop](uv_timer_t* t) { return uv_timer_init(loop, t); });
  reconnect_timer_.init(this, [loop](uv_timer_t* t) { return uv_timer_init(loop, t); });
  close_timer_.init(this, [loop](uv_timer_t* t) { return uv_timer_init(loop, t); });
  ack_check_.init(this, [loop](uv_check_t* c) { return uv_check_init(loop, c); });
  drain_check_.init(this, [loop](uv_check_t* c) { return uv_check_init(loop, c); });
}

AmqpConnection::~AmqpConnection() {
  if (conn_ != nullptr) amqp_destroy_connection(conn_);
  conn_ = nullptr;
}

void AmqpConnection::start() {
  stopping_ = false;
  if (state_ == AmqpState::Closed) connect();
}

void AmqpConnection::connect() {
  state_ = AmqpState::Connecting;
  auto job = std::make_unique<ConnectJob>();
  job->owner = this;
  job->endpoint = endpoints_[rotation_.current()];
  job->options.heartbeat_sec = heartbeat_sec_;
  job->options.connect_timeout_ms = connect_timeout_ms_;
  job->options.connection_name = "eventd";
  job->options.tls = tls_config_;
  job->topology = &topology_;
  job->prefetch = prefetch_;
  job->req.data = job.get();
  int rc = uv_queue_work(loop_, &job->req, on_work, on_work_done);
  if (rc != 0) {
    log::error("cannot queue AMQP connect", {{"error", uv_strerror(rc)}});
    state_ = AmqpState::Closed;
    schedule_reconnect();
    return;
  }
  (void)job.release();  // reclaimed in on_work_done
}

// Threadpool: blocking set-up on a connection no other thread can see yet.
void AmqpConnection::on_work(uv_work_t* req) {
  auto* job = static_cast<ConnectJob*>(req->data);
  try {
    AmqpSession session(job->endpoint, job->options);
    job->kept = declare_topology(session, *job->topology);
    session.qos(job->prefetch);
    session.confirm_select();
    job->conn = session.release();
  } catch (const std::exception& e) {
    job->error = e.what();
  }
}

void AmqpConnection::on_work_done(uv_work_t* req, int status) {
  std::unique_ptr<ConnectJob> job(static_cast<ConnectJob*>(req->data));
  AmqpConnection* self = job->owner;
  if (status != 0 && job->error.empty()) job->error = uv_strerror(status);
  if (self->stopping_) {
    if (job->conn != nullptr) {
      amqp_connection_close(job->conn, AMQP_REPLY_SUCCESS);
      amqp_destroy_connection(job->conn);
    }
    self->state_ = AmqpState::Closed;
    self->finish_stop();
    return;
  }
  if (job->conn == nullptr) {
    self->state_ = AmqpState::Closed;
    log::warn("amqp connect failed", {{"error", job->error}, {"node", job->endpoint.node()},
                                      {"vhost", job->endpoint.vhost}});
    self->schedule_reconnect();
    return;
  }
  for (const auto& line : describe(job->kept)) log::warn("existing queues kept as they are", {{"detail", line}});
  self->adopt(job->conn);
}

void AmqpConnection::adopt(amqp_connection_state_t conn) {
  conn_ = conn;
  int fd = amqp_socket_get_sockfd(amqp_get_socket(conn_));
  negotiated_heartbeat_sec_ = static_cast<uint16_t>(std::max(amqp_get_heartbeat(conn_), 0));
  set_user_timeout(fd, negotiated_heartbeat_sec_);
  int rc = poll_.init(this, [this, fd](uv_poll_t* p) { return uv_poll_init(loop_, p, fd); });
  if (rc == 0) rc = uv_poll_start(poll_.get(), UV_READABLE | UV_DISCONNECT, on_poll);
  if (rc != 0) {
    fail(std::string("cannot watch AMQP socket: ") + uv_strerror(rc));
    return;
  }
  ++generation_;
  state_ = AmqpState::Connected;
  next_seq_ = 1;
  blocked_ = false;
  consumers_active_ = 0;
  inbound_ = Inbound{};
  last_rx_ms_ = uv_now(loop_);
  consumers_sent_ = false;
  window_.clear();
  window_first_ = 1;
  acks_waiting_ = 0;
  // Half the heartbeat interval keeps ours flowing; without heartbeats, still check
  // now and then so a silent peer is noticed by the TCP stack's errors at least.
  const uint64_t hb = negotiated_heartbeat_sec_;
  uint64_t tick = hb > 0 ? std::max<uint64_t>(hb * 1000ull / 2, 500) : 5000;
  uv_timer_start(heartbeat_timer_.get(), on_heartbeat_timer, tick, tick);
  const AmqpEndpoint& node = endpoints_[rotation_.current()];
  tls_ = node.tls;
  // Input rabbitmq-c or OpenSSL holds is looked for once per loop pass, whatever
  // read or wrote last (see pump()).
  if (tls_) uv_check_start(drain_check_.get(), on_drain_check);
  log::info("amqp connected", {{"node", node.node()}, {"host", node.host}, {"port", node.port},
                               {"vhost", node.vhost}, {"tls", node.tls},
                               {"login", node.external ? "EXTERNAL" : "PLAIN"}, {"generation", generation_}});
  if (handlers_.on_connected) handlers_.on_connected();
  if (state_ == AmqpState::Connected && consume_requested_) consume();
  if (state_ == AmqpState::Connected) pump();  // frames may already be buffered
}

void AmqpConnection::reconnect(const std::string& reason) {
  if (state_ == AmqpState::Connected) fail(reason);
}

void AmqpConnection::consume() {
  consume_requested_ = true;
  if (state_ != AmqpState::Connected || consumers_sent_) return;
  consumers_sent_ = true;
  for (const auto& queue : topology_.consumed) {
    std::string tag = consumer_tag(queue);
    amqp_basic_consume_t m{};
    m.queue = as_bytes(queue);
    m.consumer_tag = as_bytes(tag);
    m.no_ack = 0;
    m.exclusive = 0;
    m.nowait = 0;
    m.arguments = amqp_empty_table;
    if (!check_send(amqp_send_method(conn_, AmqpSession::kConsumeChannel, AMQP_BASIC_CONSUME_METHOD, &m),
                    "basic.consume")) {
      return;
    }
  }
}

void AmqpConnection::cancel() {
  consume_requested_ = false;
  if (state_ != AmqpState::Connected || !consumers_sent_) return;
  consumers_sent_ = false;
  for (const auto& queue : topology_.consumed) {
    std::string tag = consumer_tag(queue);
    amqp_basic_cancel_t m{};
    m.consumer_tag = as_bytes(tag);
    m.nowait = 0;
    if (!check_send(amqp_send_method(conn_, AmqpSession::kConsumeChannel, AMQP_BASIC_CANCEL_METHOD, &m),
                    "basic.cancel")) {
      return;
    }
  }
}

bool AmqpConnection::check_send(int rc, std::string_view what) {
  if (rc == AMQP_STATUS_OK) return true;
  fail(std::string(what) + " failed: " + amqp_error_string2(rc));
  return false;
}

bool AmqpConnection::ack(uint64_t generation, uint64_t delivery_tag) {
  if (state_ != AmqpState::Connected || generation != generation_) return false;
  ++acks_sent_;
  if (delivery_tag < window_first_ || delivery_tag - window_first_ >= window_.size()) {
    return check_send(amqp_basic_ack(conn_, AmqpSession::kConsumeChannel, delivery_tag, 0), "basic.ack");
  }
  Settle& s = window_[delivery_tag - window_first_];
  if (s != Settle::InFlight) return true;
  s = Settle::Ack;
  if (acks_waiting_++ == 0) uv_check_start(ack_check_.get(), on_ack_check);
  return true;
}

void AmqpConnection::on_ack_check(uv_check_t* handle) {
  if (auto* self = owner_of<AmqpConnection>(handle)) self->flush_acks();
}

void AmqpConnection::flush_acks() {
  uv_check_stop(ack_check_.get());
  if (acks_waiting_ == 0 || state_ == AmqpState::Closed || conn_ == nullptr) return;
  // The settled prefix: one multiple-ack up to its last acked tag (tags settled
  // before, by reject or a single ack, are no longer outstanding and unaffected).
  uint64_t last = 0;
  while (!window_.empty() && window_.front() != Settle::InFlight) {
    if (window_.front() == Settle::Ack) {
      last = window_first_;
      --acks_waiting_;
    }
    window_.pop_front();
    ++window_first_;
  }
  if (last != 0 && !check_send(amqp_basic_ack(conn_, AmqpSession::kConsumeChannel, last, 1), "basic.ack")) return;
  // Completions behind a message still in flight: one by one, so a slow message
  // does not hold the others' acks (and the prefetch window) hostage.
  for (std::size_t i = 0; acks_waiting_ > 0 && i < window_.size(); ++i) {
    if (window_[i] != Settle::Ack) continue;
    window_[i] = Settle::Done;
    --acks_waiting_;
    if (!check_send(amqp_basic_ack(conn_, AmqpSession::kConsumeChannel, window_first_ + i, 0), "basic.ack")) return;
  }
}

bool AmqpConnection::reject(uint64_t generation, uint64_t delivery_tag, bool requeue) {
  if (state_ != AmqpState::Connected || generation != generation_) return false;
  if (delivery_tag >= window_first_ && delivery_tag - window_first_ < window_.size()) {
    Settle& s = window_[delivery_tag - window_first_];
    if (s == Settle::Ack) --acks_waiting_;
    s = Settle::Done;
  }
  return check_send(amqp_basic_reject(conn_, AmqpSession::kConsumeChannel, delivery_tag, requeue ? 1 : 0),
                    "basic.reject");
}

bool AmqpConnection::publish(std::string_view exchange, std::string_view routing_key,
                             const amqp_basic_properties_t& props, std::string_view body, PublishDone done) {
  if (state_ != AmqpState::Connected) return false;
  if (blocked_ || !held_.empty()) {
    // The broker stopped reading our socket; writing now could stall the loop.
    held_.push_back({std::string(exchange), std::string(routing_key), OwnedProperties(props), std::string(body),
                     std::move(done)});
    return true;
  }
  return send_publish(exchange, routing_key, props, body, done);
}

bool AmqpConnection::send_publish(std::string_view exchange, std::string_view routing_key,
                                  const amqp_basic_properties_t& props, std::string_view body, PublishDone& done) {
  // The caller's headers (borrowed) with this publish's tag in place of any other.
  FieldTable headers;
  headers.add(kPublishTag, publish_tag(generation_, next_seq_));
  if ((props._flags & AMQP_BASIC_HEADERS_FLAG) != 0) {
    for (int i = 0; i < props.headers.num_entries; ++i) {
      if (as_view(props.headers.entries[i].key) != kPublishTag) headers.add_borrowed(props.headers.entries[i]);
    }
  }
  amqp_basic_properties_t tagged = props;
  tagged._flags |= AMQP_BASIC_HEADERS_FLAG;
  tagged.headers = headers.table();
  int rc = amqp_basic_publish(conn_, AmqpSession::kPublishChannel, as_bytes(exchange), as_bytes(routing_key), 1, 0,
                              &tagged, as_bytes(body));
  if (rc != AMQP_STATUS_OK) {
    // The write may be partial: the connection is unusable. fail() reports the
    // others; this one never went out, so it is not ours to call back.
    fail(std::string("basic.publish failed: ") + amqp_error_string2(rc));
    return false;
  }
  PendingConfirm p;
  p.seq = next_seq_++;
  p.done = std::move(done);
  pending_.push_back(std::move(p));
  return true;
}

void AmqpConnection::release_held() {
  while (!held_.empty() && !blocked_ && state_ == AmqpState::Connected) {
    Held h = std::move(held_.front());
    held_.pop_front();
    if (!send_publish(h.exchange, h.routing_key, h.props.get(), h.body, h.done)) {
      // The connection failed under us; this one never went out.
      h.done(false, "connection lost before the message was sent");
      return;
    }
  }
}

void AmqpConnection::on_poll(uv_poll_t* handle, int status, int events) {
  auto* self = owner_of<AmqpConnection>(handle);
  if (self == nullptr) return;
  if (status < 0) {
    self->fail(std::string("AMQP socket error: ") + uv_strerror(status));
    return;
  }
  // Heartbeats count as traffic, but rabbitmq-c consumes them inside its read and
  // never returns them as frames: bytes arriving is what shows the broker is alive.
  if (events & UV_READABLE) self->last_rx_ms_ = uv_now(self->loop_);
  if (events & (UV_READABLE | UV_DISCONNECT)) self->pump();
}

void AmqpConnection::on_heartbeat_timer(uv_timer_t* handle) {
  auto* self = owner_of<AmqpConnection>(handle);
  if (self == nullptr || self->conn_ == nullptr) return;
  // rabbitmq-c sends our heartbeat when due while reading; it does not time out a
  // silent broker on a zero-timeout read, so that check is ours (two missed beats).
  // Bytes this timer's read would take before on_poll sees them count too.
  const uint64_t now = uv_now(self->loop_);
  const uint64_t hb = self->negotiated_heartbeat_sec_;
  if (bytes_waiting(amqp_socket_get_sockfd(amqp_get_socket(self->conn_)))) self->last_rx_ms_ = now;
  if (hb > 0 && now - self->last_rx_ms_ > hb * 2000ull) {
    self->fail("no heartbeat from broker for " + std::to_string(hb * 2) + " s");
    return;
  }
  self->pump();
}

// Input the socket will not signal again: frames rabbitmq-c queued during set-up's
// RPCs, bytes in its read buffer, and over TLS records OpenSSL has decrypted but
// rabbitmq-c has not read (SSL_pending; the uv_poll sees only the socket).
bool AmqpConnection::input_buffered() const {
  if (conn_ == nullptr) return false;
  if (amqp_frames_enqueued(conn_) || amqp_data_in_buffer(conn_)) return true;
  return tls_ && tls_pending(amqp_get_socket(conn_)) > 0;
}

void AmqpConnection::pump() {
  // A zero-timeout read returns TIMEOUT once the socket has nothing either; what
  // rabbitmq-c or OpenSSL still holds is drained too, so a delivery never waits for
  // the next heartbeat tick. Once without progress, the rest waits for the socket.
  bool retried = false;
  while (conn_ != nullptr) {
    amqp_frame_t frame;
    timeval zero{0, 0};
    int rc = amqp_simple_wait_frame_noblock(conn_, &frame, &zero);
    if (rc == AMQP_STATUS_TIMEOUT) {
      if (retried || !input_buffered()) break;
      retried = true;
      continue;
    }
    if (rc != AMQP_STATUS_OK) {
      std::string why = amqp_error_string2(rc);
      if (rc == AMQP_STATUS_SSL_ERROR) {
        if (const std::string tls = tls_last_error(); !tls.empty()) why += ": " + tls;
      }
      fail("AMQP read failed: " + why);
      return;
    }
    retried = false;
    last_rx_ms_ = uv_now(loop_);
    if (!handle_frame(frame)) return;  // the connection is gone
  }
  if (conn_ != nullptr) amqp_maybe_release_buffers(conn_);
}

void AmqpConnection::on_drain_check(uv_check_t* handle) {
  auto* self = owner_of<AmqpConnection>(handle);
  if (self != nullptr && self->state_ != AmqpState::Closed && self->input_buffered()) self->pump();
}

bool AmqpConnection::handle_frame(const amqp_frame_t& frame) {
  switch (frame.frame_type) {
    case AMQP_FRAME_METHOD:
      return handle_method(frame.channel, frame.payload.method);
    case AMQP_FRAME_HEADER:
      if (inbound_.kind == Inbound::Kind::None || inbound_.have_header) {
        fail("unexpected content header frame");
        return false;
      }
      inbound_.have_header = true;
      inbound_.body_size = frame.payload.properties.body_size;
      inbound_.delivery.properties =
          OwnedProperties(*static_cast<amqp_basic_properties_t*>(frame.payload.properties.decoded));
      inbound_.delivery.body.reserve(inbound_.body_size);
      if (inbound_.body_size == 0) finish_inbound();
      return conn_ != nullptr;
    case AMQP_FRAME_BODY: {
      if (inbound_.kind == Inbound::Kind::None || !inbound_.have_header) {
        fail("unexpected content body frame");
        return false;
      }
      std::string_view part = as_view(frame.payload.body_fragment);
      inbound_.delivery.body.append(part);
      if (inbound_.delivery.body.size() >= inbound_.body_size) finish_inbound();
      return conn_ != nullptr;
    }
    case AMQP_FRAME_HEARTBEAT:
    default:
      return true;
  }
}

bool AmqpConnection::handle_method(amqp_channel_t channel, const amqp_method_t& method) {
  switch (method.id) {
    case AMQP_BASIC_DELIVER_METHOD: {
      auto* m = static_cast<amqp_basic_deliver_t*>(method.decoded);
      inbound_ = Inbound{};
      inbound_.kind = Inbound::Kind::Delivery;
      Delivery& d = inbound_.delivery;
      d.generation = generation_;
      d.delivery_tag = m->delivery_tag;
      // Tags on a channel count up from 1; anything skipped is not ours to ack.
      while (window_first_ + window_.size() < m->delivery_tag) window_.push_back(Settle::Done);
      if (window_first_ + window_.size() == m->delivery_tag) window_.push_back(Settle::InFlight);
      d.redelivered = m->redelivered != 0;
      std::string_view tag = as_view(m->consumer_tag);
      if (tag.starts_with(kConsumerTagPrefix)) tag.remove_prefix(kConsumerTagPrefix.size());
      d.queue.assign(tag);
      d.exchange.assign(as_view(m->exchange));
      d.routing_key.assign(as_view(m->routing_key));
      return true;
    }
    case AMQP_BASIC_RETURN_METHOD: {
      auto* m = static_cast<amqp_basic_return_t*>(method.decoded);
      inbound_ = Inbound{};
      inbound_.kind = Inbound::Kind::Return;
      inbound_.return_text = std::to_string(m->reply_code) + " " + std::string(as_view(m->reply_text));
      inbound_.delivery.exchange.assign(as_view(m->exchange));
      inbound_.delivery.routing_key.assign(as_view(m->routing_key));
      return true;
    }
    case AMQP_BASIC_ACK_METHOD: {
      auto* m = static_cast<amqp_basic_ack_t*>(method.decoded);
      resolve_confirms(m->delivery_tag, m->multiple != 0, true);
      return conn_ != nullptr;
    }
    case AMQP_BASIC_NACK_METHOD: {
      auto* m = static_cast<amqp_basic_nack_t*>(method.decoded);
      resolve_confirms(m->delivery_tag, m->multiple != 0, false);
      return conn_ != nullptr;
    }
    case AMQP_BASIC_CONSUME_OK_METHOD:
      ++consumers_active_;
      if (consumers_active_ == topology_.consumed.size()) {
        rotation_.succeeded();  // only a connection that got this far counts as recovered
        log::info("consuming", {{"queues", static_cast<uint64_t>(consumers_active_)}});
      }
      return true;
    case AMQP_BASIC_CANCEL_OK_METHOD:
      if (consumers_active_ > 0) --consumers_active_;
      return true;
    case AMQP_BASIC_CANCEL_METHOD: {
      // The broker cancelled a consumer (its queue was deleted): reconnecting
      // declares the topology again and brings every consumer back.
      auto* m = static_cast<amqp_basic_cancel_t*>(method.decoded);
      fail("broker cancelled consumer " + std::string(as_view(m->consumer_tag)));
      return false;
    }
    case AMQP_CONNECTION_BLOCKED_METHOD: {
      auto* m = static_cast<amqp_connection_blocked_t*>(method.decoded);
      blocked_ = true;
      log::warn("amqp connection blocked by broker", {{"reason", as_view(m->reason)}});
      return true;
    }
    case AMQP_CONNECTION_UNBLOCKED_METHOD:
      blocked_ = false;
      log::info("amqp connection unblocked", {{"held_publishes", static_cast<uint64_t>(held_.size())}});
      release_held();
      return conn_ != nullptr;
    case AMQP_CHANNEL_CLOSE_METHOD: {
      auto* m = static_cast<amqp_channel_close_t*>(method.decoded);
      amqp_channel_close_ok_t ok{};
      amqp_send_method(conn_, channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
      fail("channel " + std::to_string(channel) + " closed by broker: " + std::to_string(m->reply_code) + " " +
           std::string(as_view(m->reply_text)));
      return false;
    }
    case AMQP_CONNECTION_CLOSE_METHOD: {
      auto* m = static_cast<amqp_connection_close_t*>(method.decoded);
      amqp_connection_close_ok_t ok{};
      amqp_send_method(conn_, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
      fail("connection closed by broker: " + std::to_string(m->reply_code) + " " +
           std::string(as_view(m->reply_text)));
      return false;
    }
    case AMQP_CONNECTION_CLOSE_OK_METHOD:
      if (state_ == AmqpState::Closing) {
        teardown();
        finish_stop();
        return false;
      }
      return true;
    default:
      return true;
  }
}

void AmqpConnection::finish_inbound() {
  Inbound in = std::move(inbound_);
  inbound_ = Inbound{};
  if (in.kind == Inbound::Kind::Delivery) {
    if (handlers_.on_delivery) handlers_.on_delivery(std::move(in.delivery));
    return;
  }
  log::warn("message returned unroutable", {{"exchange", in.delivery.exchange},
                                            {"routing_key", in.delivery.routing_key},
                                            {"message_id", in.delivery.properties.message_id()},
                                            {"reason", in.return_text}});
  mark_returned(in.delivery);
}

// A mandatory publish nobody could route: its confirm follows; mark exactly that
// publish (by its tag, not by message_id, which copies share or lack) so the
// confirm reports failure.
void AmqpConnection::mark_returned(const Delivery& returned) {
  std::string tag;
  uint64_t generation = 0;
  uint64_t seq = 0;
  if (table_get_string(returned.properties.headers(), kPublishTag, tag) && parse_publish_tag(tag, generation, seq) &&
      generation == generation_) {
    auto p = std::lower_bound(pending_.begin(), pending_.end(), seq,
                              [](const PendingConfirm& c, uint64_t s) { return c.seq < s; });
    if (p != pending_.end() && p->seq == seq && !p->resolved) {
      p->returned = true;
      return;
    }
  }
  // Its confirm would read as success: fail every pending publish instead, so no
  // source is acked on the strength of a copy the broker dropped.
  fail("returned message matches no pending publish (tag '" + tag + "')");
}

void AmqpConnection::resolve_confirms(uint64_t tag, bool multiple, bool ack) {
  // Callbacks may publish (pending_ grows) or tear the connection down (pending_ is
  // emptied): settle pending_ first, then call them from a list of our own. Each gets
  // the broker's verdict, even if an earlier one has closed the connection since.
  struct Confirmed {
    PublishDone done;
    bool returned;
  };
  std::vector<Confirmed> confirmed;
  for (auto& p : pending_) {
    if (p.seq > tag) break;
    if (p.resolved || (!multiple && p.seq != tag)) continue;
    p.resolved = true;
    confirmed.push_back({std::move(p.done), p.returned});
  }
  while (!pending_.empty() && pending_.front().resolved) pending_.pop_front();
  for (auto& c : confirmed) {
    if (!ack) c.done(false, "broker nacked the message");
    else if (c.returned) c.done(false, std::string(kUnroutable) + ": no queue bound for the routing key");
    else c.done(true, {});
  }
}

void AmqpConnection::teardown() {
  heartbeat_timer_.initialised() ? (void)uv_timer_stop(heartbeat_timer_.get()) : (void)0;
  close_timer_.initialised() ? (void)uv_timer_stop(close_timer_.get()) : (void)0;
  poll_.close();
  if (conn_ != nullptr) amqp_destroy_connection(conn_);
  conn_ = nullptr;
  consumers_active_ = 0;
  inbound_ = Inbound{};
  state_ = AmqpState::Closed;
  window_.clear();
  acks_waiting_ = 0;
  if (ack_check_.initialised()) uv_check_stop(ack_check_.get());
  if (drain_check_.initialised()) uv_check_stop(drain_check_.get());
  tls_ = false;
  // Fail what the broker never confirmed; callers republish or leave the source
  // unacked (the broker requeues it).
  std::deque<PendingConfirm> pending = std::move(pending_);
  pending_.clear();
  std::deque<Held> held = std::move(held_);
  held_.clear();
  for (auto& p : pending) {
    if (!p.resolved) p.done(false, "connection lost before the broker confirmed");
  }
  for (auto& h : held) h.done(false, "connection lost before the message was sent");
}

void AmqpConnection::fail(const std::string& reason) {
  if (conn_ == nullptr && state_ != AmqpState::Connected) return;
  bool was_closing = state_ == AmqpState::Closing;
  teardown();
  if (was_closing || stopping_) {
    finish_stop();
    return;
  }
  log::warn("amqp connection lost", {{"reason", reason}, {"node", endpoints_[rotation_.current()].node()}});
  if (handlers_.on_disconnected) handlers_.on_disconnected(reason);
  schedule_reconnect();
}

void AmqpConnection::schedule_reconnect() {
  if (stopping_) return;
  const NodeRotation::Next next = rotation_.failed();
  ++reconnects_;
  log::info("amqp reconnect scheduled", {{"delay_ms", next.delay_ms}, {"attempt", rotation_.failures()},
                                         {"node", endpoints_[next.node].node()}});
  uv_timer_start(reconnect_timer_.get(), on_reconnect_timer, next.delay_ms, 0);
}

void AmqpConnection::on_reconnect_timer(uv_timer_t* handle) {
  auto* self = owner_of<AmqpConnection>(handle);
  if (self == nullptr || self->stopping_ || self->state_ != AmqpState::Closed) return;
  self->connect();
}

void AmqpConnection::stop(std::function<void()> done) {
  stopping_ = true;
  stop_done_ = std::move(done);
  uv_timer_stop(reconnect_timer_.get());
  switch (state_) {
    case AmqpState::Connecting:
      return;  // on_work_done finishes the stop
    case AmqpState::Closing:
      return;
    case AmqpState::Closed:
      finish_stop();
      return;
    case AmqpState::Connected: {
      flush_acks();  // nothing acked may stay behind
      if (state_ != AmqpState::Connected) {
        finish_stop();
        return;
      }
      state_ = AmqpState::Closing;
      amqp_connection_close_t m{};
      m.reply_code = AMQP_REPLY_SUCCESS;
      m.reply_text = as_bytes("eventd shutting down");
      if (amqp_send_method(conn_, 0, AMQP_CONNECTION_CLOSE_METHOD, &m) != AMQP_STATUS_OK) {
        teardown();
        finish_stop();
        return;
      }
      uv_timer_start(close_timer_.get(), on_close_timer, kCloseTimeoutMs, 0);
      return;
    }
  }
}

void AmqpConnection::on_close_timer(uv_timer_t* handle) {
  auto* self = owner_of<AmqpConnection>(handle);
  if (self == nullptr || self->state_ != AmqpState::Closing) return;
  log::warn("amqp close-ok not received in time; closing the socket");
  self->teardown();
  self->finish_stop();
}

void AmqpConnection::finish_stop() {
  ack_check_.close();
  drain_check_.close();
  heartbeat_timer_.close();
  reconnect_timer_.close();
  close_timer_.close();
  poll_.close();
  if (stop_done_) {
    auto done = std::move(stop_done_);
    stop_done_ = nullptr;
    done();
  }
}

}  // namespace eventd
