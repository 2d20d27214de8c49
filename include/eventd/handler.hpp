// What a message handler sees and returns. Handlers are registered by type with
// the Dispatcher, which owns each message until the handler's `done` runs.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <rapidjson/document.h>

#include "eventd/amqp_message.hpp"
#include "eventd/processing_error.hpp"
#include "eventd/trace_context.hpp"

namespace eventd {

// A parsed, normalised (camelCase) and schema-valid message. The referenced delivery
// and body stay valid until the handler calls `done`; the Message struct itself only
// during handle(): asynchronous callbacks capture the references, not the struct.
struct Message {
  const Delivery& delivery;
  const rapidjson::Value& body;
  std::string_view type;
  std::string_view idempotency_key;  // keys::idempotency(): under the message's hash tag
  int64_t timestamp_ms;
  const TraceContext& trace;  // for log lines about this message
};

// Messages a handler derives are first written to the source message's outbox in
// Redis, atomically with its effects (its idempotency key then reads "pending"). The
// dispatcher publishes them with confirms, marks the key done, and only then acks. A
// redelivered source whose key is still pending gets its outbox back from the
// handler's script and publishes it again; derived message ids are deterministic
// (<source id>:<n>), so their own handlers drop the duplicates.
//
// An outbox entry is the JSON body (camelCase, with "type"), routed by type; an entry
// "@QUEUE\n{json}" goes to QUEUE through the default exchange (request-reply).
using Outbox = std::vector<std::string>;

struct HandlerResult {
  enum class Kind {
    Applied,           // effects recorded together with the idempotency key
    Duplicate,         // the idempotency key was already there: nothing done
    Failed,            // `error` says why; retried or dead-lettered per policy
    RedisUnavailable,  // Redis went away mid-flight: keep the message, run it again later
    Deferred,          // not now (rate limit, open circuit): wait delay_ms; no attempt is used up
  } kind = Kind::Applied;
  ProcessingError error;
  Outbox outbox;          // Applied with derived messages still to publish
  uint32_t delay_ms = 0;  // Deferred

  static HandlerResult applied(Outbox outbox = {}) { return {Kind::Applied, {}, std::move(outbox), 0}; }
  static HandlerResult duplicate() { return {Kind::Duplicate, {}, {}, 0}; }
  static HandlerResult failed(ProcessingError e) { return {Kind::Failed, std::move(e), {}, 0}; }
  static HandlerResult redis_unavailable() { return {Kind::RedisUnavailable, {}, {}, 0}; }
  static HandlerResult deferred(ProcessingError why, uint32_t delay_ms) {
    return {Kind::Deferred, std::move(why), {}, delay_ms};
  }
};

using HandlerDone = std::function<void(HandlerResult)>;

class Handler {
 public:
  virtual ~Handler() = default;
  // Calls `done` exactly once, possibly before returning.
  virtual void handle(const Message& message, HandlerDone done) = 0;
};

}  // namespace eventd
