// Circuit breaker transitions (see circuit_breaker.hpp).
#include "eventd/circuit_breaker.hpp"

#include <algorithm>

namespace eventd {

std::string_view circuit_state_name(CircuitState state) {
  switch (state) {
    case CircuitState::Closed: return "closed";
    case CircuitState::Open: return "open";
    case CircuitState::HalfOpen: return "half_open";
  }
  return "closed";
}

CircuitBreaker::CircuitBreaker(const CircuitBreakerConfig& config) : config_(config) {
  config_.failure_threshold = std::max<uint32_t>(config_.failure_threshold, 1);
  config_.half_open_max_calls = std::max<uint32_t>(config_.half_open_max_calls, 1);
  config_.open_timeout_ms = std::max<int64_t>(config_.open_timeout_ms, 0);
}

void CircuitBreaker::advance(int64_t now_ms) {
  if (state_ == CircuitState::Open && now_ms - opened_at_ms_ >= config_.open_timeout_ms) {
    state_ = CircuitState::HalfOpen;
    trials_ = 0;
  }
  if (state_ == CircuitState::HalfOpen && trials_ >= config_.half_open_max_calls &&
      now_ms - last_trial_at_ms_ >= config_.open_timeout_ms) {
    trials_ = 0;
  }
}

bool CircuitBreaker::allow(int64_t now_ms) {
  advance(now_ms);
  switch (state_) {
    case CircuitState::Closed: return true;
    case CircuitState::Open: return false;
    case CircuitState::HalfOpen:
      if (trials_ >= config_.half_open_max_calls) return false;
      ++trials_;
      last_trial_at_ms_ = now_ms;
      return true;
  }
  return false;
}

void CircuitBreaker::record_success(int64_t now_ms) {
  advance(now_ms);
  if (state_ == CircuitState::Open) return;
  state_ = CircuitState::Closed;
  failures_ = 0;
  trials_ = 0;
}

void CircuitBreaker::record_failure(int64_t now_ms) {
  advance(now_ms);
  switch (state_) {
    case CircuitState::Closed:
      if (++failures_ < config_.failure_threshold) return;
      break;
    case CircuitState::Open: return;
    case CircuitState::HalfOpen: break;
  }
  state_ = CircuitState::Open;
  opened_at_ms_ = now_ms;
  trials_ = 0;
}

CircuitState CircuitBreaker::state(int64_t now_ms) const {
  if (state_ == CircuitState::Open && now_ms - opened_at_ms_ >= config_.open_timeout_ms) return CircuitState::HalfOpen;
  return state_;
}

int64_t CircuitBreaker::retry_after_ms(int64_t now_ms) const {
  switch (state_) {
    case CircuitState::Closed: return 0;
    case CircuitState::Open: return std::max<int64_t>(opened_at_ms_ + config_.open_timeout_ms - now_ms, 0);
    case CircuitState::HalfOpen:
      if (trials_ < config_.half_open_max_calls) return 0;
      return std::max<int64_t>(last_trial_at_ms_ + config_.open_timeout_ms - now_ms, 0);
  }
  return 0;
}

}  // namespace eventd
