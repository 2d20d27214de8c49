// analysis_request and analysis_complete handlers (see analysis.hpp).
#include "eventd/handlers/analysis.hpp"

#include <hiredis/hiredis.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <memory>

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "eventd/handlers/outbox_lua.hpp"
#include "eventd/handlers/quote_update.hpp"
#include "eventd/json_member.hpp"
#include "eventd/keys.hpp"

namespace eventd {
namespace {

using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

// Records the computed result in the outbox; a redelivered request gets the stored
// result back instead of a fresh one. K: idempotency, outbox (under {<SYMBOL>}).
// A: the analysis_complete entry, the reply entry ("" without reply_to). S: ttl.
constexpr const char* kRequestLua = R"lua(
local function analysis_request(K, A, S)
  local seen = already_seen(K[1], K[2])
  if seen then return seen end
  local out = {A[1]}
  if A[2] ~= '' then out[2] = A[2] end
  return settle(K[1], K[2], S[1], out)
end
)lua";

// K: idempotency, analysis key, monitor hash, outbox: all under {<userId>}.
// A: analysis JSON, notification JSON up to its channel value. S: ttl.
constexpr const char* kCompleteLua = R"lua(
local function analysis_complete(K, A, S)
  local seen = already_seen(K[1], K[4])
  if seen then return seen end
  local out = notify_channels(K[3], A[2])
  redis.call('SET', K[2], A[1])  -- after every read (see quote_update.cpp)
  return settle(K[1], K[4], S[1], out)
end
)lua";

std::string get_string(const rapidjson::Value& v, const char* key) { return std::string(string_member(v, key)); }

void key(JsonWriter& w, const char* k) { w.Key(k); }
// JSON has no infinity or NaN (extreme prices can overflow a sum): write null.
void num(JsonWriter& w, double x) {
  if (std::isfinite(x)) w.Double(x);
  else w.Null();
}
void str(JsonWriter& w, std::string_view s) { w.String(s.data(), static_cast<rapidjson::SizeType>(s.size())); }

void levels(JsonWriter& w, const std::vector<PriceLevel>& ls) {
  w.StartArray();
  for (const auto& l : ls) {
    w.StartObject();
    key(w, "price");
    num(w, l.price);
    key(w, "touches");
    w.Uint64(l.touches);
    w.EndObject();
  }
  w.EndArray();
}

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

std::string analysis_complete_json(const rapidjson::Value& request, const Analysis& a, std::string_view workflow_id,
                                   int64_t now) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  auto text = [&w](const char* k, std::string_view v) {
    key(w, k);
    str(w, v);
  };
  auto number = [&w](const char* k, double v) {
    key(w, k);
    num(w, v);
  };
  w.StartObject();
  text("type", "analysis_complete");
  key(w, "timestamp");
  w.Int64(now);
  text("userId", get_string(request, "userId"));
  text("symbol", get_string(request, "symbol"));
  text("workflowId", workflow_id);
  if (std::string c = get_string(request, "correlationId"); !c.empty()) text("correlationId", c);
  text("analysisType", analysis_kind_name(a.kind));
  text("recommendation", a.recommendation);
  key(w, "score");
  w.Int(a.score);
  key(w, "reasons");
  w.StartArray();
  for (const auto& r : a.reasons) str(w, r);
  w.EndArray();
  number("lastPrice", a.last_price);
  key(w, "pricesUsed");
  w.Uint64(a.prices_used);
  if (a.chart) {
    const ChartAnalysis& c = *a.chart;
    number("sma20", c.sma_20);
    number("sma50", c.sma_50);
    number("ema12", c.ema_12);
    number("ema26", c.ema_26);
    key(w, "macd");
    w.StartObject();
    number("macd", c.macd.macd);
    number("signal", c.macd.signal);
    number("histogram", c.macd.histogram);
    w.EndObject();
    number("rsi14", c.rsi_14);
    key(w, "support");
    levels(w, c.support);
    key(w, "resistance");
    levels(w, c.resistance);
  }
  if (a.options) {
    const OptionsAnalysis& o = *a.options;
    number("historicalVolatility", o.historical_volatility);
    number("expectedMove", o.expected_move);
    number("expectedMoveDays", o.expected_move_days);
    number("expectedLow", o.expected_low);
    number("expectedHigh", o.expected_high);
  }
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize());
}

AnalysisRequestHandler::AnalysisRequestHandler(uv_loop_t* loop, RedisClient& redis, const Config& config)
    : ScriptHandler(loop, redis, config, {"analysis_request", kOutboxLua, kRequestLua, 2, 2, 1}),
      newest_(std::to_string(-static_cast<int64_t>(config.quote_history_length))) {
  batch_->set_shared_args({ttl_});
}

void AnalysisRequestHandler::handle(const Message& message, HandlerDone done) {
  const rapidjson::Value& body = message.body;
  const std::string symbol = get_string(body, "symbol");
  const std::optional<AnalysisKind> kind = parse_analysis_kind(get_string(body, "analysisType"));
  // What `message` refers to lives until done(); the Message itself only for this call.
  const rapidjson::Value* request = &message.body;
  const Delivery* delivery = &message.delivery;
  std::string idem(message.idempotency_key);
  // The newest historyLength prices: the list may hold a few more (history_trim_at).
  bool sent = redis_.command({"LRANGE", keys::history(symbol), newest_, "-1"}, [this, request, delivery, idem, done,
                                                                              symbol, kind](const redisReply* r) {
    if (r == nullptr) return done(HandlerResult::redis_unavailable());
    if (r->type != REDIS_REPLY_ARRAY) {
      return done(HandlerResult::failed(ProcessingError::transient(
          ErrorCode::Internal, "redis: history of " + symbol + " is not a list")));
    }
    std::vector<double> prices;
    prices.reserve(r->elements);
    for (std::size_t i = 0; i < r->elements; ++i) prices.push_back(std::strtod(r->element[i]->str, nullptr));
    auto result = analyse(prices, kind.value_or(AnalysisKind::Full));
    if (auto* err = std::get_if<AnalysisError>(&result)) {
      return done(HandlerResult::failed(ProcessingError::permanent(ErrorCode::NotFound, symbol + ": " + err->error)));
    }
    std::string workflow = get_string(*request, "workflowId");
    if (workflow.empty()) workflow = get_string(*request, "correlationId");
    if (workflow.empty()) workflow = std::string(delivery->properties.message_id());
    if (workflow.empty()) {
      const std::string_view id = keys::message_id(idem);  // h:<hash>: the hash
      workflow = std::string(id.substr(id.rfind(':') + 1));
    }
    std::string complete = analysis_complete_json(*request, std::get<Analysis>(result), workflow, now_ms());
    std::string reply;
    if (std::string_view reply_to = delivery->properties.reply_to(); !reply_to.empty()) {
      reply = "@" + std::string(reply_to) + "\n" + complete;
    }
    bool ok = batch_->add({idem, keys::outbox(idem)}, {std::move(complete), std::move(reply)},
                          [done](const redisReply* reply) { done(script_result(reply)); });
    if (!ok) done(HandlerResult::redis_unavailable());
  });
  if (!sent) done(HandlerResult::redis_unavailable());
}

AnalysisCompleteHandler::AnalysisCompleteHandler(uv_loop_t* loop, RedisClient& redis, const Config& config)
    : ScriptHandler(loop, redis, config,
                    {"analysis_complete", std::string(kOutboxLua) + kNotifyChannelsLua, kCompleteLua, 4, 2, 1}) {
  batch_->set_shared_args({ttl_});
}

void AnalysisCompleteHandler::handle(const Message& message, HandlerDone done) {
  const rapidjson::Value& body = message.body;
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  body.Accept(w);
  const std::string user = get_string(body, "userId");
  const std::string symbol = get_string(body, "symbol");
  const std::string recommendation = get_string(body, "recommendation");
  std::string title = symbol + " analysis: " + recommendation;
  std::string text = "Analysis of " + symbol + " recommends " + recommendation;
  if (auto reasons = body.FindMember("reasons"); reasons != body.MemberEnd() && reasons->value.IsArray()) {
    std::string joined;
    for (const auto& r : reasons->value.GetArray()) {
      if (r.IsString()) joined += (joined.empty() ? "" : "; ") + std::string(r.GetString());
    }
    if (!joined.empty()) text += ": " + joined;
  }
  bool sent = batch_->add({std::string(message.idempotency_key), keys::analysis(user, symbol), keys::monitor(user),
                           keys::outbox(message.idempotency_key)},
                          {std::string(buf.GetString(), buf.GetSize()),
                           notification_head({.timestamp_ms = message.timestamp_ms,
                                              .user = user,
                                              .kind = "analysis",
                                              .title = title,
                                              .body = text,
                                              .correlation_id = get_string(body, "correlationId"),
                                              .data_json = {}})},
                          [done](const redisReply* reply) { done(script_result(reply)); });
  if (!sent) done(HandlerResult::redis_unavailable());
}

}  // namespace eventd
