// alert_triggered: appends the alert to the user's capped history and derives one
// notification per channel of the user's monitor (outbox, see handler.hpp).
#pragma once

#include <string>
#include <string_view>

#include "eventd/config.hpp"
#include "eventd/handler.hpp"
#include "eventd/handlers/script_handler.hpp"
#include "eventd/redis_client.hpp"

namespace eventd {

// The alert history (keys::alerts) keeps the newest this many.
constexpr int kAlertHistoryLength = 100;

// The notification's title and text for an alert body, e.g.
//   "AAPL price above 200" / "AAPL is at 201.5, above 200 (alert 1)";
//   "Portfolio value below 10000" / "Portfolio value is 9876.50, below 10000 (alert 3)".
std::string alert_title(const rapidjson::Value& alert);
std::string alert_text(const rapidjson::Value& alert);

class AlertTriggeredHandler : public ScriptHandler {
 public:
  AlertTriggeredHandler(uv_loop_t* loop, RedisClient& redis, const Config& config);
  void handle(const Message& message, HandlerDone done) override;

};

}  // namespace eventd
