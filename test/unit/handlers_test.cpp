// Pure parts of the handlers: texts, payloads, the analysis body.
#include <doctest/doctest.h>

#include <rapidjson/document.h>

#include "eventd/handlers/alert_triggered.hpp"
#include "eventd/handlers/analysis.hpp"
#include "eventd/handlers/notification.hpp"
#include "eventd/retry_policy.hpp"
#include "eventd/sinks.hpp"

using namespace eventd;

namespace {
rapidjson::Document parse(const char* json) {
  rapidjson::Document d;
  d.Parse(json);
  REQUIRE_FALSE(d.HasParseError());
  return d;
}
}  // namespace

TEST_CASE("alert_triggered: notification title and text say what crossed what") {
  auto price = parse(R"({"symbol":"AAPL","condition":"price_above","threshold":200,"currentValue":201.5,"alertId":1})");
  CHECK(alert_title(price) == "AAPL price above 200");
  CHECK(alert_text(price) == "AAPL is at 201.5, above 200 (alert 1)");
  auto pct = parse(R"({"symbol":"MSFT","condition":"change_pct_below","threshold":-5,"currentValue":-6.25,"alertId":2})");
  CHECK(alert_title(pct) == "MSFT change pct below -5");
  CHECK(alert_text(pct) == "MSFT changed -6.25%, below -5% (alert 2)");
}

TEST_CASE("alert_triggered: portfolio alerts read as sentences, figures rounded to cents") {
  auto value = parse(R"({"symbol":"PORTFOLIO","condition":"portfolio_value_below","threshold":10000,)"
                     R"("currentValue":9876.4999,"alertId":3})");
  CHECK(alert_title(value) == "Portfolio value below 10000");
  CHECK(alert_text(value) == "Portfolio value is 9876.50, below 10000 (alert 3)");
  auto above = parse(R"({"symbol":"PORTFOLIO","condition":"portfolio_value_above","threshold":2e4,)"
                     R"("currentValue":20100,"alertId":4})");
  CHECK(alert_text(above) == "Portfolio value is 20100.00, above 20000 (alert 4)");
  auto change = parse(R"({"symbol":"PORTFOLIO","condition":"portfolio_change_pct_below","threshold":-3,)"
                      R"("currentValue":-3.4211,"alertId":5})");
  CHECK(alert_title(change) == "Portfolio day change below -3%");
  CHECK(alert_text(change) == "Portfolio changed -3.42% today, below -3% (alert 5)");
  auto pnl = parse(R"({"symbol":"AAPL","condition":"position_pnl_pct_below","threshold":-10,)"
                   R"("currentValue":-12.5,"alertId":6})");
  CHECK(alert_title(pnl) == "AAPL position P&L below -10%");
  CHECK(alert_text(pnl) == "AAPL position is at -12.50% against its cost basis, below -10% (alert 6)");
  auto stale = parse(R"({"symbol":"AAPL","condition":"quote_stale","threshold":60,"currentValue":125.7,)"
                     R"("lastQuoteAt":1,"alertId":7})");
  CHECK(alert_title(stale) == "AAPL quotes stale");
  CHECK(alert_text(stale) == "No AAPL quote for 125 s, more than 60 s (alert 7)");
  auto never = parse(R"({"symbol":"AAPL","condition":"quote_stale","threshold":60,"currentValue":61,"alertId":7})");
  CHECK(alert_text(never) == "No AAPL quote since the monitor started 61 s ago, more than 60 s (alert 7)");
}

TEST_CASE("webhook: Discord-compatible body, content capped at 2000 characters") {
  auto d = parse(discord_payload("AAPL price above 200", "AAPL is at \"201\"").c_str());
  CHECK(std::string(d["username"].GetString()) == "eventd");
  CHECK(std::string(d["content"].GetString()) == "**AAPL price above 200**\nAAPL is at \"201\"");
  auto big = parse(discord_payload("t", std::string(5000, 'x')).c_str());
  CHECK(std::string(big["content"].GetString()).size() == 2000);
}

TEST_CASE("analysis: the analysis_complete body carries the request's ids and the indicators") {
  auto request = parse(R"({"type":"analysis_request","userId":"alice","symbol":"XYZ","analysisType":"full",
                           "correlationId":"c-1","timestamp":1})");
  std::vector<double> prices;
  for (int i = 0; i < 60; ++i) prices.push_back(100 + (i * 7) % 13);
  auto result = analyse(prices, AnalysisKind::Full);
  REQUIRE(std::holds_alternative<Analysis>(result));
  auto body = parse(analysis_complete_json(request, std::get<Analysis>(result), "wf-9", 1234).c_str());
  CHECK(std::string(body["type"].GetString()) == "analysis_complete");
  CHECK(body["timestamp"].GetInt64() == 1234);
  CHECK(std::string(body["userId"].GetString()) == "alice");
  CHECK(std::string(body["symbol"].GetString()) == "XYZ");
  CHECK(std::string(body["workflowId"].GetString()) == "wf-9");
  CHECK(std::string(body["correlationId"].GetString()) == "c-1");
  CHECK(std::string(body["analysisType"].GetString()) == "full");
  CHECK(body["recommendation"].IsString());
  CHECK(body["reasons"].IsArray());
  CHECK(body["sma20"].IsNumber());
  CHECK(body["sma50"].IsNumber());
  CHECK(body["rsi14"].IsNumber());
  CHECK(body["macd"]["histogram"].IsNumber());
  CHECK(body["historicalVolatility"].IsNumber());
  CHECK(body["expectedMove"].IsNumber());
  CHECK(body["pricesUsed"].GetInt() == 60);
}

TEST_CASE("retry_policy: deferrals wait in the shortest retry queue that is long enough") {
  RetryPolicy p(RetryConfig{});  // 1000, 2000, 4000, 8000
  CHECK(p.queue_delay_at_least(1) == 1000);
  CHECK(p.queue_delay_at_least(1500) == 2000);
  CHECK(p.queue_delay_at_least(8000) == 8000);
  CHECK(p.queue_delay_at_least(60000) == 8000);
  RetryConfig one;
  one.max_attempts = 1;
  CHECK(RetryPolicy(one).queue_delay_at_least(5) == 1000);  // never retried, still deferrable
}
