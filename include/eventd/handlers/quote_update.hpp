// quote_update: latest quote per symbol and a capped price history, written
// together with the idempotency key in one Lua script (one Redis round trip), which
// also evaluates the symbol's alert rules. Its keys: keys.hpp, all under {<SYMBOL>}.
#pragma once

#include "eventd/config.hpp"
#include "eventd/handler.hpp"
#include "eventd/handlers/script_handler.hpp"
#include "eventd/redis_client.hpp"

namespace eventd {

// Shortest text that reads back as the same double ("187.12", not "187.1200000001").
std::string format_number(double value);

class QuoteUpdateHandler : public ScriptHandler {
 public:
  // Registers its script with `redis`; construct before redis.start().
  QuoteUpdateHandler(RedisClient& redis, const Config& config);
  void handle(const Message& message, HandlerDone done) override;

 private:
  std::string history_length_;
};

// Maps a reply of a handler's Lua script (1 applied, 0 duplicate) or its failure.
HandlerResult script_result(const redisReply* reply);

}  // namespace eventd
