// Messages as eventd holds them: a delivery with deep-copied properties and body.
#pragma once

#include <amqp.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace eventd {

// How deep tables and arrays may nest in a received message's headers, the headers
// table itself being level 1 (x-death: headers, its array, a table, its routing-keys
// array: 4). A header nested deeper is not copied, walked or sent on: the message is
// refused (dead-lettered with VALIDATION_ERROR, without that header).
inline constexpr unsigned kMaxHeaderDepth = 8;

// The nesting depth of a header value (a string: 0, a table or array: 1 + its deepest
// value's), counted at most up to `limit` + 1: the walk stops there.
unsigned header_depth(const amqp_field_value_t& value, unsigned limit = kMaxHeaderDepth);

// A deep copy of amqp_basic_properties_t (strings and headers), so it outlives the frame
// it came from: in a rabbitmq-c pool of its own when there are headers (their tables are
// cloned into it), else the strings in one buffer. Headers whose tables nest
// deeper than kMaxHeaderDepth are left out and named in dropped_headers().
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
  // The keys of the headers left out for nesting too deep (sanitised UTF-8), in order.
  const std::vector<std::string>& dropped_headers() const { return dropped_headers_; }

 private:
  amqp_pool_t pool_;
  bool pool_owned_ = false;
  std::unique_ptr<char[]> strings_;
  amqp_basic_properties_t props_{};
  std::vector<std::string> dropped_headers_;
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
