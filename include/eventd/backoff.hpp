// Capped exponential backoff with jitter for reconnects. Pure: no timers, no I/O.
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>

namespace eventd {

class Backoff {
 public:
  Backoff(uint32_t initial_ms = 250, uint32_t max_ms = 30000, uint64_t seed = std::random_device{}())
      : initial_ms_(initial_ms), max_ms_(std::max(max_ms, initial_ms)), rng_(seed) {}

  // The next wait: initial, 2x, 4x, ... capped at max, each scaled by a random
  // factor in [0.8, 1.2] so that many clients do not reconnect in lockstep.
  uint32_t next() {
    uint64_t base = std::min<uint64_t>(static_cast<uint64_t>(initial_ms_) << std::min(attempt_, 20u), max_ms_);
    ++attempt_;
    std::uniform_real_distribution<double> jitter(0.8, 1.2);
    return static_cast<uint32_t>(static_cast<double>(base) * jitter(rng_));
  }
  void reset() { attempt_ = 0; }
  uint32_t attempts() const { return attempt_; }

 private:
  uint32_t initial_ms_;
  uint32_t max_ms_;
  uint32_t attempt_ = 0;
  std::minstd_rand rng_;
};

}  // namespace eventd
