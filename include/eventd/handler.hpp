// What a message handler sees and returns. Handlers are registered by type with
// the Dispatcher, which owns each message until the handler's `done` runs.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include <rapidjson/document.h>

#include "eventd/amqp_message.hpp"
#include "eventd/processing_error.hpp"

namespace eventd {

// A parsed, normalised (camelCase) and schema-valid message. Valid until the
// handler calls `done`.
struct Message {
  const Delivery& delivery;
  const rapidjson::Value& body;
  std::string_view type;
  std::string_view idempotency_key;  // "eventd:idem:<message id or hash>"
  int64_t timestamp_ms;
};

struct HandlerResult {
  enum class Kind {
    Applied,           // effects recorded together with the idempotency key
    Duplicate,         // the idempotency key was already there: nothing done
    Failed,            // `error` says why; retried or dead-lettered per policy
    RedisUnavailable,  // Redis went away mid-flight: keep the message, run it again later
  } kind = Kind::Applied;
  ProcessingError error;

  static HandlerResult applied() { return {Kind::Applied, {}}; }
  static HandlerResult duplicate() { return {Kind::Duplicate, {}}; }
  static HandlerResult failed(ProcessingError e) { return {Kind::Failed, std::move(e)}; }
  static HandlerResult redis_unavailable() { return {Kind::RedisUnavailable, {}}; }
};

using HandlerDone = std::function<void(HandlerResult)>;

class Handler {
 public:
  virtual ~Handler() = default;
  // Calls `done` exactly once, possibly before returning.
  virtual void handle(const Message& message, HandlerDone done) = 0;
};

}  // namespace eventd
