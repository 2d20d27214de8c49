// Blocking AMQP session (see amqp_session.hpp). Never used on the daemon's loop.
#include "eventd/amqp_session.hpp"

#include <amqp_tcp_socket.h>
#include <unistd.h>

#include "eventd/amqp_table.hpp"
#include "eventd/amqp_tls.hpp"

namespace eventd {
namespace {

timeval to_timeval(uint32_t ms) {
  timeval tv;
  tv.tv_sec = static_cast<time_t>(ms / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms % 1000) * 1000);
  return tv;
}

std::string close_text(uint16_t code, amqp_bytes_t text) {
  return std::to_string(code) + " " + std::string(as_view(text));
}

}  // namespace

std::string describe_reply(const amqp_rpc_reply_t& reply) {
  switch (reply.reply_type) {
    case AMQP_RESPONSE_NORMAL: return "ok";
    case AMQP_RESPONSE_NONE: return "no reply from broker";
    case AMQP_RESPONSE_LIBRARY_EXCEPTION: return amqp_error_string2(reply.library_error);
    case AMQP_RESPONSE_SERVER_EXCEPTION:
      if (reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        auto* m = static_cast<amqp_connection_close_t*>(reply.reply.decoded);
        return "connection closed by broker: " + close_text(m->reply_code, m->reply_text);
      }
      if (reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        auto* m = static_cast<amqp_channel_close_t*>(reply.reply.decoded);
        return "channel closed by broker: " + close_text(m->reply_code, m->reply_text);
      }
      return "unexpected method from broker";
  }
  return "unknown reply";
}

AmqpSession::AmqpSession(const AmqpEndpoint& ep, const SessionOptions& options) {
  const std::string where = ep.node();
  conn_ = amqp_new_connection();
  if (conn_ == nullptr) throw AmqpError("out of memory creating AMQP connection");
  amqp_socket_t* socket = nullptr;
  try {
    socket = ep.tls ? new_tls_socket(conn_, options.tls, ep.host) : amqp_tcp_socket_new(conn_);
  } catch (const AmqpError& e) {
    amqp_destroy_connection(conn_);
    conn_ = nullptr;
    throw AmqpError("cannot connect to RabbitMQ at " + where + " over TLS: " + e.what());
  }
  if (socket == nullptr) {
    amqp_destroy_connection(conn_);
    conn_ = nullptr;
    throw AmqpError("cannot create TCP socket");
  }
  timeval connect_tv = to_timeval(options.connect_timeout_ms);
  int rc = amqp_socket_open_noblock(socket, ep.host.c_str(), ep.port, &connect_tv);
  if (rc != AMQP_STATUS_OK) {
    const std::string why = ep.tls ? tls_open_error(socket, rc) : amqp_error_string2(rc);
    amqp_destroy_connection(conn_);
    conn_ = nullptr;
    throw AmqpError("cannot connect to RabbitMQ at " + where + (ep.tls ? " over TLS: " : ": ") + why);
  }
  amqp_set_handshake_timeout(conn_, &connect_tv);
  timeval rpc_tv = to_timeval(options.rpc_timeout_ms);
  amqp_set_rpc_timeout(conn_, &rpc_tv);

  FieldTable capabilities;
  capabilities.add_bool("publisher_confirms", true)
      .add_bool("consumer_cancel_notify", true)
      .add_bool("connection.blocked", true)
      .add_bool("basic.nack", true)
      .add_bool("authentication_failure_close", true);
  FieldTable client;
  client.add("connection_name", options.connection_name)
      .add("product", "eventd")
      .add_table("capabilities", std::move(capabilities));
  amqp_table_t client_table = client.table();
  // EXTERNAL: the broker takes the user from the client certificate; rabbitmq-c sends
  // the URI's user as the identity, which RabbitMQ ignores (and an empty one fails).
  amqp_rpc_reply_t r =
      ep.external ? amqp_login_with_properties(conn_, ep.vhost.c_str(), 0, 131072, options.heartbeat_sec,
                                               &client_table, AMQP_SASL_METHOD_EXTERNAL, ep.user.c_str())
                  : amqp_login_with_properties(conn_, ep.vhost.c_str(), 0, 131072, options.heartbeat_sec,
                                               &client_table, AMQP_SASL_METHOD_PLAIN, ep.user.c_str(),
                                               ep.password.c_str());
  if (r.reply_type != AMQP_RESPONSE_NORMAL) {
    std::string why = describe_reply(r);
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
      if (r.library_error == AMQP_STATUS_SSL_ERROR) {
        // e.g. the broker refused the client certificate (TLS 1.3 says so after the handshake)
        if (const std::string tls = tls_last_error(); !tls.empty()) why += ": " + tls;
      } else if (r.library_error == AMQP_STATUS_BROKER_UNSUPPORTED_SASL_METHOD && ep.external) {
        why += " (EXTERNAL needs the rabbitmq_auth_mechanism_ssl plugin and EXTERNAL in auth_mechanisms)";
      }
    }
    amqp_destroy_connection(conn_);
    conn_ = nullptr;
    const std::string as = ep.external ? " with the client certificate (SASL EXTERNAL)" : " as '" + ep.user + "'";
    throw AmqpError("cannot log in to RabbitMQ at " + where + as + " on vhost '" + ep.vhost + "': " + why);
  }
  try {
    open_channel(kConsumeChannel);
    open_channel(kPublishChannel);
  } catch (...) {
    amqp_destroy_connection(conn_);
    conn_ = nullptr;
    throw;
  }
}

AmqpSession::~AmqpSession() {
  if (conn_ != nullptr) amqp_destroy_connection(conn_);
}

amqp_connection_state_t AmqpSession::release() {
  amqp_connection_state_t c = conn_;
  conn_ = nullptr;
  return c;
}

void AmqpSession::close() noexcept {
  if (conn_ == nullptr) return;
  amqp_connection_close(conn_, AMQP_REPLY_SUCCESS);
  amqp_destroy_connection(conn_);
  conn_ = nullptr;
}

void AmqpSession::check(amqp_rpc_reply_t reply, std::string_view what, amqp_channel_t channel) {
  if (reply.reply_type == AMQP_RESPONSE_NORMAL) return;
  std::string why = describe_reply(reply);
  if (reply.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION) {
    if (reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
      // The failed channel is closed: answer, and reopen it so the session stays usable.
      amqp_channel_close_ok_t ok{};
      amqp_send_method(conn_, channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
      amqp_channel_open(conn_, channel);
      (void)amqp_get_rpc_reply(conn_);
    } else if (reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
      amqp_connection_close_ok_t ok{};
      amqp_send_method(conn_, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
    }
  }
  throw AmqpError(std::string(what) + ": " + why);
}

void AmqpSession::open_channel(amqp_channel_t channel) {
  amqp_channel_open(conn_, channel);
  amqp_rpc_reply_t r = amqp_get_rpc_reply(conn_);
  if (r.reply_type != AMQP_RESPONSE_NORMAL) {
    throw AmqpError("cannot open channel " + std::to_string(channel) + ": " + describe_reply(r));
  }
}

void AmqpSession::declare_exchange(const std::string& name, const std::string& type) {
  amqp_exchange_declare(conn_, kConsumeChannel, as_bytes(name), as_bytes(type), 0, 1, 0, 0, amqp_empty_table);
  check(amqp_get_rpc_reply(conn_), "cannot declare exchange '" + name + "' (" + type + ")");
}

void AmqpSession::declare_queue(const std::string& name, FieldTable& arguments) {
  amqp_queue_declare(conn_, kConsumeChannel, as_bytes(name), 0, 1, 0, 0, arguments.table());
  check(amqp_get_rpc_reply(conn_), "cannot declare queue '" + name + "'");
}

std::optional<uint32_t> AmqpSession::queue_depth(const std::string& name) {
  amqp_queue_declare_ok_t* ok =
      amqp_queue_declare(conn_, kConsumeChannel, as_bytes(name), 1, 0, 0, 0, amqp_empty_table);
  amqp_rpc_reply_t r = amqp_get_rpc_reply(conn_);
  if (r.reply_type == AMQP_RESPONSE_NORMAL && ok != nullptr) return ok->message_count;
  if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
    auto* m = static_cast<amqp_channel_close_t*>(r.reply.decoded);
    if (m->reply_code == AMQP_NOT_FOUND) {
      amqp_channel_close_ok_t close_ok{};
      amqp_send_method(conn_, kConsumeChannel, AMQP_CHANNEL_CLOSE_OK_METHOD, &close_ok);
      open_channel(kConsumeChannel);
      return std::nullopt;
    }
  }
  check(r, "cannot inspect queue '" + name + "'");
  return std::nullopt;
}

void AmqpSession::bind_queue(const std::string& queue, const std::string& exchange, const std::string& key) {
  amqp_queue_bind(conn_, kConsumeChannel, as_bytes(queue), as_bytes(exchange), as_bytes(key), amqp_empty_table);
  check(amqp_get_rpc_reply(conn_), "cannot bind queue '" + queue + "' to exchange '" + exchange + "' with key '" +
                                       key + "'");
}

void AmqpSession::qos(uint16_t prefetch) {
  amqp_basic_qos(conn_, kConsumeChannel, 0, prefetch, 0);
  check(amqp_get_rpc_reply(conn_), "cannot set prefetch");
}

void AmqpSession::confirm_select() {
  amqp_confirm_select(conn_, kPublishChannel);
  check(amqp_get_rpc_reply(conn_), "cannot enable publisher confirms", kPublishChannel);
}

uint32_t AmqpSession::purge(const std::string& queue) {
  amqp_queue_purge_ok_t* ok = amqp_queue_purge(conn_, kConsumeChannel, as_bytes(queue));
  check(amqp_get_rpc_reply(conn_), "cannot purge queue '" + queue + "'");
  return ok != nullptr ? ok->message_count : 0;
}

std::optional<AmqpSession::GotMessage> AmqpSession::get(const std::string& queue) {
  amqp_rpc_reply_t r = amqp_basic_get(conn_, kConsumeChannel, as_bytes(queue), 0);
  check(r, "cannot get from queue '" + queue + "'");
  if (r.reply.id == AMQP_BASIC_GET_EMPTY_METHOD) return std::nullopt;
  auto* ok = static_cast<amqp_basic_get_ok_t*>(r.reply.decoded);
  GotMessage m;
  m.delivery_tag = ok->delivery_tag;
  m.exchange.assign(as_view(ok->exchange));
  m.routing_key.assign(as_view(ok->routing_key));
  amqp_message_t message;
  check(amqp_read_message(conn_, kConsumeChannel, &message, 0), "cannot read message from '" + queue + "'");
  m.properties = OwnedProperties(message.properties);
  m.body.assign(as_view(message.body));
  amqp_destroy_message(&message);
  return m;
}

void AmqpSession::ack(uint64_t delivery_tag) {
  int rc = amqp_basic_ack(conn_, kConsumeChannel, delivery_tag, 0);
  if (rc != AMQP_STATUS_OK) throw AmqpError(std::string("ack failed: ") + amqp_error_string2(rc));
}

void AmqpSession::reject(uint64_t delivery_tag, bool requeue) {
  int rc = amqp_basic_reject(conn_, kConsumeChannel, delivery_tag, requeue ? 1 : 0);
  if (rc != AMQP_STATUS_OK) throw AmqpError(std::string("reject failed: ") + amqp_error_string2(rc));
}

void AmqpSession::return_upto(uint64_t delivery_tag) {
  int rc = amqp_basic_nack(conn_, kConsumeChannel, delivery_tag, 1, 1);
  if (rc != AMQP_STATUS_OK) throw AmqpError(std::string("nack failed: ") + amqp_error_string2(rc));
}

uint64_t AmqpSession::publish(const std::string& exchange, const std::string& routing_key,
                              const amqp_basic_properties_t& props, std::string_view body, bool mandatory) {
  int rc = amqp_basic_publish(conn_, kPublishChannel, as_bytes(exchange), as_bytes(routing_key), mandatory ? 1 : 0,
                              0, &props, as_bytes(body));
  if (rc != AMQP_STATUS_OK) throw AmqpError(std::string("publish failed: ") + amqp_error_string2(rc));
  return next_seq_++;
}

AmqpSession::ConfirmTally AmqpSession::wait_confirms(uint64_t seq) {
  ConfirmTally tally;
  while (confirmed_upto_ < seq) {
    amqp_frame_t frame;
    int rc = amqp_simple_wait_frame(conn_, &frame);
    if (rc != AMQP_STATUS_OK) throw AmqpError(std::string("waiting for confirms: ") + amqp_error_string2(rc));
    if (frame.frame_type != AMQP_FRAME_METHOD) continue;  // header/body of a returned message
    switch (frame.payload.method.id) {
      case AMQP_BASIC_ACK_METHOD: {
        auto* m = static_cast<amqp_basic_ack_t*>(frame.payload.method.decoded);
        tally.acked += m->multiple ? m->delivery_tag - confirmed_upto_ : 1;
        confirmed_upto_ = std::max(confirmed_upto_, m->delivery_tag);
        break;
      }
      case AMQP_BASIC_NACK_METHOD: {
        auto* m = static_cast<amqp_basic_nack_t*>(frame.payload.method.decoded);
        uint64_t n = m->multiple ? m->delivery_tag - confirmed_upto_ : 1;
        tally.nacked += n;
        confirmed_upto_ = std::max(confirmed_upto_, m->delivery_tag);
        break;
      }
      case AMQP_BASIC_RETURN_METHOD:
        ++tally.returned;
        break;
      case AMQP_CHANNEL_CLOSE_METHOD: {
        auto* m = static_cast<amqp_channel_close_t*>(frame.payload.method.decoded);
        std::string why = close_text(m->reply_code, m->reply_text);
        amqp_channel_close_ok_t ok{};
        amqp_send_method(conn_, frame.channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
        throw AmqpError("channel closed by broker: " + why);
      }
      case AMQP_CONNECTION_CLOSE_METHOD: {
        auto* m = static_cast<amqp_connection_close_t*>(frame.payload.method.decoded);
        std::string why = close_text(m->reply_code, m->reply_text);
        amqp_connection_close_ok_t ok{};
        amqp_send_method(conn_, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
        throw AmqpError("connection closed by broker: " + why);
      }
      default: break;
    }
    amqp_maybe_release_buffers(conn_);
  }
  return tally;
}

void AmqpSession::publish_confirmed(const std::string& exchange, const std::string& routing_key,
                                    const amqp_basic_properties_t& props, std::string_view body) {
  uint64_t seq = publish(exchange, routing_key, props, body, true);
  ConfirmTally t = wait_confirms(seq);
  if (t.nacked > 0) throw AmqpError("broker refused the message (basic.nack)");
  if (t.returned > 0) {
    throw AmqpError("unroutable: no queue is bound to exchange '" + exchange + "' for routing key '" + routing_key +
                    "'");
  }
}

}  // namespace eventd
