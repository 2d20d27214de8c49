// The per-message pipeline: parse, normalise keys, validate against the type's
// schema, check age, run the type's handler, then ack, retry (TTL retry queue) or
// dead-letter (Q.dlq with x-error-* and x-original-* headers). A message is acked
// only after its effects are recorded and every publish it caused is confirmed.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "eventd/amqp_connection.hpp"
#include "eventd/config.hpp"
#include "eventd/handler.hpp"
#include "eventd/metrics.hpp"
#include "eventd/redis_client.hpp"
#include "eventd/retry_policy.hpp"
#include "eventd/schema_registry.hpp"
#include "eventd/uv_handle.hpp"

namespace eventd {

// Headers eventd writes on retries and dead letters (x-retry-count, x-error-*,
// x-original-*, x-failed-at) and on every publish (x-eventd-publish): replaced,
// never duplicated, when a message is republished, and dropped on replay.
bool is_eventd_header(std::string_view key);

// Caps a header value at `max` bytes without splitting a UTF-8 sequence; invalid
// UTF-8 becomes U+FFFD first.
std::string cap_utf8(std::string_view text, std::size_t max);

// Names the headers OwnedProperties left out for nesting deeper than kMaxHeaderDepth:
// "AMQP header 'x-deep' nests tables deeper than 8 levels".
std::string too_deep_headers_message(const std::vector<std::string>& dropped);

class Dispatcher {
 public:
  Dispatcher(uv_loop_t* loop, const Config& config, AmqpConnection& amqp, RedisClient& redis,
             const SchemaRegistry& schemas, Metrics& metrics);
  ~Dispatcher();
  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;

  void register_handler(const std::string& type, std::unique_ptr<Handler> handler);

  void on_delivery(Delivery&& delivery);
  // Redis is back: run the messages parked while it was away.
  void resume_parked();
  // The AMQP connection dropped: the broker requeues everything unacked, so parked
  // and waiting messages of that connection are let go.
  void on_amqp_lost();

  std::size_t in_flight() const { return jobs_.size(); }
  std::size_t parked() const { return parked_.size(); }
  // Called whenever in_flight() drops to zero (drain on shutdown).
  std::function<void()> on_idle;

 private:
  struct Job;
  using JobIt = std::list<Job>::iterator;

  void start(JobIt job);
  void finish(JobIt job, HandlerResult result);
  void ack(JobIt job);
  // Runs `then` once the job's Redis effects are on enough replicas (redis.minReplicas).
  template <typename Then>
  void when_replicated(JobIt job, Then&& then);
  void wait_for_replicas(JobIt job, std::function<void()> then);
  static void on_replica_timer(uv_timer_t* handle);
  void publish_outbox(JobIt job, Outbox outbox);
  void finish_outbox(JobIt job);
  // Sends the message to its TTL retry queue. A deferral keeps x-retry-count and
  // counts x-defer-count instead.
  void retry(JobIt job, const ProcessingError& error, uint32_t delay_ms, bool deferral = false);
  void dead_letter(JobIt job, const ProcessingError& error);
  // Publishes the job's body with `props` to `queue` (default exchange); on the
  // confirm counts `counter` and acks the original, otherwise requeues it later.
  void send_copy(JobIt job, const std::string& queue, const amqp_basic_properties_t& props,
                 uint64_t MessageCounters::*counter);
  void requeue_later(JobIt job);
  // The job's delivery is still unsettled on the live connection (else the broker has
  // requeued it, and whatever we publish for it would duplicate the redelivery).
  bool from_current_connection(JobIt job) const;
  void release(JobIt job);
  static void on_requeue_timer(uv_timer_t* handle);

  uv_loop_t* loop_;
  const Config& config_;
  AmqpConnection& amqp_;
  RedisClient& redis_;
  const SchemaRegistry& schemas_;
  Metrics& metrics_;
  RetryPolicy retry_;
  std::map<std::string, std::unique_ptr<Handler>, std::less<>> handlers_;
  std::list<Job> jobs_;
  // Released jobs, kept for the next deliveries: a Job (with its inline JSON buffer)
  // is a large allocation, and one malloc/free per message of it showed in profiles.
  std::list<Job> spare_jobs_;
  std::vector<JobIt> parked_;
  std::vector<JobIt> requeue_;
  UvHandle<uv_timer_t> requeue_timer_;
  UvHandle<uv_timer_t> replica_timer_;  // runs the messages whose replica check fell short again
};

}  // namespace eventd
