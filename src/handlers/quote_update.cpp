// quote_update handler (see quote_update.hpp).
#include "eventd/handlers/quote_update.hpp"

#include <hiredis/hiredis.h>

#include <charconv>

#include "eventd/dispatcher.hpp"
#include "eventd/handlers/rules_lua.hpp"

namespace eventd {
namespace {

// KEYS: idempotency, quote hash, history list, rule specs of the symbol, outbox.
// ARGV: ttl, price, change, timestamp, history length, symbol, correlation id.
//
// Redis does not roll a script back when a command in it fails (e.g. WRONGTYPE), and a
// retry of a half-applied quote would see itself as the previous quote and lose its
// alerts. So the script reads and decides first, then writes, starting with the one
// write whose key it has not read (the history list): a failed run has written nothing.
// The idempotency key is written last.
//
// Rules of running monitors (written by `eventctl monitor start`) are indexed per
// condition and symbol in sorted sets scored by threshold
// (eventd:ruleidx:<condition>:<SYMBOL>), with each rule in eventd:rules:<SYMBOL> as
// "<cooldownSec> <alert fields JSON>". Only the newest quote of a symbol (by timestamp)
// is evaluated, against the previous newest one: a rule fires when the move crossed
// into its condition (price_above T: previous <= T < new), not on every quote beyond
// it, so one range query per condition finds exactly the rules crossed, whatever the
// number of monitors. The first quote of a symbol only sets the reference. A fired rule
// stays quiet for its cooldown (quote time; eventd:rulestate:<user>, field alertId =
// last fired ms). The alert is assembled from the stored fields as eventctl wrote them,
// so ids and thresholds reach alert_triggered exactly.
constexpr const char* kScript = R"lua(
local seen = already_seen(KEYS[5])
if seen then return seen end
local price, change, ts = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local previous = redis.call('HMGET', KEYS[2], 'timestamp', 'price', 'change')
local newest = (not previous[1]) or tonumber(previous[1]) <= ts
-- Rules whose threshold the move from `from` to `to` crossed into.
local function crossed(condition, from, to, upward)
  local min, max = crossed_range(from, to, upward)
  if not min then return {} end
  return redis.call('ZRANGEBYSCORE', 'eventd:ruleidx:' .. condition .. ':' .. ARGV[6], min, max)
end
local fired, fired_state = {}, {}
if newest and previous[2] then
  local before_price, before_change = tonumber(previous[2]), tonumber(previous[3])
  local checks = {{'price_above', before_price, price, true, ARGV[2]},
                  {'price_below', before_price, price, false, ARGV[2]}}
  local before_pct, pct = change_percent(before_price, before_change), change_percent(price, change)
  if before_pct and pct then
    checks[3] = {'change_pct_above', before_pct, pct, true, cjson.encode(pct)}
    checks[4] = {'change_pct_below', before_pct, pct, false, cjson.encode(pct)}
  end
  local head = '{"type":"alert_triggered","timestamp":' .. ARGV[4] .. ',"symbol":' .. cjson.encode(ARGV[6])
  if ARGV[7] ~= '' then head = head .. ',"correlationId":' .. cjson.encode(ARGV[7]) end
  for _, c in ipairs(checks) do
    local members = crossed(c[1], c[2], c[3], c[4])
    for i = 1, #members, 1000 do
      local chunk = {unpack(members, i, math.min(i + 999, #members))}
      local rules = redis.call('HMGET', KEYS[4], unpack(chunk))
      for j, rule in ipairs(rules) do
        local cooldown, fields = false, nil
        if rule then cooldown, fields = string.match(rule, '^(%d+) ({.+)$') end
        if cooldown then
          local user, alert_id = string.match(chunk[j], '^(.*):([^:]*)$')
          local state_key = 'eventd:rulestate:' .. user
          if cooldown_over(tonumber(redis.call('HGET', state_key, alert_id)), ts, tonumber(cooldown)) then
            fired_state[#fired_state + 1] = {state_key, alert_id}
            fired[#fired + 1] = head .. ',"currentValue":' .. c[5] .. ',' .. string.sub(fields, 2)
          end
        end
      end
    end
  end
end
redis.call('RPUSH', KEYS[3], ARGV[2])
redis.call('LTRIM', KEYS[3], -tonumber(ARGV[5]), -1)
if newest then
  redis.call('HSET', KEYS[2], 'price', ARGV[2], 'change', ARGV[3], 'timestamp', ARGV[4])
end
for _, f in ipairs(fired_state) do redis.call('HSET', f[1], f[2], ARGV[4]) end
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
    : ScriptHandler(redis, config, std::string(kRulesLua) + kScript),
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
