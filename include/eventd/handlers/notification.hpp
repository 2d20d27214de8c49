// notification: delivery through the channel's sink, behind a per-user, per-channel
// token bucket (in Redis) and a circuit breaker per sink (in memory).
//
// redis sink: one Lua script checks the idempotency key and the bucket, XADDs to
// the user's stream (keys::notifications) and writes the key: effectively once.
// file and webhook sinks act outside Redis, so a short lease (keys::lease) is taken
// with the bucket check first; the key is written after the sink succeeds. A crash
// in between means the notification is delivered again after the lease expires (at
// least once), never skipped. A Redis failure in between does not: the handler
// remembers the delivery and its rerun only writes the key.
#pragma once

#include <cstddef>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "eventd/circuit_breaker.hpp"
#include "eventd/config.hpp"
#include "eventd/handler.hpp"
#include "eventd/redis/batch.hpp"
#include "eventd/redis_client.hpp"
#include "eventd/sinks.hpp"

namespace eventd {

// Idempotency keys of notifications a sink delivered but Redis has not recorded yet
// (the SET failed or could not be sent). Bounded: past `capacity` the oldest is
// forgotten, and that notification goes out again once its lease expires (at least
// once, as after a crash). In memory only, on the loop thread.
class UnrecordedDeliveries {
 public:
  explicit UnrecordedDeliveries(std::size_t capacity = kDefaultCapacity);
  static constexpr std::size_t kDefaultCapacity = 10000;

  void remember(std::string_view idem_key);
  bool contains(std::string_view idem_key) const;
  void forget(std::string_view idem_key);  // once recorded
  std::size_t size() const { return by_key_.size(); }

 private:
  std::size_t capacity_;
  std::list<std::string> oldest_first_;
  std::map<std::string, std::list<std::string>::iterator, std::less<>> by_key_;
};

class NotificationHandler : public Handler {
 public:
  NotificationHandler(uv_loop_t* loop, RedisClient& redis, const Config& config);
  void handle(const Message& message, HandlerDone done) override;
  // Each channel with a breaker (file and webhook sinks) and its state at now_ms.
  std::map<std::string, CircuitState, std::less<>> circuit_states(int64_t now_ms) const;

 private:
  struct Channel {
    SinkKind kind = SinkKind::Redis;
    std::unique_ptr<Sink> sink;  // file and webhook
    CircuitBreaker breaker;
    std::string missing;         // why this channel cannot deliver (e.g. no webhook url)
  };

  void deliver_external(Channel& channel, const std::string& name, const Message& message, HandlerDone done);
  // Writes the idempotency key of a delivered notification and frees its lease.
  void record_delivery(const std::string& idem, const std::string& lease, HandlerDone done);

  uv_loop_t* loop_;
  RedisClient& redis_;
  const NotifyConfig& notify_;
  std::string ttl_;
  CurlMulti curl_;
  std::map<std::string, Channel, std::less<>> channels_;
  std::unique_ptr<redis::Batcher> stream_;  // redis sink
  std::unique_ptr<redis::Batcher> lease_;   // file and webhook sinks
  UnrecordedDeliveries unrecorded_;
};

}  // namespace eventd
