// quote_update handler (see quote_update.hpp).
#include "eventd/handlers/quote_update.hpp"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <utility>

#include "eventd/handlers/outbox_lua.hpp"
#include "eventd/handlers/rules_lua.hpp"
#include "eventd/json_member.hpp"
#include "eventd/keys.hpp"
#include "eventd/number_text.hpp"
#include "eventd/stored_quote.hpp"
#include "eventd/text.hpp"

namespace eventd {
namespace {

// Two functions store a quote (its format: stored_quote.hpp). Most symbols have no
// rules, and their quotes go to the cheap one, which reads and writes three keys; a
// symbol's stored quote carries the mark keys::kQuoteHasRules while the symbol has
// rules, and the cheap function, finding it (or a pending outbox, which only the other
// can publish), leaves everything as it was and answers kNeedsRules: the handler sends
// the quote again to the function that evaluates rules and remembers the symbol, whose
// later quotes go there at once, until that function answers kNoRules.
//
// The watched-symbol function (K, A, S as in function_library.hpp):
// K: 1 idempotency, 2 outbox (the message's own); 3 quote, 4 history list, 5 rule specs,
//    6-9 the rule index of each condition (keys::kConditions order), 10 rule state (the
//    symbol's, sent once per run of its quotes in a call): all under {<SYMBOL>}.
// A: price, change, timestamp, correlation id; 5 symbol (the run's). S: ttl, history
// length, trim at.
//
// Redis does not roll a function back when a command in it fails (e.g. WRONGTYPE), and a
// retry of a half-applied quote would see itself as the previous quote and lose its
// alerts. So it reads and decides first, then writes, starting with the one write whose
// key it has not read (the history list): a failed run has written nothing (but the
// conversion of an older eventd's quote hash, which changes no content). The
// idempotency key is written last.
//
// Rules of running monitors (written by `eventctl monitor start`) are indexed per
// symbol and condition in sorted sets scored by threshold, member "<userId>:<alertId>",
// with each rule in the symbol's rule specs as "<cooldownSec> <alert fields JSON>".
// Only the newest quote of a symbol (by timestamp) is evaluated, against the previous
// newest one: a rule fires when the move crossed into its condition (price_above T:
// previous <= T < new), not on every quote beyond it, so one range query per condition
// finds exactly the rules crossed, whatever the number of monitors. The first quote of
// a symbol only sets the reference. A fired rule stays quiet for its cooldown (quote
// time; the rule state hash, member -> last fired ms, lives under the symbol's tag so
// that this function touches one slot). The alert is assembled from the stored fields as
// eventctl wrote them, so ids and thresholds reach alert_triggered exactly.
//
// No JSON unless a rule fires, and the history is trimmed only once it is `trim at`
// long, not on every push (it holds between historyLength and `trim at` prices).
constexpr const char* kQuoteLua = R"lua(
-- Rules of the index whose threshold the move from `from` to `to` crossed into.
local function crossed(index, from, to, upward)
  local min, max = crossed_range(from, to, upward)
  if not min then return {} end
  return redis.call('ZRANGEBYSCORE', index, min, max)
end
-- The alerts of every rule the move crossed, and the rules that fired.
local function fire(K, A, before_price, before_change, price, change, ts)
  local fired, fired_rules = {}, {}
  local checks = {{K[6], before_price, price, true, A[1]},
                  {K[7], before_price, price, false, A[1]}}
  local before_pct, pct = change_percent(before_price, before_change), change_percent(price, change)
  if before_pct and pct then
    checks[3] = {K[8], before_pct, pct, true, cjson.encode(pct)}
    checks[4] = {K[9], before_pct, pct, false, cjson.encode(pct)}
  end
  local head = nil
  for _, c in ipairs(checks) do
    local members = crossed(c[1], c[2], c[3], c[4])
    for i = 1, #members, 1000 do
      local chunk = {unpack(members, i, math.min(i + 999, #members))}
      local rules = redis.call('HMGET', K[5], unpack(chunk))
      local last_fired = redis.call('HMGET', K[10], unpack(chunk))
      for j, rule in ipairs(rules) do
        local cooldown, fields = false, nil
        if rule then cooldown, fields = string.match(rule, '^(%d+) ({.+)$') end
        if cooldown and cooldown_over(tonumber(last_fired[j]), ts, tonumber(cooldown)) then
          if not head then
            head = '{"type":"alert_triggered","timestamp":' .. A[3] .. ',"symbol":' .. cjson.encode(A[5])
            if A[4] ~= '' then head = head .. ',"correlationId":' .. cjson.encode(A[4]) end
          end
          fired_rules[#fired_rules + 1] = chunk[j]
          fired[#fired + 1] = head .. ',"currentValue":' .. c[5] .. ',' .. string.sub(fields, 2)
        end
      end
    end
  end
  return fired, fired_rules
end
local function quote(K, A, S)
  local seen = already_seen(K[1], K[2])
  if seen then return seen end
  local price, change, ts = tonumber(A[1]), tonumber(A[2]), tonumber(A[3])
  local before_ts, before_price, before_change, marked = read_quote(K[3])
  local newest = (not before_ts) or tonumber(before_ts) <= ts
  local fired, fired_rules = {}, {}
  if newest and before_price and marked then
    fired, fired_rules = fire(K, A, tonumber(before_price), tonumber(before_change), price, change, ts)
  end
  if redis.call('RPUSH', K[4], A[1]) > tonumber(S[3]) then redis.call('LTRIM', K[4], -tonumber(S[2]), -1) end
  if newest then redis.call('SET', K[3], quote_value(A[3], A[1], A[2], marked)) end
  for _, member in ipairs(fired_rules) do redis.call('HSET', K[10], member, A[3]) end
  local result = settle(K[1], K[2], S[1], fired)
  if result == 1 and not marked then return @no_rules end
  return result
end
)lua";

// The cheap function takes the whole call (function_library.hpp, whole_batch), a
// symbol's quote and history keys once per run of its messages, and with them the
// change and timestamp of the run's newest quote (by timestamp; of equal ones, the
// last), which eventd picks (call_layout.hpp): a quote of a busy symbol costs Redis
// two strings, its idempotency key and its price. First each quote's idempotency
// check: one SET NX GET that also marks the message done (a duplicate costs that one
// command). Then, per symbol, the new quotes of the call together, as if one after the
// other: the run's newest replaces the stored quote with one SET GET, unless the
// stored one is newer (it is put back: the call's quotes are all late), and the new
// quotes' prices go to the history in their order with one RPUSH. (When the newest is
// itself a duplicate its values are stored already, or something newer is: setting
// them again changes nothing.) So a quote costs three commands when its symbol has one
// quote in the call, and about one when a busy symbol has many. A symbol whose quotes
// are not this function's (its quote is marked, or not a string) or whose push fails
// gets back what the call changed, its messages' idempotency keys included, and each
// of them that answer: a failed or handed-on message leaves nothing, and the other
// symbols' messages are unaffected. Never raises: commands through redis.pcall.
constexpr const char* kUnwatchedQuoteLua = R"lua(
-- keys: message m's idempotency key keys[m] (m = 1..n, in run order), then run r's
-- quote keys[n + 2r - 1] and history keys[n + 2r]. args: n, ttl, history length, trim
-- at, the run count R; per run r at args[5 + 4r - 3 ..]: its length, its newest
-- message's place in it (from 1), that message's change and timestamp; then message
-- m's price at args[base + m], base = 5 + 4R.
-- The run's new quotes (message numbers `fresh`): store them, the newest's values in
-- the quote.
local function store_symbol(keys, args, quote, history, fresh, price, change, ts, base, keep, trim_at)
  local result = 1
  local old = redis.pcall('SET', quote, quote_value(ts, price, change, false), 'GET')
  if type(old) == 'table' then
    result = @needs_rules  -- not a string (an older eventd's hash): the other function reads it
  elseif old then
    if quote_marked(old) then
      result = @needs_rules
    else
      local old_ts = quote_ts(old)
      if old_ts and old_ts > tonumber(ts) then redis.pcall('SET', quote, old) end
    end
  end
  if result == 1 then
    local length
    if #fresh == 1 then
      length = redis.pcall('RPUSH', history, args[base + fresh[1]])
    else
      local prices = {}
      for j = 1, #fresh do prices[j] = args[base + fresh[j]] end
      length = redis.pcall('RPUSH', history, unpack(prices))
    end
    if type(length) == 'table' then
      result = length
    elseif length > trim_at then
      redis.pcall('LTRIM', history, keep, -1)
    end
  end
  if result ~= 1 then
    if old == false then redis.pcall('DEL', quote) elseif type(old) == 'string' then redis.pcall('SET', quote, old) end
    for j = 1, #fresh do redis.pcall('DEL', keys[fresh[j]]) end
  end
  return result
end
local function quote_unwatched(keys, args)
  local n, runs = tonumber(args[1]), tonumber(args[5])
  local ttl, keep, trim_at = args[2], -tonumber(args[3]), tonumber(args[4])
  local base = 5 + 4 * runs
  local out = {}
  local m = 0
  local pcall_redis = redis.pcall  -- one lookup per call, not two per quote
  for r = 1, runs do
    local at = 1 + 4 * r
    local newest = m + tonumber(args[at + 2])
    local fresh = {}
    for _ = 1, tonumber(args[at + 1]) do
      m = m + 1
      local seen = pcall_redis('SET', keys[m], '1', 'NX', 'GET', 'EX', ttl)
      if seen then
        if seen == 'pending' then
          out[m] = @needs_rules
        elseif type(seen) == 'table' then
          out[m] = seen
        else
          out[m] = 0
        end
      else
        out[m] = 1
        fresh[#fresh + 1] = m
      end
    end
    if #fresh > 0 then
      local result = store_symbol(keys, args, keys[n + 2 * r - 1], keys[n + 2 * r], fresh, args[base + newest],
                                  args[at + 3], args[at + 4], base, keep, trim_at)
      if result ~= 1 then
        for j = 1, #fresh do out[fresh[j]] = result end
      end
    end
  end
  return out
end
)lua";

// The functions' answers besides script_result's: the cheap function's "send it to the
// other", and the other's "applied, and the symbol has no rules (any more)".
constexpr long long kNeedsRules = 9;
constexpr long long kNoRules = 3;

// `lua` with the answer codes spelled in.
std::string with_names(std::string lua) {
  lua = replace_all(std::move(lua), "@needs_rules", std::to_string(kNeedsRules));
  return replace_all(std::move(lua), "@no_rules", std::to_string(kNoRules));
}

}  // namespace

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
  return HandlerResult::failed(ProcessingError::transient(ErrorCode::Internal, "redis: unexpected function reply"));
}

UnwatchedQuoteItem unwatched_quote_item(std::string idempotency_key, std::string_view symbol, double price,
                                        double change, int64_t timestamp) {
  UnwatchedQuoteItem item{{}, {}, {}, timestamp};
  item.keys.reserve(3);
  item.keys.push_back(std::move(idempotency_key));
  item.keys.push_back(keys::quote(symbol));
  item.keys.push_back(keys::history(symbol));
  item.args.push_back(format_number(price));
  // Two numbers: the lambda fits std::function's own buffer, no allocation per quote.
  item.run_args = [change, timestamp] {
    std::vector<std::string> run_args;
    run_args.reserve(2);
    run_args.push_back(format_number(change));
    run_args.push_back(std::to_string(timestamp));
    return run_args;
  };
  return item;
}

uint32_t history_trim_at(uint32_t history_length) { return history_length + std::max<uint32_t>(history_length / 16, 1); }

QuoteUpdateHandler::QuoteUpdateHandler(uv_loop_t* loop, RedisClient& redis, const Config& config)
    : ScriptHandler(loop, redis, config,
                    {"quote", std::string(kOutboxLua) + kRulesLua + stored_quote_lua(), watched_lua(), 10, 4, 3,
                     /*whole_batch=*/false, /*group_keys=*/8, /*run_args=*/1}),
      unwatched_(register_function(loop, redis,
                                   {"quote_unwatched", stored_quote_lua(), unwatched_lua(), 3, 1, 3, /*whole_batch=*/true,
                                    /*group_keys=*/2},
                                   config.redis.batch_size)) {
  std::vector<std::string> shared{ttl_, std::to_string(config.quote_history_length),
                                  std::to_string(history_trim_at(config.quote_history_length))};
  unwatched_->set_shared_args(shared);
  batch_->set_shared_args(std::move(shared));
}

const std::string& QuoteUpdateHandler::watched_lua() {
  static const std::string lua = with_names(kQuoteLua);
  return lua;
}
const std::string& QuoteUpdateHandler::unwatched_lua() {
  static const std::string lua = with_names(kUnwatchedQuoteLua);
  return lua;
}

void QuoteUpdateHandler::handle(const Message& message, HandlerDone done) {
  const rapidjson::Value& body = message.body;
  const std::string_view symbol = string_member(body, "symbol");
  if (watched_.contains(symbol)) {
    return send_watched(body, symbol, message.idempotency_key, message.timestamp_ms, std::move(done));
  }
  // The body (and `symbol`, a view into it) and the idempotency key stay valid until
  // `done` (handler.hpp).
  const rapidjson::Value* kept = &body;
  const std::string_view idempotency = message.idempotency_key;
  const int64_t timestamp = message.timestamp_ms;
  UnwatchedQuoteItem item = unwatched_quote_item(std::string(idempotency), symbol, body["price"].GetDouble(),
                                                 body["change"].GetDouble(), timestamp);
  bool sent = unwatched_->add(
      std::move(item.keys), std::move(item.args),
      [this, kept, symbol, idempotency, timestamp, done](const redisReply* reply) {
        if (reply != nullptr && reply->type == REDIS_REPLY_INTEGER && reply->integer == kNeedsRules) {
          remember_watched(symbol);
          return send_watched(*kept, symbol, idempotency, timestamp, done);
        }
        done(script_result(reply));
      },
      std::move(item.run_args), item.rank);
  if (!sent) done(HandlerResult::redis_unavailable());
}

void QuoteUpdateHandler::remember_watched(std::string_view symbol) {
  // Bounded: symbols with rules are few, but a flood of distinct ones must not grow
  // this without end; forgetting costs each one a resend, never a missed rule.
  if (watched_.size() >= kMaxWatched) watched_.clear();
  watched_.emplace(symbol);
}

void QuoteUpdateHandler::send_watched(const rapidjson::Value& body, std::string_view symbol,
                                      std::string_view idempotency, int64_t timestamp, HandlerDone done) {
  const auto index = keys::rule_indexes(symbol);
  static_assert(keys::kConditions[0] == "price_above" && keys::kConditions[1] == "price_below" &&
                    keys::kConditions[2] == "change_pct_above" && keys::kConditions[3] == "change_pct_below",
                "the function takes the rule indexes as K[6..9] in this order");
  bool sent = batch_->add({std::string(idempotency), keys::outbox(idempotency), keys::quote(symbol), keys::history(symbol),
                           keys::rules(symbol), index[0], index[1], index[2], index[3], keys::rule_state(symbol)},
                          {format_number(body["price"].GetDouble()), format_number(body["change"].GetDouble()),
                           std::to_string(timestamp), std::string(string_member(body, "correlationId"))},
                          [this, symbol, done](const redisReply* reply) {
                            if (reply != nullptr && reply->type == REDIS_REPLY_INTEGER && reply->integer == kNoRules) {
                              if (auto it = watched_.find(symbol); it != watched_.end()) watched_.erase(it);
                            }
                            done(script_result(reply));
                          },
                          // `symbol` views the body, which outlives the call's layout.
                          [symbol] { return std::vector<std::string>{std::string(symbol)}; });
  if (!sent) done(HandlerResult::redis_unavailable());
}

}  // namespace eventd
