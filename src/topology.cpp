// Topology description (pure) and its declaration (see topology.hpp).
#include "eventd/topology.hpp"

#include "eventd/amqp_session.hpp"
#include "eventd/amqp_table.hpp"
#include "eventd/retry_policy.hpp"

namespace eventd {

const QueueSpec* Topology::find_queue(const std::string& name) const {
  for (const auto& q : queues) {
    if (q.name == name) return &q;
  }
  return nullptr;
}

static const char* type_name(QueueType t) { return t == QueueType::Quorum ? "quorum" : "classic"; }

Topology build_topology(const Config& config) {
  Topology t;
  t.exchanges = {config.topology.quotes_exchange, config.topology.events_exchange};
  const std::vector<QueueConfig> queues =
      config.topology.queues.empty() ? default_queues(config.topology) : config.topology.queues;
  const std::vector<uint32_t> delays = RetryPolicy(config.retry).distinct_delays();

  for (const auto& q : queues) {
    QueueSpec work{q.name, {}, QueueSpec::Role::Work, ""};
    work.arguments.push_back({"x-queue-type", type_name(q.type)});
    work.arguments.push_back({"x-dead-letter-exchange", ""});
    work.arguments.push_back({"x-dead-letter-routing-key", dead_letter_queue_name(q.name)});
    if (q.type == QueueType::Quorum) {
      work.arguments.push_back({"x-delivery-limit", int64_t{config.topology.delivery_limit}});
    }
    t.queues.push_back(std::move(work));
    t.bindings.push_back({q.name, q.exchange, q.binding_key});
    t.consumed.push_back(q.name);
  }
  for (const auto& q : queues) {
    QueueSpec dlq{dead_letter_queue_name(q.name), {}, QueueSpec::Role::DeadLetter, q.name};
    dlq.arguments.push_back({"x-queue-type", type_name(q.type)});
    t.queues.push_back(std::move(dlq));
    for (uint32_t delay : delays) {
      QueueSpec retry{retry_queue_name(q.name, delay), {}, QueueSpec::Role::Retry, q.name};
      retry.arguments.push_back({"x-queue-type", "classic"});
      retry.arguments.push_back({"x-message-ttl", int64_t{delay}});
      retry.arguments.push_back({"x-dead-letter-exchange", ""});
      retry.arguments.push_back({"x-dead-letter-routing-key", q.name});
      t.queues.push_back(std::move(retry));
    }
  }
  return t;
}

void declare_topology(AmqpSession& session, const Topology& topology) {
  for (const auto& ex : topology.exchanges) session.declare_exchange(ex.name, ex.type);
  for (const auto& q : topology.queues) {
    FieldTable args;
    for (const auto& a : q.arguments) {
      if (const auto* s = std::get_if<std::string>(&a.value)) args.add(a.key, *s);
      else args.add_int(a.key, std::get<int64_t>(a.value));
    }
    session.declare_queue(q.name, args);
  }
  for (const auto& b : topology.bindings) session.bind_queue(b.queue, b.exchange, b.routing_key);
}

}  // namespace eventd
