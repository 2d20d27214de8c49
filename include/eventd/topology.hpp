// The broker objects eventd needs, as a plain description built from the config
// (pure), and their idempotent declaration through a blocking AmqpSession.
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "eventd/config.hpp"

namespace eventd {

struct QueueArgument {
  std::string key;
  std::variant<std::string, int64_t> value;
  bool operator==(const QueueArgument&) const = default;
};

struct QueueSpec {
  std::string name;
  std::vector<QueueArgument> arguments;
  enum class Role { Work, DeadLetter, Retry } role = Role::Work;
  std::string work_queue;  // for DeadLetter and Retry: the queue they serve
};

struct BindingSpec {
  std::string queue;
  std::string exchange;
  std::string routing_key;
};

struct Topology {
  std::vector<ExchangeConfig> exchanges;
  std::vector<QueueSpec> queues;        // work queues first, then their dlq and retry queues
  std::vector<BindingSpec> bindings;
  std::vector<std::string> consumed;    // the work queues, in config order

  const QueueSpec* find_queue(const std::string& name) const;
};

// Work queue Q: durable, x-queue-type, x-dead-letter-exchange "" and
// x-dead-letter-routing-key Q.dlq (the broker's own backstop), x-delivery-limit for
// quorum. Q.dlq: same type, no dead-lettering. Q.retry.<ms>ms: classic, x-message-ttl,
// dead-lettering back to Q through the default exchange.
Topology build_topology(const Config& config);

class AmqpSession;
// Declares every exchange, queue and binding (idempotent). Throws AmqpError naming
// the object when the broker refuses, e.g. a queue that exists with other arguments.
void declare_topology(AmqpSession& session, const Topology& topology);

}  // namespace eventd
