// The broker objects eventd needs, as a plain description built from the config
// (pure), and their idempotent declaration through a blocking AmqpSession.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "eventd/config.hpp"

namespace eventd {

struct QueueArgument {
  using Value = std::variant<std::string, int64_t>;
  std::string key;
  Value value;
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
// quorum. Q.dlq: same type, no dead-lettering. Q.retry.<ms>ms: same type too (a
// classic queue lives on one node, and the topology must be declarable on any
// node of a cluster), x-message-ttl, dead-lettering back to Q through the default
// exchange. Quorum queues carry x-quorum-initial-group-size if the config sets one.
Topology build_topology(const Config& config);

inline constexpr const char* kQueueType = "x-queue-type";
inline constexpr const char* kQuorumInitialGroupSize = "x-quorum-initial-group-size";

// RabbitMQ refuses to redeclare a queue with other arguments (PRECONDITION_FAILED).
// Two differences eventd works with, so it declares the existing queue with the
// value it has and reports the difference instead of failing:
// - x-quorum-initial-group-size only sizes a queue when it is created;
// - x-queue-type classic of a retry queue that an older eventd made classic: it
//   works, but lives on one node (deleted while empty, it comes back as quorum).
struct KeptArgument {
  std::string queue;
  std::string key;
  std::string existing;    // "none": the queue has no such argument
  std::string configured;  // "none": the config asks for none
};
// Whether `existing` for `key` on the existing queue `q` is such a difference.
bool keepable(const QueueSpec& q, std::string_view key, std::string_view existing);

// What the broker's refusal text ("inequivalent arg 'K' for queue ...: received X but
// current is Y") says; nullopt when it is not such a refusal or not understood.
struct Refusal {
  std::string key;
  std::string existing;  // "none", or the value as text
};
std::optional<Refusal> refused_argument(std::string_view refusal);

// One line per kind of difference, naming the queues and what to do.
std::vector<std::string> describe(const std::vector<KeptArgument>& kept);

class AmqpSession;
// Declares every exchange, queue and binding (idempotent). Throws AmqpError naming
// the object when the broker refuses, e.g. a queue that exists with other arguments,
// unless the difference is keepable(): those queues are declared as they are, and
// returned.
std::vector<KeptArgument> declare_topology(AmqpSession& session, const Topology& topology);

}  // namespace eventd
