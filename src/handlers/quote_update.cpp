// quote_update handler (see quote_update.hpp).
#include "eventd/handlers/quote_update.hpp"

#include <hiredis/hiredis.h>

#include <charconv>

namespace eventd {
namespace {

// KEYS: idempotency, quote hash, history list. ARGV: ttl, price, change, timestamp, history length.
// Redis does not roll a script back when a command in it fails (e.g. WRONGTYPE), so
// the idempotency key is written last: a failed run leaves no key, and its retry
// applies the effects (the hash write is idempotent, the push ran not at all).
constexpr const char* kScript = R"lua(
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local current = redis.call('HGET', KEYS[2], 'timestamp')
if not current or tonumber(current) <= tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[2], 'price', ARGV[2], 'change', ARGV[3], 'timestamp', ARGV[4])
end
redis.call('RPUSH', KEYS[3], ARGV[2])
redis.call('LTRIM', KEYS[3], -tonumber(ARGV[5]), -1)
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
return 1
)lua";

}  // namespace

std::string quote_key(std::string_view symbol) { return "eventd:quote:" + std::string(symbol); }
std::string history_key(std::string_view symbol) { return "eventd:history:" + std::string(symbol); }

std::string format_number(double value) {
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
  if (ec != std::errc()) return std::to_string(value);
  return std::string(buf, end);
}

HandlerResult script_result(const redisReply* reply) {
  if (reply == nullptr) return HandlerResult::redis_unavailable();
  if (reply->type == REDIS_REPLY_ERROR) {
    return HandlerResult::failed(
        ProcessingError::transient(ErrorCode::Internal, "redis: " + std::string(reply->str, reply->len)));
  }
  if (reply->type == REDIS_REPLY_INTEGER) {
    return reply->integer == 0 ? HandlerResult::duplicate() : HandlerResult::applied();
  }
  return HandlerResult::failed(ProcessingError::transient(ErrorCode::Internal, "redis: unexpected script reply"));
}

QuoteUpdateHandler::QuoteUpdateHandler(RedisClient& redis, const Config& config)
    : redis_(redis),
      script_(redis.add_script(kScript)),
      ttl_(std::to_string(config.idempotency_ttl_sec)),
      history_length_(std::to_string(config.quote_history_length)) {}

void QuoteUpdateHandler::handle(const Message& message, HandlerDone done) {
  const rapidjson::Value& body = message.body;
  std::string_view symbol(body["symbol"].GetString(), body["symbol"].GetStringLength());
  std::string price = format_number(body["price"].GetDouble());
  std::string change = format_number(body["change"].GetDouble());
  std::string timestamp = std::to_string(message.timestamp_ms);
  std::string quote = quote_key(symbol);
  std::string history = history_key(symbol);
  bool sent = redis_.eval(script_, {message.idempotency_key, quote, history},
                          {ttl_, price, change, timestamp, history_length_},
                          [done](const redisReply* reply) { done(script_result(reply)); });
  if (!sent) done(HandlerResult::redis_unavailable());
}

}  // namespace eventd
