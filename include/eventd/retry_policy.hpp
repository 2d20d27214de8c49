// Delayed-retry decisions: pure, no I/O. A failed message either waits in the TTL
// retry queue for its attempt or goes to the dead-letter queue.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "eventd/config.hpp"
#include "eventd/processing_error.hpp"

namespace eventd {

class RetryPolicy {
 public:
  explicit RetryPolicy(const RetryConfig& config);

  // Delay before retry number `retry_count` + 1, i.e. after `retry_count` retries
  // already happened: initial * multiplier^retry_count, capped at max_delay.
  uint32_t delay_ms(uint32_t retry_count) const;

  // Every distinct delay a message can wait, ascending: one TTL queue each. Never
  // empty: deferrals wait there even when failures are never retried.
  std::vector<uint32_t> distinct_delays() const;

  struct Decision {
    bool retry = false;           // false: dead-letter
    uint32_t delay_ms = 0;        // when retrying
    ProcessingError error;        // what the dead letter says (MAX_ATTEMPTS wraps the last error)
  };
  // `retry_count`: x-retry-count of the failed delivery (0 for a first delivery).
  Decision decide(const ProcessingError& error, uint32_t retry_count) const;

  // True when a body timestamp (ms) is older than max age at `now_ms`.
  bool expired(int64_t timestamp_ms, int64_t now_ms) const;

  uint32_t max_attempts() const { return config_.max_attempts; }

  // The retry queue delay to wait at least `wanted_ms` (the shortest one that long,
  // else the longest).
  uint32_t queue_delay_at_least(uint32_t wanted_ms) const;
  // Deferrals (rate limit, open circuit) use up no attempt but are bounded, so a
  // message cannot wait forever: past this many it is dead-lettered.
  static constexpr int64_t kMaxDeferrals = 1000;

 private:
  RetryConfig config_;
};

// The name of the TTL queue that holds retries of `queue` for `delay_ms`.
std::string retry_queue_name(const std::string& queue, uint32_t delay_ms);
std::string dead_letter_queue_name(const std::string& queue);

}  // namespace eventd
