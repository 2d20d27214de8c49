// alert_triggered handler (see alert_triggered.hpp).
#include "eventd/handlers/alert_triggered.hpp"

#include <cstdio>

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "eventd/handlers/outbox_lua.hpp"
#include "eventd/handlers/quote_update.hpp"
#include "eventd/keys.hpp"
#include "eventd/number_text.hpp"

namespace eventd {
namespace {

// One alert: K idempotency, alert history, monitor hash, outbox: all under {<userId>}.
// A: alert JSON, notification JSON up to its channel value. S: ttl, history length.
// Reads and decides first, then writes (see quote_update.cpp for why); the
// notification is assembled around the alert as received, so nothing in it is re-encoded.
constexpr const char* kAlertLua = R"lua(
local function alert(K, A, S)
  local seen = already_seen(K[1], K[4])
  if seen then return seen end
  local out = notify_channels(K[3], A[2])
  redis.call('LPUSH', K[2], A[1])
  redis.call('LTRIM', K[2], 0, tonumber(S[2]) - 1)
  return settle(K[1], K[4], S[1], out)
end
)lua";

std::string str(const rapidjson::Value& v, const char* key) {
  auto m = v.FindMember(key);
  if (m == v.MemberEnd()) return {};
  if (m->value.IsString()) return std::string(m->value.GetString(), m->value.GetStringLength());
  if (m->value.IsInt64()) return std::to_string(m->value.GetInt64());
  if (m->value.IsNumber()) return format_number(m->value.GetDouble());
  return {};
}

double number(const rapidjson::Value& v, const char* key) {
  auto m = v.FindMember(key);
  return m != v.MemberEnd() && m->value.IsNumber() ? m->value.GetDouble() : 0.0;
}

// Portfolio figures read better rounded: "9876.50", "-3.42".
std::string fixed2(double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f", x);
  return buf;
}

// Title and text of the portfolio conditions; false for the price conditions.
bool portfolio_text(const rapidjson::Value& alert, std::string* title, std::string* text) {
  const std::string condition = str(alert, "condition"), symbol = str(alert, "symbol"),
                    threshold = str(alert, "threshold"), id = " (alert " + str(alert, "alertId") + ")";
  const double value = number(alert, "currentValue");
  if (condition == "portfolio_value_below" || condition == "portfolio_value_above") {
    const std::string side = condition.ends_with("below") ? "below" : "above";
    *title = "Portfolio value " + side + " " + threshold;
    *text = "Portfolio value is " + fixed2(value) + ", " + side + " " + threshold + id;
  } else if (condition == "portfolio_change_pct_below") {
    *title = "Portfolio day change below " + threshold + "%";
    *text = "Portfolio changed " + fixed2(value) + "% today, below " + threshold + "%" + id;
  } else if (condition == "position_pnl_pct_below") {
    *title = symbol + " position P&L below " + threshold + "%";
    *text = symbol + " position is at " + fixed2(value) + "% against its cost basis, below " + threshold + "%" + id;
  } else if (condition == "quote_stale") {
    const std::string age = std::to_string(static_cast<long long>(value));
    *title = symbol + " quotes stale";
    *text = alert.HasMember("lastQuoteAt")
                ? "No " + symbol + " quote for " + age + " s, more than " + threshold + " s" + id
                : "No " + symbol + " quote since the monitor started " + age + " s ago, more than " + threshold +
                      " s" + id;
  } else {
    return false;
  }
  return true;
}

}  // namespace

std::string alert_title(const rapidjson::Value& alert) {
  std::string title, text;
  if (portfolio_text(alert, &title, &text)) return title;
  std::string condition = str(alert, "condition");
  for (char& c : condition) {
    if (c == '_') c = ' ';
  }
  return str(alert, "symbol") + " " + condition + " " + str(alert, "threshold");
}

std::string alert_text(const rapidjson::Value& alert) {
  std::string title, text;
  if (portfolio_text(alert, &title, &text)) return text;
  const std::string condition = str(alert, "condition");
  const bool pct = condition.starts_with("change_pct");
  const bool above = condition.ends_with("above");
  return str(alert, "symbol") + (pct ? " changed " : " is at ") + str(alert, "currentValue") + (pct ? "%" : "") +
         (above ? ", above " : ", below ") + str(alert, "threshold") + (pct ? "%" : "") + " (alert " +
         str(alert, "alertId") + ")";
}

AlertTriggeredHandler::AlertTriggeredHandler(uv_loop_t* loop, RedisClient& redis, const Config& config)
    : ScriptHandler(loop, redis, config, {"alert", std::string(kOutboxLua) + kNotifyChannelsLua, kAlertLua, 4, 2, 2}) {
  batch_->set_shared_args({ttl_, std::to_string(kAlertHistoryLength)});
}

void AlertTriggeredHandler::handle(const Message& message, HandlerDone done) {
  const rapidjson::Value& body = message.body;
  rapidjson::StringBuffer alert;
  {
    rapidjson::Writer<rapidjson::StringBuffer> w(alert);
    body.Accept(w);
  }
  const std::string user = str(body, "userId");
  const std::string title = alert_title(body), text = alert_text(body);
  const std::string head = notification_head({.timestamp_ms = message.timestamp_ms,
                                              .user = user,
                                              .kind = "alert",
                                              .title = title,
                                              .body = text,
                                              .correlation_id = str(body, "correlationId"),
                                              .data_json = std::string_view(alert.GetString(), alert.GetSize())});
  bool sent = batch_->add({std::string(message.idempotency_key), keys::alerts(user), keys::monitor(user),
                           keys::outbox(message.idempotency_key)},
                          {std::string(alert.GetString(), alert.GetSize()), head},
                          [done](const redisReply* reply) { done(script_result(reply)); });
  if (!sent) done(HandlerResult::redis_unavailable());
}

}  // namespace eventd
