// Topology description (pure) and its declaration (see topology.hpp).
#include "eventd/topology.hpp"

#include <charconv>

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
  std::optional<int64_t> group_size;
  if (config.topology.quorum_initial_group_size) group_size = *config.topology.quorum_initial_group_size;

  for (const auto& q : queues) {
    QueueSpec work{q.name, {}, QueueSpec::Role::Work, ""};
    work.arguments.push_back({"x-queue-type", type_name(q.type)});
    work.arguments.push_back({"x-dead-letter-exchange", ""});
    work.arguments.push_back({"x-dead-letter-routing-key", dead_letter_queue_name(q.name)});
    if (q.type == QueueType::Quorum) {
      work.arguments.push_back({"x-delivery-limit", int64_t{config.topology.delivery_limit}});
      if (group_size) work.arguments.push_back({kQuorumInitialGroupSize, *group_size});
    }
    t.queues.push_back(std::move(work));
    t.bindings.push_back({q.name, q.exchange, q.binding_key});
    t.consumed.push_back(q.name);
  }
  for (const auto& q : queues) {
    QueueSpec dlq{dead_letter_queue_name(q.name), {}, QueueSpec::Role::DeadLetter, q.name};
    dlq.arguments.push_back({"x-queue-type", type_name(q.type)});
    if (q.type == QueueType::Quorum && group_size) dlq.arguments.push_back({kQuorumInitialGroupSize, *group_size});
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

std::optional<GroupSizeRefusal> refused_group_size(std::string_view refusal) {
  // RabbitMQ: "inequivalent arg 'K' for queue 'Q' in vhost 'V': received X but current
  // is Y", Y being "none", "'3'" or "the value '3' of type 'signedint'".
  if (refusal.find(std::string("inequivalent arg '") + kQuorumInitialGroupSize + "'") == std::string_view::npos)
    return std::nullopt;
  constexpr std::string_view kCurrent = "but current is ";
  const auto at = refusal.find(kCurrent);
  if (at == std::string_view::npos) return std::nullopt;
  const std::string_view current = refusal.substr(at + kCurrent.size());
  if (current.starts_with("none")) return GroupSizeRefusal{};
  const auto open = current.find('\'');
  const auto close = open == std::string_view::npos ? open : current.find('\'', open + 1);
  if (close == std::string_view::npos) return std::nullopt;
  const std::string_view digits = current.substr(open + 1, close - open - 1);
  int64_t value = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (ec != std::errc() || end != digits.data() + digits.size() || value < 1) return std::nullopt;
  return GroupSizeRefusal{value};
}

std::string describe(const std::vector<KeptGroupSize>& kept) {
  const auto text = [](const std::optional<int64_t>& v) { return v ? std::to_string(*v) : std::string("none"); };
  std::string queues;
  for (const auto& k : kept) queues += (queues.empty() ? "" : ", ") + k.queue + " (" + text(k.existing) + ")";
  const std::optional<int64_t> configured = kept.empty() ? std::nullopt : kept.front().configured;
  return std::to_string(kept.size()) + " existing queue(s) keep the " + kQuorumInitialGroupSize +
         " they were created with (configured: " + (configured ? std::to_string(*configured) : "broker default") +
         "): " + queues + "; " + kGroupSizeHint;
}

namespace {

void declare_queue(AmqpSession& session, const std::string& name, const std::vector<QueueArgument>& arguments) {
  FieldTable args;
  for (const auto& a : arguments) {
    if (const auto* s = std::get_if<std::string>(&a.value)) args.add(a.key, *s);
    else args.add_int(a.key, std::get<int64_t>(a.value));
  }
  session.declare_queue(name, args);
}

}  // namespace

std::vector<KeptGroupSize> declare_topology(AmqpSession& session, const Topology& topology) {
  std::vector<KeptGroupSize> kept;
  for (const auto& ex : topology.exchanges) session.declare_exchange(ex.name, ex.type);
  for (const auto& q : topology.queues) {
    try {
      declare_queue(session, q.name, q.arguments);
    } catch (const AmqpError& e) {
      const auto refusal = refused_group_size(e.what());
      if (!refusal) throw;
      // Again with the queue's own value: the broker then compares every other
      // argument, so a real difference is still refused.
      KeptGroupSize k{q.name, refusal->existing, std::nullopt};
      std::vector<QueueArgument> as_is;
      for (const auto& a : q.arguments) {
        if (a.key == kQuorumInitialGroupSize) k.configured = std::get<int64_t>(a.value);
        else as_is.push_back(a);
      }
      if (k.existing) as_is.push_back({kQuorumInitialGroupSize, *k.existing});
      declare_queue(session, q.name, as_is);
      kept.push_back(std::move(k));
    }
  }
  for (const auto& b : topology.bindings) session.bind_queue(b.queue, b.exchange, b.routing_key);
  return kept;
}

}  // namespace eventd
