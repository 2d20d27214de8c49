// A blocking AMQP session over rabbitmq-c: connect, log in, open channels and run
// RPCs (declares, qos, confirm.select, basic.get). eventctl uses it directly; the
// daemon runs it only off the loop (libuv threadpool) to set up a connection, then
// hands the connection to AmqpConnection, which drives it from the loop.
#pragma once

#include <amqp.h>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "eventd/amqp_message.hpp"
#include "eventd/config.hpp"

namespace eventd {

class FieldTable;

class AmqpError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct SessionOptions {
  uint16_t heartbeat_sec = 30;
  uint32_t connect_timeout_ms = 5000;
  uint32_t rpc_timeout_ms = 10000;
  std::string connection_name = "eventd";
  AmqpTlsConfig tls;  // for amqps:// endpoints
};

class AmqpSession {
 public:
  static constexpr amqp_channel_t kConsumeChannel = 1;
  static constexpr amqp_channel_t kPublishChannel = 2;

  // Connects (over TLS for an amqps:// endpoint), logs in (SASL EXTERNAL when the
  // endpoint says so, else PLAIN) and opens both channels. Throws AmqpError with one
  // line, which names the node and never a password.
  AmqpSession(const AmqpEndpoint& endpoint, const SessionOptions& options);
  ~AmqpSession();
  AmqpSession(const AmqpSession&) = delete;
  AmqpSession& operator=(const AmqpSession&) = delete;

  amqp_connection_state_t get() const { return conn_; }
  // Gives up ownership (the caller destroys it); the session is empty afterwards.
  amqp_connection_state_t release();
  // connection.close then destroy; never throws.
  void close() noexcept;

  void declare_exchange(const std::string& name, const std::string& type);
  void declare_queue(const std::string& name, FieldTable& arguments);
  // Passive declare: message count, or nullopt if the queue does not exist. A missing
  // queue closes the channel; it is reopened here.
  std::optional<uint32_t> queue_depth(const std::string& name);
  void bind_queue(const std::string& queue, const std::string& exchange, const std::string& key);
  void qos(uint16_t prefetch);
  void confirm_select();
  uint32_t purge(const std::string& queue);

  // basic.get without auto-ack on the consume channel: the message, or nullopt when
  // the queue is empty. Ack or reject it by its delivery tag.
  struct GotMessage {
    uint64_t delivery_tag = 0;
    std::string exchange;
    std::string routing_key;
    OwnedProperties properties;
    std::string body;
  };
  std::optional<GotMessage> get(const std::string& queue);
  void ack(uint64_t delivery_tag);
  void reject(uint64_t delivery_tag, bool requeue);
  // basic.nack with multiple + requeue: every unacked message up to the tag goes back
  // to its queue, in its place.
  void return_upto(uint64_t delivery_tag);

  // Publishes on the publish channel with confirms (confirm_select first) and waits
  // for the broker's answer. Throws AmqpError when nacked, unroutable (mandatory) or
  // the channel closes.
  void publish_confirmed(const std::string& exchange, const std::string& routing_key,
                         const amqp_basic_properties_t& props, std::string_view body);
  // Publishes without waiting; returns the confirm sequence number.
  uint64_t publish(const std::string& exchange, const std::string& routing_key,
                   const amqp_basic_properties_t& props, std::string_view body, bool mandatory = true);
  struct ConfirmTally {
    uint64_t acked = 0;
    uint64_t nacked = 0;
    uint64_t returned = 0;
  };
  // Reads the broker's answers until every publish up to `seq` is confirmed.
  ConfirmTally wait_confirms(uint64_t seq);

  // Throws AmqpError("<what>: <reason>") unless `reply` is normal; answers a
  // broker's channel.close / connection.close as the protocol requires.
  // `channel` is the one the RPC ran on.
  void check(amqp_rpc_reply_t reply, std::string_view what, amqp_channel_t channel = kConsumeChannel);

 private:
  void open_channel(amqp_channel_t channel);
  amqp_connection_state_t conn_ = nullptr;
  uint64_t next_seq_ = 1;
  uint64_t confirmed_upto_ = 0;
};

// "connection closed by broker: 403 ACCESS_REFUSED - ..." etc.
std::string describe_reply(const amqp_rpc_reply_t& reply);

}  // namespace eventd
