// alert_triggered handler (see alert_triggered.hpp).
#include "eventd/handlers/alert_triggered.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "eventd/dispatcher.hpp"
#include "eventd/handlers/outbox_lua.hpp"
#include "eventd/handlers/quote_update.hpp"

namespace eventd {
namespace {

// KEYS: idempotency, alert history, monitor hash, outbox.
// ARGV: ttl, alert JSON, history length, title, text, correlation id.
// The idempotency key is written last (see quote_update.cpp for why).
constexpr const char* kScript = R"lua(
local seen = already_seen(KEYS[4])
if seen then return seen end
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
local out = {}
local channels = redis.call('HGET', KEYS[3], 'channels')
if channels then
  local alert = cjson.decode(ARGV[2])
  for _, channel in ipairs(cjson.decode(channels)) do
    local n = {type = 'notification', timestamp = alert.timestamp, userId = alert.userId, channel = channel,
               kind = 'alert', title = ARGV[4], body = ARGV[5], data = alert}
    if ARGV[6] ~= '' then n.correlationId = ARGV[6] end
    out[#out + 1] = cjson.encode(n)
  end
end
return settle(KEYS[4], out)
)lua";

std::string str(const rapidjson::Value& v, const char* key) {
  auto m = v.FindMember(key);
  if (m == v.MemberEnd()) return {};
  if (m->value.IsString()) return std::string(m->value.GetString(), m->value.GetStringLength());
  if (m->value.IsInt64()) return std::to_string(m->value.GetInt64());
  if (m->value.IsNumber()) return format_number(m->value.GetDouble());
  return {};
}

}  // namespace

std::string alerts_key(std::string_view user) { return "eventd:alerts:" + std::string(user); }

std::string alert_title(const rapidjson::Value& alert) {
  std::string condition = str(alert, "condition");
  for (char& c : condition) {
    if (c == '_') c = ' ';
  }
  return str(alert, "symbol") + " " + condition + " " + str(alert, "threshold");
}

std::string alert_text(const rapidjson::Value& alert) {
  const std::string condition = str(alert, "condition");
  const bool pct = condition.starts_with("change_pct");
  const bool above = condition.ends_with("above");
  return str(alert, "symbol") + (pct ? " changed " : " is at ") + str(alert, "currentValue") + (pct ? "%" : "") +
         (above ? ", above " : ", below ") + str(alert, "threshold") + (pct ? "%" : "") + " (alert " +
         str(alert, "alertId") + ")";
}

AlertTriggeredHandler::AlertTriggeredHandler(RedisClient& redis, const Config& config)
    : redis_(redis), script_(redis.add_script(std::string(kOutboxLua) + kScript)), ttl_(std::to_string(config.idempotency_ttl_sec)) {}

void AlertTriggeredHandler::handle(const Message& message, HandlerDone done) {
  const rapidjson::Value& body = message.body;
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  body.Accept(w);
  std::string user = str(body, "userId");
  bool sent = redis_.eval(script_,
                          {message.idempotency_key, alerts_key(user), "eventd:monitor:" + user,
                           outbox_key(message.idempotency_key)},
                          {ttl_, std::string_view(buf.GetString(), buf.GetSize()), std::to_string(kAlertHistoryLength),
                           alert_title(body), alert_text(body), str(body, "correlationId")},
                          [done](const redisReply* reply) { done(script_result(reply)); });
  if (!sent) done(HandlerResult::redis_unavailable());
}

}  // namespace eventd
