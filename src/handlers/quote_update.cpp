// quote_update handler (see quote_update.hpp).
#include "eventd/handlers/quote_update.hpp"

#include <hiredis/hiredis.h>

#include <charconv>

#include "eventd/dispatcher.hpp"
#include "eventd/handlers/outbox_lua.hpp"

namespace eventd {
namespace {

// KEYS: idempotency, quote hash, history list, rule index of the symbol, outbox.
// ARGV: ttl, price, change, timestamp, history length, symbol, correlation id.
//
// Redis does not roll a script back when a command in it fails (e.g. WRONGTYPE), so
// the idempotency key is written last: a failed run leaves no key, and its retry
// applies the effects (the hash write is idempotent, the push ran not at all).
//
// Rules (eventd:rules:<SYMBOL>, written by `eventctl monitor start`) are evaluated
// only for a quote that is the newest by timestamp. Each rule remembers which side of
// its threshold the last quote was on (eventd:rulestate:<user>, field alertId,
// "<side>:<last fired ms>"); it fires on a crossing into its condition, not on every
// quote beyond it, and not again within its cooldown (measured in quote time). A
// rule's first quote only records the side. Fired alerts go to the outbox and the
// idempotency key reads "pending" until the dispatcher has them confirmed.
constexpr const char* kScript = R"lua(
local seen = already_seen(KEYS[5])
if seen then return seen end
local price, change, ts = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local current = redis.call('HGET', KEYS[2], 'timestamp')
local newest = (not current) or tonumber(current) <= ts
if newest then
  redis.call('HSET', KEYS[2], 'price', ARGV[2], 'change', ARGV[3], 'timestamp', ARGV[4])
end
redis.call('RPUSH', KEYS[3], ARGV[2])
redis.call('LTRIM', KEYS[3], -tonumber(ARGV[5]), -1)
local fired = {}
if newest then
  local rules = redis.call('HGETALL', KEYS[4])
  for i = 1, #rules, 2 do
    local r = cjson.decode(rules[i + 1])
    local value = price
    if r.condition == 'change_pct_above' or r.condition == 'change_pct_below' then
      local previous_close = price - change
      value = previous_close ~= 0 and change / previous_close * 100 or nil
    end
    if value then
      local inside
      if r.condition == 'price_above' or r.condition == 'change_pct_above' then
        inside = value > r.threshold
      else
        inside = value < r.threshold
      end
      local state_key = 'eventd:rulestate:' .. r.userId
      local field = tostring(r.alertId)
      local saved = redis.call('HGET', state_key, field)
      local side, last = nil, -1
      if saved then
        local colon = string.find(saved, ':', 1, true)
        side, last = string.sub(saved, 1, colon - 1), tonumber(string.sub(saved, colon + 1))
      end
      local fire = inside and side == '0' and (last < 0 or ts - last >= (r.cooldownSec or 0) * 1000)
      if fire then
        last = ts
        local alert = {type = 'alert_triggered', timestamp = ts, userId = r.userId, alertId = r.alertId,
                       symbol = ARGV[6], condition = r.condition, threshold = r.threshold, currentValue = value}
        if ARGV[7] ~= '' then alert.correlationId = ARGV[7] end
        fired[#fired + 1] = cjson.encode(alert)
      end
      local new_side = inside and '1' or '0'
      if fire or new_side ~= side then redis.call('HSET', state_key, field, new_side .. ':' .. last) end
    end
  end
end
return settle(KEYS[5], fired)
)lua";

}  // namespace

std::string quote_key(std::string_view symbol) { return "eventd:quote:" + std::string(symbol); }
std::string history_key(std::string_view symbol) { return "eventd:history:" + std::string(symbol); }
std::string rules_key(std::string_view symbol) { return "eventd:rules:" + std::string(symbol); }

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
  if (reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1) {
    // {1, derived...}: applied now; {2, derived...}: applied before, outbox not yet
    // confirmed (a crash in between): publish it again either way.
    Outbox outbox;
    for (std::size_t i = 1; i < reply->elements; ++i) {
      const redisReply* e = reply->element[i];
      if (e->type == REDIS_REPLY_STRING) outbox.emplace_back(e->str, e->len);
    }
    return HandlerResult::applied(std::move(outbox));
  }
  return HandlerResult::failed(ProcessingError::transient(ErrorCode::Internal, "redis: unexpected script reply"));
}

QuoteUpdateHandler::QuoteUpdateHandler(RedisClient& redis, const Config& config)
    : redis_(redis),
      script_(redis.add_script(std::string(kOutboxLua) + kScript)),
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
  std::string rules = rules_key(symbol);
  std::string outbox = outbox_key(message.idempotency_key);
  std::string_view correlation;
  if (auto c = body.FindMember("correlationId"); c != body.MemberEnd() && c->value.IsString()) {
    correlation = std::string_view(c->value.GetString(), c->value.GetStringLength());
  }
  bool sent = redis_.eval(script_, {message.idempotency_key, quote, history, rules, outbox},
                          {ttl_, price, change, timestamp, history_length_, symbol, correlation},
                          [done](const redisReply* reply) { done(script_result(reply)); });
  if (!sent) done(HandlerResult::redis_unavailable());
}

}  // namespace eventd
