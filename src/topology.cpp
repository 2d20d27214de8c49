// Topology description (pure) and its declaration (see topology.hpp).
#include "eventd/topology.hpp"

#include <algorithm>
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
    work.arguments.push_back({kQueueType, type_name(q.type)});
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
    dlq.arguments.push_back({kQueueType, type_name(q.type)});
    if (q.type == QueueType::Quorum && group_size) dlq.arguments.push_back({kQuorumInitialGroupSize, *group_size});
    t.queues.push_back(std::move(dlq));
    for (uint32_t delay : delays) {
      QueueSpec retry{retry_queue_name(q.name, delay), {}, QueueSpec::Role::Retry, q.name};
      retry.arguments.push_back({kQueueType, type_name(q.type)});
      retry.arguments.push_back({"x-message-ttl", int64_t{delay}});
      retry.arguments.push_back({"x-dead-letter-exchange", ""});
      retry.arguments.push_back({"x-dead-letter-routing-key", q.name});
      if (q.type == QueueType::Quorum && group_size) retry.arguments.push_back({kQuorumInitialGroupSize, *group_size});
      t.queues.push_back(std::move(retry));
    }
  }
  return t;
}

bool keepable(const QueueSpec& q, std::string_view key, std::string_view existing) {
  if (key == kQuorumInitialGroupSize) {
    int64_t n = 0;
    const auto [end, ec] = std::from_chars(existing.data(), existing.data() + existing.size(), n);
    return existing == "none" || (ec == std::errc() && end == existing.data() + existing.size() && n >= 1);
  }
  return key == kQueueType && q.role == QueueSpec::Role::Retry && existing == "classic";
}

std::optional<Refusal> refused_argument(std::string_view refusal) {
  // RabbitMQ 3.10: "inequivalent arg 'K' for queue 'Q' in vhost 'V': received X but
  // current is Y", Y being "none", "'3'" or "the value '3' of type 'signedint'".
  constexpr std::string_view kArg = "inequivalent arg '";
  constexpr std::string_view kCurrent = "but current is ";
  const auto arg = refusal.find(kArg);
  const auto arg_end = arg == std::string_view::npos ? arg : refusal.find('\'', arg + kArg.size());
  const auto at = refusal.find(kCurrent);
  if (arg_end == std::string_view::npos || at == std::string_view::npos) return std::nullopt;
  Refusal r{std::string(refusal.substr(arg + kArg.size(), arg_end - arg - kArg.size())), "none"};
  const std::string_view current = refusal.substr(at + kCurrent.size());
  if (current.starts_with("none")) return r;
  const auto open = current.find('\'');
  const auto close = open == std::string_view::npos ? open : current.find('\'', open + 1);
  if (close == std::string_view::npos) return std::nullopt;
  r.existing = current.substr(open + 1, close - open - 1);
  return r;
}

std::vector<std::string> describe(const std::vector<KeptArgument>& kept) {
  std::string sizes, retries, configured;
  std::size_t n_sizes = 0, n_retries = 0;
  for (const auto& k : kept) {
    if (k.key == kQuorumInitialGroupSize) {
      sizes += (sizes.empty() ? "" : ", ") + k.queue + " (" + k.existing + ")";
      configured = k.configured;
      ++n_sizes;
    } else {
      retries += (retries.empty() ? "" : ", ") + k.queue;
      ++n_retries;
    }
  }
  std::vector<std::string> lines;
  if (n_sizes > 0) {
    lines.push_back(std::to_string(n_sizes) + " existing queue(s) keep the " + kQuorumInitialGroupSize +
                    " they were created with (configured: " + configured + "): " + sizes +
                    "; it only sizes new queues: change an existing queue's members with rabbitmq-queues add_member "
                    "/ delete_member (or grow / shrink)");
  }
  if (n_retries > 0) {
    lines.push_back(std::to_string(n_retries) + " retry queue(s) made classic by an older eventd are kept: " +
                    retries +
                    "; a classic queue lives on one node, and while that node is down eventd cannot declare it on "
                    "another: delete each while empty (rabbitmqctl delete_queue --if-empty -p <vhost> <name>) and "
                    "eventd declares it again as quorum");
  }
  return lines;
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

std::string text_of(const QueueArgument::Value* v) {
  if (v == nullptr) return "none";
  if (const auto* s = std::get_if<std::string>(v)) return *s;
  return std::to_string(std::get<int64_t>(*v));
}

// `arguments` with the existing queue's value for the refused key (keepable()).
std::vector<QueueArgument> as_existing(const std::vector<QueueArgument>& arguments, const Refusal& r) {
  std::vector<QueueArgument> out;
  const bool classic = r.key == kQueueType;  // then no quorum-only argument either
  for (const auto& a : arguments) {
    if (a.key != r.key && !(classic && a.key == kQuorumInitialGroupSize)) out.push_back(a);
  }
  if (r.existing == "none") return out;
  if (r.key == kQuorumInitialGroupSize) out.push_back({r.key, std::stoll(r.existing)});
  else out.push_back({r.key, r.existing});
  return out;
}

}  // namespace

std::vector<KeptArgument> declare_topology(AmqpSession& session, const Topology& topology) {
  std::vector<KeptArgument> kept;
  for (const auto& ex : topology.exchanges) session.declare_exchange(ex.name, ex.type);
  for (const auto& q : topology.queues) {
    std::vector<QueueArgument> arguments = q.arguments;
    // Each refusal names one argument: again with the queue's own value, until the
    // broker has compared every other one (a real difference is still an error).
    for (int refused = 0;; ++refused) {
      try {
        declare_queue(session, q.name, arguments);
        break;
      } catch (const AmqpError& e) {
        const auto r = refused_argument(e.what());
        if (refused >= 2 || !r || !keepable(q, r->key, r->existing)) throw;
        const auto it = std::find_if(arguments.begin(), arguments.end(),
                                     [&](const QueueArgument& a) { return a.key == r->key; });
        const std::string configured = text_of(it == arguments.end() ? nullptr : &it->value);
        if (configured != "none") kept.push_back({q.name, r->key, r->existing, configured});  // else any will do
        arguments = as_existing(arguments, *r);
      }
    }
  }
  for (const auto& b : topology.bindings) session.bind_queue(b.queue, b.exchange, b.routing_key);
  return kept;
}

}  // namespace eventd
