// Counters and histograms of what eventd did, by queue and type; rendered in the
// Prometheus text format. Loop thread only.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "eventd/circuit_breaker.hpp"

namespace eventd {

struct MessageCounters {
  uint64_t consumed = 0;
  uint64_t acked = 0;
  uint64_t retried = 0;
  uint64_t deferred = 0;  // waited in a retry queue without using an attempt
  uint64_t dead_lettered = 0;
  uint64_t duplicates = 0;
};

// Portfolio checks (portfolio_checks.hpp), by how each ended.
struct PortfolioCheckCounters {
  uint64_t claimed = 0;
  uint64_t applied = 0;      // evaluated, state and alerts recorded
  uint64_t duplicate = 0;    // this check was applied before (a takeover, a slow instance)
  uint64_t stale = 0;        // the monitor changed while the check ran: not evaluated
  uint64_t removed = 0;      // the monitor is stopped or has no portfolio rule: off the schedule
  uint64_t abandoned = 0;    // Redis failed mid-check: it runs again once its lease expires
  uint64_t alerts_published = 0;
  uint64_t publish_failures = 0;  // not confirmed: published again by the user's next check
};

class LatencyHistogram {
 public:
  static constexpr std::array<double, 12> kBounds{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                  0.05,   0.1,   0.25,   0.5,   1.0,  2.5};
  void observe(double seconds);
  const std::array<uint64_t, kBounds.size()>& buckets() const { return buckets_; }
  uint64_t count() const { return count_; }
  double sum() const { return sum_; }

 private:
  std::array<uint64_t, kBounds.size()> buckets_{};  // cumulative on render, not here
  uint64_t count_ = 0;
  double sum_ = 0;
};

class Metrics {
 public:
  Metrics() = default;
  Metrics(const Metrics&) = delete;  // the lookup memo points into this object's maps
  Metrics& operator=(const Metrics&) = delete;
  // `type` is "unknown" when the body could not tell it.
  MessageCounters& counters(std::string_view queue, std::string_view type);
  LatencyHistogram& handler_latency(std::string_view type);

  int64_t in_flight = 0;
  bool amqp_up = false;
  bool redis_up = false;
  bool consuming = false;
  // Every configured broker node ("host:port", config order); true for the one
  // the AMQP connection is on.
  std::vector<std::pair<std::string, bool>> amqp_nodes;
  uint64_t amqp_reconnects = 0;
  uint64_t redis_reconnects = 0;
  // Masters eventd routes to (1 for a standalone Redis) and how many it reaches.
  uint64_t redis_nodes = 0;
  uint64_t redis_nodes_up = 0;
  // WAITs (redis.minReplicas) that fell short: the message waited and ran again.
  uint64_t replica_waits_failed = 0;
  PortfolioCheckCounters portfolio;
  int64_t portfolio_in_flight = 0;
  // channel -> state of its sink's circuit breaker (file and webhook sinks).
  std::map<std::string, CircuitState, std::less<>> sink_circuits;

  std::string render() const;

 private:
  // queue -> type -> counters; looked up by string_view, so a hit allocates nothing.
  using ByType = std::map<std::string, MessageCounters, std::less<>>;
  std::map<std::string, ByType, std::less<>> counters_;
  std::map<std::string, LatencyHistogram, std::less<>> latency_;
  // The last lookups, as most messages in a row share queue and type (two map lookups a
  // message showed in profiles). The views are the map keys: nodes never move.
  std::string_view last_queue_, last_type_, last_latency_type_;
  MessageCounters* last_counters_ = nullptr;
  LatencyHistogram* last_latency_ = nullptr;
};

}  // namespace eventd
