// Retry schedule and dead-letter decisions (see retry_policy.hpp).
#include "eventd/retry_policy.hpp"

#include <algorithm>

namespace eventd {

std::string_view error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::ParseError: return "PARSE_ERROR";
    case ErrorCode::ValidationError: return "VALIDATION_ERROR";
    case ErrorCode::UnknownType: return "UNKNOWN_TYPE";
    case ErrorCode::NotFound: return "NOT_FOUND";
    case ErrorCode::RateLimit: return "RATE_LIMIT";
    case ErrorCode::DownstreamError: return "DOWNSTREAM_ERROR";
    case ErrorCode::Expired: return "EXPIRED";
    case ErrorCode::MaxAttempts: return "MAX_ATTEMPTS";
    case ErrorCode::Internal: return "INTERNAL";
  }
  return "INTERNAL";
}

RetryPolicy::RetryPolicy(const RetryConfig& config) : config_(config) {
  config_.max_attempts = std::max<uint32_t>(config_.max_attempts, 1);
  config_.multiplier = std::max<uint32_t>(config_.multiplier, 1);
  config_.initial_delay_ms = std::max<uint32_t>(config_.initial_delay_ms, 1);
  config_.max_delay_ms = std::max(config_.max_delay_ms, config_.initial_delay_ms);
}

uint32_t RetryPolicy::delay_ms(uint32_t retry_count) const {
  uint64_t delay = config_.initial_delay_ms;
  for (uint32_t i = 0; i < retry_count && delay < config_.max_delay_ms; ++i) delay *= config_.multiplier;
  return static_cast<uint32_t>(std::min<uint64_t>(delay, config_.max_delay_ms));
}

std::vector<uint32_t> RetryPolicy::distinct_delays() const {
  std::vector<uint32_t> delays;
  // Retries happen after runs 1 .. max_attempts-1. Deferrals (rate limit, open
  // circuit) use up no attempt and wait in these queues too, so there is always one,
  // even when max attempts 1 means a failure is never retried.
  for (uint32_t n = 0; n == 0 || n + 1 < config_.max_attempts; ++n) {
    uint32_t d = delay_ms(n);
    if (delays.empty() || delays.back() != d) delays.push_back(d);
    if (d >= config_.max_delay_ms) break;
  }
  return delays;
}

RetryPolicy::Decision RetryPolicy::decide(const ProcessingError& error, uint32_t retry_count) const {
  Decision d;
  if (!error.retryable) {
    d.error = error;
    return d;
  }
  // This run was number retry_count + 1.
  if (retry_count + 1 >= config_.max_attempts) {
    d.error = ProcessingError::permanent(
        ErrorCode::MaxAttempts, "gave up after " + std::to_string(retry_count + 1) + " attempts; last error " +
                                    std::string(error_code_name(error.code)) + ": " + error.message);
    return d;
  }
  d.retry = true;
  d.delay_ms = delay_ms(retry_count);
  d.error = error;
  return d;
}

uint32_t RetryPolicy::queue_delay_at_least(uint32_t wanted_ms) const {
  std::vector<uint32_t> delays = distinct_delays();
  for (uint32_t d : delays) {
    if (d >= wanted_ms) return d;
  }
  return delays.back();
}

bool RetryPolicy::expired(int64_t timestamp_ms, int64_t now_ms) const {
  return now_ms - timestamp_ms > static_cast<int64_t>(config_.max_age_ms);
}

std::string retry_queue_name(const std::string& queue, uint32_t delay_ms) {
  return queue + ".retry." + std::to_string(delay_ms) + "ms";
}

std::string dead_letter_queue_name(const std::string& queue) { return queue + ".dlq"; }

}  // namespace eventd
