// Which broker node the daemon tries next, and how long it waits first. Pure: no
// timers, no I/O.
//
// It starts at a random node, so that many instances spread over the cluster, and
// moves on to the next node in turn after every failure: a connect that did not get
// through set-up, or the loss of an established connection. Within a round (every
// node tried once since the last success) the next node is tried after a short hop;
// once every node has failed in a row, the capped backoff is waited before the next
// round, growing with each failed round. With one node that is the backoff alone.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>

#include "eventd/backoff.hpp"

namespace eventd {

class NodeRotation {
 public:
  // Wait before trying another node of the same round (±20 % jitter): long enough
  // never to spin, short enough that losing a node costs no full backoff.
  static constexpr uint32_t kHopMs = 100;

  explicit NodeRotation(std::size_t nodes, uint64_t seed = std::random_device{}(), Backoff backoff = Backoff())
      : nodes_(nodes == 0 ? 1 : nodes), current_(static_cast<std::size_t>(seed % nodes_)), rng_(seed),
        backoff_(backoff) {}

  // The node to connect to (or connected to) now.
  std::size_t current() const { return current_; }

  struct Next {
    std::size_t node;
    uint32_t delay_ms;
  };
  // current() failed: moves on to the next node and says how long to wait first.
  Next failed() {
    ++failures_;
    current_ = (current_ + 1) % nodes_;
    if (failures_ % nodes_ == 0) return {current_, backoff_.next()};
    std::uniform_real_distribution<double> jitter(0.8, 1.2);
    return {current_, static_cast<uint32_t>(kHopMs * jitter(rng_))};
  }

  // current() is fully up: the next failure starts a new round with the shortest waits.
  void succeeded() {
    failures_ = 0;
    backoff_.reset();
  }

  // Failures in a row since the last success.
  uint32_t failures() const { return failures_; }

 private:
  std::size_t nodes_;
  std::size_t current_ = 0;
  uint32_t failures_ = 0;
  std::minstd_rand rng_;
  Backoff backoff_;
};

}  // namespace eventd
