// Circuit breaker for one notification sink: pure state machine, no I/O, no clock;
// the caller passes the time in milliseconds.
#pragma once

#include <cstdint>
#include <string_view>

namespace eventd {

struct CircuitBreakerConfig {
  uint32_t failure_threshold = 5;    // consecutive failures that open the circuit (0 acts as 1)
  int64_t open_timeout_ms = 30'000;  // how long it stays open before a trial
  uint32_t half_open_max_calls = 1;  // trials admitted at a time while half-open (0 acts as 1)
};

enum class CircuitState { Closed, Open, HalfOpen };
std::string_view circuit_state_name(CircuitState state);  // "closed" | "open" | "half_open"

// Closed: every call is allowed; failure_threshold consecutive failures open it.
// Open: nothing is allowed until open_timeout_ms has passed since it opened; then it is
//   half-open (lazily: the time passed in decides, no timer is needed).
// HalfOpen: up to half_open_max_calls trials are admitted. A success closes it and resets
//   the failure count; a failure reopens it with a fresh timeout. A trial that has not
//   reported within open_timeout_ms of the last admission is presumed lost, and its slots
//   are freed, so a lost result cannot wedge the circuit.
// Results reported while open (from calls admitted before it opened) change nothing.
class CircuitBreaker {
 public:
  explicit CircuitBreaker(const CircuitBreakerConfig& config = {});

  // Whether a call may go to the sink now; in HalfOpen, true takes a trial slot, so
  // call it only when the call will really be made, and report its result.
  bool allow(int64_t now_ms);
  void record_success(int64_t now_ms);
  void record_failure(int64_t now_ms);

  CircuitState state(int64_t now_ms) const;
  // 0 when allow(now_ms) would admit a call; otherwise how long until it may: the rest
  // of the open timeout, or, while every half-open slot is taken, until they are freed.
  int64_t retry_after_ms(int64_t now_ms) const;

  uint32_t consecutive_failures() const { return failures_; }
  const CircuitBreakerConfig& config() const { return config_; }

 private:
  // Applies the transitions that time alone causes.
  void advance(int64_t now_ms);

  CircuitBreakerConfig config_;
  CircuitState state_ = CircuitState::Closed;
  uint32_t failures_ = 0;
  int64_t opened_at_ms_ = 0;
  uint32_t trials_ = 0;            // half-open slots taken
  int64_t last_trial_at_ms_ = 0;  // when the last one was taken
};

}  // namespace eventd
