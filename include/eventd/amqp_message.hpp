// Messages as eventd holds them: a delivery with deep-copied properties and body.
#pragma once

#include <amqp.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace eventd {

// A deep copy of amqp_basic_properties_t (strings and headers) kept in its own
// rabbitmq-c pool, so it outlives the frame it came from.
class OwnedProperties {
 public:
  OwnedProperties();
  explicit OwnedProperties(const amqp_basic_properties_t& source);
  ~OwnedProperties();
  OwnedProperties(OwnedProperties&& other) noexcept;
  OwnedProperties& operator=(OwnedProperties&& other) noexcept;
  OwnedProperties(const OwnedProperties&) = delete;
  OwnedProperties& operator=(const OwnedProperties&) = delete;

  const amqp_basic_properties_t& get() const { return props_; }
  std::string_view message_id() const;
  std::string_view type() const;
  std::string_view correlation_id() const;
  std::string_view reply_to() const;
  const amqp_table_t* headers() const;

 private:
  amqp_pool_t pool_;
  bool pool_owned_ = false;
  amqp_basic_properties_t props_{};
};

// Properties of a JSON message eventd or eventctl publishes: content_type
// application/json, persistent, message_id, type, timestamp (AMQP: seconds), and
// correlation_id / reply_to when given. Borrows the strings: keep them alive until
// the publish call returns.
amqp_basic_properties_t json_properties(std::string_view message_id, std::string_view type, uint64_t timestamp_s,
                                        std::string_view correlation_id = {}, std::string_view reply_to = {});

struct Delivery {
  uint64_t generation = 0;   // the AMQP connection it arrived on; acks on a newer one are dropped
  uint64_t delivery_tag = 0;
  bool redelivered = false;
  std::string queue;
  std::string exchange;
  std::string routing_key;
  OwnedProperties properties;
  std::string body;
};

}  // namespace eventd
