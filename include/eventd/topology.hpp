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
// quorum. Q.dlq: same type, no dead-lettering. Both, when quorum, carry
// x-quorum-initial-group-size if the config sets one. Q.retry.<ms>ms: classic,
// x-message-ttl, dead-lettering back to Q through the default exchange.
Topology build_topology(const Config& config);

// Sizes a quorum queue when it is created and nothing after, yet RabbitMQ (3.10)
// refuses a redeclare with another value (PRECONDITION_FAILED): an existing queue
// is declared with the value it has, and the difference reported (KeptGroupSize).
inline constexpr const char* kQuorumInitialGroupSize = "x-quorum-initial-group-size";
// What to do instead, for the daemon's log and eventctl alike.
inline constexpr const char* kGroupSizeHint =
    "it only sizes new queues: change an existing queue's members with rabbitmq-queues add_member / delete_member "
    "(or grow / shrink)";

// A queue that exists with another initial group size than the config's.
struct KeptGroupSize {
  std::string queue;
  std::optional<int64_t> existing;    // nullopt: created without one
  std::optional<int64_t> configured;  // nullopt: the config sets none
};

// A redeclare the broker refused for the initial group size alone (so far as it
// checked), read from its reply text ("inequivalent arg ... but current is ...").
struct GroupSizeRefusal {
  std::optional<int64_t> existing;  // nullopt: "none"
};
// nullopt when the text is not such a refusal, or not understood.
std::optional<GroupSizeRefusal> refused_group_size(std::string_view refusal);

// One line for an operator: which queues keep what, and what to do.
std::string describe(const std::vector<KeptGroupSize>& kept);

class AmqpSession;
// Declares every exchange, queue and binding (idempotent). Throws AmqpError naming
// the object when the broker refuses, e.g. a queue that exists with other arguments;
// the initial group size alone is no reason (see kQuorumInitialGroupSize): the queues
// declared with the value they have are returned.
std::vector<KeptGroupSize> declare_topology(AmqpSession& session, const Topology& topology);

}  // namespace eventd
