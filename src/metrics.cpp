// Metrics storage and Prometheus text rendering (see metrics.hpp).
#include "eventd/metrics.hpp"

#include <cstdio>

namespace eventd {

void LatencyHistogram::observe(double seconds) {
  for (std::size_t i = 0; i < kBounds.size(); ++i) {
    if (seconds <= kBounds[i]) {
      ++buckets_[i];
      break;
    }
  }
  ++count_;
  sum_ += seconds;
}

MessageCounters& Metrics::counters(std::string_view queue, std::string_view type) {
  if (last_counters_ != nullptr && queue == last_queue_ && type == last_type_) return *last_counters_;
  auto q = counters_.find(queue);
  if (q == counters_.end()) q = counters_.emplace(std::string(queue), ByType{}).first;
  auto t = q->second.find(type);
  if (t == q->second.end()) t = q->second.emplace(std::string(type), MessageCounters{}).first;
  last_queue_ = q->first;
  last_type_ = t->first;
  last_counters_ = &t->second;
  return t->second;
}

LatencyHistogram& Metrics::handler_latency(std::string_view type) {
  if (last_latency_ != nullptr && type == last_latency_type_) return *last_latency_;
  auto it = latency_.find(type);
  if (it == latency_.end()) it = latency_.emplace(std::string(type), LatencyHistogram{}).first;
  last_latency_type_ = it->first;
  last_latency_ = &it->second;
  return it->second;
}

namespace {

// Label values escape backslash, quote and newline (Prometheus text format).
std::string label(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out.push_back('\\');
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out.push_back(c);
  }
  return out;
}

template <typename ByQueue>
void counter_family(std::string& out, const char* name, const char* help, const ByQueue& all,
                    uint64_t MessageCounters::*field) {
  out += "# HELP "; out += name; out += ' '; out += help; out += '\n';
  out += "# TYPE "; out += name; out += " counter\n";
  for (const auto& [queue, by_type] : all) {
    for (const auto& [type, c] : by_type) {
      out += name;
      out += "{queue=\"" + label(queue) + "\",type=\"" + label(type) + "\"} ";
      out += std::to_string(c.*field);
      out += '\n';
    }
  }
}

void gauge(std::string& out, const char* name, const char* help, const std::string& value) {
  out += "# HELP "; out += name; out += ' '; out += help; out += '\n';
  out += "# TYPE "; out += name; out += " gauge\n";
  out += name; out += ' '; out += value; out += '\n';
}

}  // namespace

std::string Metrics::render() const {
  std::string out;
  out.reserve(4096);
  counter_family(out, "eventd_messages_consumed_total", "Messages delivered to eventd.", counters_,
                 &MessageCounters::consumed);
  counter_family(out, "eventd_messages_acked_total", "Deliveries acknowledged: effects recorded, or a copy confirmed in a retry or dead-letter queue.",
                 counters_, &MessageCounters::acked);
  counter_family(out, "eventd_messages_retried_total", "Messages sent to a delayed-retry queue.", counters_,
                 &MessageCounters::retried);
  counter_family(out, "eventd_messages_deferred_total",
                 "Messages that waited in a retry queue without using an attempt (rate limit, open circuit).",
                 counters_, &MessageCounters::deferred);
  counter_family(out, "eventd_messages_dead_lettered_total", "Messages sent to a dead-letter queue.", counters_,
                 &MessageCounters::dead_lettered);
  counter_family(out, "eventd_messages_duplicate_total", "Redelivered or republished duplicates acked unapplied.",
                 counters_, &MessageCounters::duplicates);
  out += "# HELP eventd_handler_duration_seconds Time from delivery to the handler's result.\n";
  out += "# TYPE eventd_handler_duration_seconds histogram\n";
  for (const auto& [type, h] : latency_) {
    uint64_t cumulative = 0;
    for (std::size_t i = 0; i < LatencyHistogram::kBounds.size(); ++i) {
      cumulative += h.buckets()[i];
      char le[32];
      std::snprintf(le, sizeof le, "%g", LatencyHistogram::kBounds[i]);
      out += "eventd_handler_duration_seconds_bucket{type=\"" + label(type) + "\",le=\"" + le + "\"} " +
             std::to_string(cumulative) + '\n';
    }
    out += "eventd_handler_duration_seconds_bucket{type=\"" + label(type) + "\",le=\"+Inf\"} " +
           std::to_string(h.count()) + '\n';
    char sum[64];
    std::snprintf(sum, sizeof sum, "%.6f", h.sum());
    out += "eventd_handler_duration_seconds_sum{type=\"" + label(type) + "\"} " + sum + '\n';
    out += "eventd_handler_duration_seconds_count{type=\"" + label(type) + "\"} " + std::to_string(h.count()) + '\n';
  }
  gauge(out, "eventd_in_flight_messages", "Messages received and not yet acked.", std::to_string(in_flight));
  gauge(out, "eventd_amqp_up", "1 while the AMQP connection is open.", amqp_up ? "1" : "0");
  gauge(out, "eventd_redis_up", "1 while Redis is connected.", redis_up ? "1" : "0");
  gauge(out, "eventd_redis_nodes", "Redis masters eventd routes to (1: a standalone Redis).",
        std::to_string(redis_nodes));
  gauge(out, "eventd_redis_nodes_up", "Redis masters eventd is connected to.", std::to_string(redis_nodes_up));
  out += "# HELP eventd_redis_replica_waits_failed_total Replica checks (redis.minReplicas) that fell short; the "
         "message waited and ran again.\n# TYPE eventd_redis_replica_waits_failed_total counter\n"
         "eventd_redis_replica_waits_failed_total " + std::to_string(replica_waits_failed) + '\n';
  out += "# HELP eventd_portfolio_checks_total Portfolio checks this instance claimed and how each ended.\n"
         "# TYPE eventd_portfolio_checks_total counter\n";
  for (const auto& [outcome, n] : {std::pair<const char*, uint64_t>{"claimed", portfolio.claimed},
                                   {"applied", portfolio.applied},
                                   {"duplicate", portfolio.duplicate},
                                   {"stale", portfolio.stale},
                                   {"removed", portfolio.removed},
                                   {"abandoned", portfolio.abandoned}}) {
    out += std::string("eventd_portfolio_checks_total{outcome=\"") + outcome + "\"} " + std::to_string(n) + '\n';
  }
  out += "# HELP eventd_portfolio_alerts_published_total Portfolio alerts published and confirmed by the broker.\n"
         "# TYPE eventd_portfolio_alerts_published_total counter\n"
         "eventd_portfolio_alerts_published_total " + std::to_string(portfolio.alerts_published) + '\n';
  out += "# HELP eventd_portfolio_publish_failures_total Portfolio alerts the broker did not confirm; the user's "
         "next check publishes them again.\n# TYPE eventd_portfolio_publish_failures_total counter\n"
         "eventd_portfolio_publish_failures_total " + std::to_string(portfolio.publish_failures) + '\n';
  gauge(out, "eventd_portfolio_checks_in_flight", "Portfolio checks claimed and not finished.",
        std::to_string(portfolio_in_flight));
  gauge(out, "eventd_consuming", "1 while every consumer is active.", consuming ? "1" : "0");
  // One series per configured node, 1 for the connected one (none while down): the
  // set of series stays fixed, so "which node" and "on none" are both plain queries.
  out += "# HELP eventd_amqp_connected_node The broker node the AMQP connection is on (1), per configured node.\n"
         "# TYPE eventd_amqp_connected_node gauge\n";
  for (const auto& [node, connected] : amqp_nodes) {
    out += "eventd_amqp_connected_node{node=\"" + label(node) + "\"} " + (connected ? "1" : "0") + '\n';
  }
  out += "# HELP eventd_reconnects_total Reconnect attempts by peer.\n# TYPE eventd_reconnects_total counter\n";
  out += "eventd_reconnects_total{peer=\"amqp\"} " + std::to_string(amqp_reconnects) + '\n';
  out += "eventd_reconnects_total{peer=\"redis\"} " + std::to_string(redis_reconnects) + '\n';
  // One series per state, 1 for the current one: alerts can match state="open".
  out += "# HELP eventd_sink_circuit_state Circuit breaker of each channel's sink (1 = the state it is in).\n"
         "# TYPE eventd_sink_circuit_state gauge\n";
  for (const auto& [channel, state] : sink_circuits) {
    for (CircuitState s : {CircuitState::Closed, CircuitState::Open, CircuitState::HalfOpen}) {
      out += "eventd_sink_circuit_state{channel=\"" + label(channel) + "\",state=\"" +
             std::string(circuit_state_name(s)) + "\"} " + (s == state ? "1" : "0") + '\n';
    }
  }
  return out;
}

}  // namespace eventd
