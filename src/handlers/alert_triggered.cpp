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
// ARGV: ttl, alert JSON, history length, notification JSON up to its channel value.
// Reads and decides first, then writes (see quote_update.cpp for why); the
// notification is assembled around the alert as received, so nothing in it is re-encoded.
constexpr const char* kScript = R"lua(
local seen = already_seen(KEYS[4])
if seen then return seen end
local out = {}
local channels = redis.call('HGET', KEYS[3], 'channels')
if channels then
  for _, channel in ipairs(cjson.decode(channels)) do out[#out + 1] = ARGV[4] .. cjson.encode(channel) .. '}' end
end
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
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
  rapidjson::StringBuffer alert;
  {
    rapidjson::Writer<rapidjson::StringBuffer> w(alert);
    body.Accept(w);
  }
  const std::string user = str(body, "userId");
  const std::string correlation = str(body, "correlationId");
  // One notification per channel of the monitor: everything but the channel, which the
  // script appends ("channel":"<name>"}).
  rapidjson::StringBuffer head;
  {
    rapidjson::Writer<rapidjson::StringBuffer> w(head);
    w.StartObject();
    w.Key("type");
    w.String("notification");
    w.Key("timestamp");
    w.Int64(message.timestamp_ms);
    w.Key("userId");
    w.String(user.data(), static_cast<rapidjson::SizeType>(user.size()));
    w.Key("kind");
    w.String("alert");
    const std::string title = alert_title(body), text = alert_text(body);
    w.Key("title");
    w.String(title.data(), static_cast<rapidjson::SizeType>(title.size()));
    w.Key("body");
    w.String(text.data(), static_cast<rapidjson::SizeType>(text.size()));
    if (!correlation.empty()) {
      w.Key("correlationId");
      w.String(correlation.data(), static_cast<rapidjson::SizeType>(correlation.size()));
    }
    w.Key("data");
    w.RawValue(alert.GetString(), alert.GetSize(), rapidjson::kObjectType);
    w.Key("channel");
    w.Null();  // a placeholder, cut off below: the Writer needs a value to stay valid
    w.EndObject();
  }
  std::string_view prefix(head.GetString(), head.GetSize());
  prefix.remove_suffix(std::string_view("null}").size());
  bool sent = redis_.eval(script_,
                          {message.idempotency_key, alerts_key(user), "eventd:monitor:" + user,
                           outbox_key(message.idempotency_key)},
                          {ttl_, std::string_view(alert.GetString(), alert.GetSize()),
                           std::to_string(kAlertHistoryLength), prefix},
                          [done](const redisReply* reply) { done(script_result(reply)); });
  if (!sent) done(HandlerResult::redis_unavailable());
}

}  // namespace eventd
