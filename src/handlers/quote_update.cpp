// quote_update handler (see quote_update.hpp).
#include "eventd/handlers/quote_update.hpp"

#include <hiredis/hiredis.h>

#include <charconv>

#include "eventd/dispatcher.hpp"
#include "eventd/handlers/outbox_lua.hpp"
#include "eventd/handlers/rules_lua.hpp"

namespace eventd {
namespace {

// KEYS: idempotency, quote hash, history list, rule index of the symbol, outbox.
// ARGV: ttl, price, change, timestamp, history length, symbol, correlation id.
//
// Redis does not roll a script back when a command in it fails (e.g. WRONGTYPE), so
// the idempotency key is written last: a failed run leaves no key, and its retry
// applies the effects (the hash write is idempotent, the push ran not at all).
//
// Rules of running monitors (written by `eventctl monitor start`) are indexed per
// symbol and condition in sorted sets scored by threshold
// (eventd:rules:<SYMBOL>:<condition>), with each rule's JSON in eventd:rules:<SYMBOL>.
// Only the newest quote of a symbol (by timestamp) is evaluated, against the previous
// newest one: a rule fires when the move crossed into its condition (price_above T:
// previous <= T < new), not on every quote beyond it, so one range query per
// condition finds exactly the rules crossed, whatever the number of monitors. The
// first quote of a symbol only sets the reference. A fired rule stays quiet for its
// cooldown (quote time; eventd:rulestate:<user>, field alertId = last fired ms).
constexpr const char* kScript = R"lua(
local seen = already_seen(KEYS[5])
if seen then return seen end
local price, change, ts = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local previous = redis.call('HMGET', KEYS[2], 'timestamp', 'price', 'change')
local newest = (not previous[1]) or tonumber(previous[1]) <= ts
if newest then
  redis.call('HSET', KEYS[2], 'price', ARGV[2], 'change', ARGV[3], 'timestamp', ARGV[4])
end
redis.call('RPUSH', KEYS[3], ARGV[2])
redis.call('LTRIM', KEYS[3], -tonumber(ARGV[5]), -1)
local fired = {}
-- Rules whose threshold the move from `from` to `to` crossed into.
local function crossed(condition, from, to, upward)
  local min, max = crossed_range(from, to, upward)
  if not min then return {} end
  return redis.call('ZRANGEBYSCORE', KEYS[4] .. ':' .. condition, min, max)
end
if newest and previous[2] then
  local before_price, before_change = tonumber(previous[2]), tonumber(previous[3])
  local checks = {{'price_above', before_price, price, true}, {'price_below', before_price, price, false}}
  local before_pct, pct = change_percent(before_price, before_change), change_percent(price, change)
  if before_pct and pct then
    checks[3] = {'change_pct_above', before_pct, pct, true}
    checks[4] = {'change_pct_below', before_pct, pct, false}
  end
  for _, c in ipairs(checks) do
    local members = crossed(c[1], c[2], c[3], c[4])
    if #members > 0 then
      local specs = redis.call('HMGET', KEYS[4], unpack(members))
      for _, spec in ipairs(specs) do
        if spec then
          local r = cjson.decode(spec)
          local state_key = 'eventd:rulestate:' .. r.userId
          local field = tostring(r.alertId)
          if cooldown_over(tonumber(redis.call('HGET', state_key, field)), ts, r.cooldownSec) then
            redis.call('HSET', state_key, field, ARGV[4])
            local alert = {type = 'alert_triggered', timestamp = ts, userId = r.userId, alertId = r.alertId,
                           symbol = ARGV[6], condition = r.condition, threshold = r.threshold, currentValue = c[3]}
            if ARGV[7] ~= '' then alert.correlationId = ARGV[7] end
            fired[#fired + 1] = cjson.encode(alert)
          end
        end
      end
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
      script_(redis.add_script(std::string(kOutboxLua) + kRulesLua + kScript)),
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
