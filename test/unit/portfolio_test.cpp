// Tests for src/portfolio.cpp: valuation, the portfolio conditions, spec checks, alerts.
#include <doctest/doctest.h>

#include <rapidjson/document.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "eventd/portfolio.hpp"

namespace {

using namespace eventd::portfolio;

rapidjson::Document parse(const std::string& json) {
  rapidjson::Document d;
  d.Parse(json.c_str());
  REQUIRE_FALSE(d.HasParseError());
  return d;
}

void check_near(std::optional<double> actual, double expected) {
  REQUIRE(actual.has_value());
  CAPTURE(*actual);
  CAPTURE(expected);
  CHECK(std::abs(*actual - expected) <= 1e-9 * std::max(1.0, std::abs(expected)));
}

Rule rule(Condition c, double threshold, std::string symbol = {}) {
  Rule r;
  r.alert_id = 7;
  r.condition = c;
  r.threshold = threshold;
  r.symbol = std::move(symbol);
  return r;
}

const std::vector<Position> kBook{{"AAPL", 10, 150.0}, {"MSFT", 5, std::nullopt}, {"TSLA", -4, 250.0}};
const Quotes kQuotes{{"AAPL", {187.5, -2.5, 1000}}, {"MSFT", {400, 4, 2000}}, {"TSLA", {200, 10, 3000}}};

}  // namespace

TEST_CASE("portfolio: each position valued at its latest quote") {
  const Valuation v = value(kBook, kQuotes);
  REQUIRE(v.positions.size() == 3);
  const auto& aapl = v.positions[0];
  REQUIRE(aapl.quote);
  CHECK(aapl.quote->timestamp_ms == 1000);
  check_near(aapl.market_value, 1875);
  check_near(aapl.day_change, -25);
  check_near(aapl.pnl, 375);            // 10 x (187.5 - 150)
  check_near(aapl.pnl_pct, 25);         // 375 / 1500
  const auto& msft = v.positions[1];
  check_near(msft.market_value, 2000);
  check_near(msft.day_change, 20);
  CHECK_FALSE(msft.pnl);                // no cost basis: no P&L, not 0
  CHECK_FALSE(msft.pnl_pct);
  SUBCASE("a short position gains when the price falls") {
    const auto& tsla = v.positions[2];
    check_near(tsla.market_value, -800);
    check_near(tsla.day_change, -40);
    check_near(tsla.pnl, 200);          // -4 x (200 - 250)
    check_near(tsla.pnl_pct, 20);       // 200 / (4 x 250)
  }
}

TEST_CASE("portfolio: totals, the day's change of the whole portfolio, P&L over the positions with a cost basis") {
  const Valuation v = value(kBook, kQuotes);
  CHECK(v.unquoted.empty());
  check_near(v.market_value, 1875 + 2000 - 800);
  check_near(v.day_change, -25 + 20 - 40);
  // sum(q x change) / sum(q x (price - change)) x 100: against the previous close.
  const double close = 10 * 190.0 + 5 * 396.0 - 4 * 190.0;
  check_near(v.day_change_pct, -45 / close * 100);
  check_near(v.pnl, 375 + 200);
  check_near(v.pnl_pct, 575.0 / (1500 + 1000) * 100);
}

TEST_CASE("portfolio: a symbol without a quote is shown as such, and totals wait for it") {
  Quotes some = kQuotes;
  some.erase("MSFT");
  const Valuation v = value(kBook, some);
  CHECK(v.unquoted == std::vector<std::string>{"MSFT"});
  CHECK_FALSE(v.positions[1].quote);
  CHECK_FALSE(v.positions[1].market_value);
  CHECK_FALSE(v.market_value);
  CHECK_FALSE(v.day_change);
  CHECK_FALSE(v.day_change_pct);
  // MSFT has no cost basis: the P&L total does not need it.
  check_near(v.pnl, 575);
  some.erase("AAPL");
  CHECK_FALSE(value(kBook, some).pnl);
}

TEST_CASE("portfolio: degenerate figures are absent, never 0 or infinite") {
  SUBCASE("no positions") {
    const Valuation v = value({}, kQuotes);
    check_near(v.market_value, 0);
    CHECK_FALSE(v.day_change_pct);  // nothing at the previous close
    CHECK_FALSE(v.pnl);
  }
  SUBCASE("quantity 0") {
    const std::vector<Position> flat{{"AAPL", 0, 150.0}};
    const Valuation v = value(flat, kQuotes);
    check_near(v.positions[0].pnl, 0);
    CHECK_FALSE(v.positions[0].pnl_pct);
    CHECK_FALSE(v.pnl_pct);
  }
  SUBCASE("overflow") {
    const std::vector<Position> huge{{"AAPL", 1e300, 1.0}};
    const Quotes q{{"AAPL", {1e300, 0, 1}}};
    const Valuation v = value(huge, q);
    CHECK_FALSE(v.positions[0].market_value);
    CHECK_FALSE(v.market_value);
    CHECK_FALSE(v.pnl_pct);
  }
}

TEST_CASE("portfolio: condition names") {
  for (const char* name : {"portfolio_value_below", "portfolio_value_above", "portfolio_change_pct_below",
                           "position_pnl_pct_below", "quote_stale"}) {
    auto c = parse_condition(name);
    REQUIRE(c);
    CHECK(condition_name(*c) == name);
  }
  CHECK_FALSE(parse_condition("price_above"));
  CHECK_FALSE(parse_condition("portfolio_value"));
  CHECK(names_symbol(Condition::QuoteStale));
  CHECK(names_symbol(Condition::PositionPnlPctBelow));
  CHECK_FALSE(names_symbol(Condition::ValueBelow));
}

TEST_CASE("portfolio: portfolio_value_below / _above compare the total market value") {
  const Valuation v = value(kBook, kQuotes);  // 3075
  auto below = evaluate(rule(Condition::ValueBelow, 3100), v, kQuotes, 0, 0);
  REQUIRE(below.holds);
  CHECK(*below.holds);
  CHECK(below.current_value == doctest::Approx(3075));
  CHECK_FALSE(*evaluate(rule(Condition::ValueBelow, 3075), v, kQuotes, 0, 0).holds);  // strictly below
  CHECK(*evaluate(rule(Condition::ValueAbove, 3000), v, kQuotes, 0, 0).holds);
  CHECK_FALSE(*evaluate(rule(Condition::ValueAbove, 3075), v, kQuotes, 0, 0).holds);
  SUBCASE("not evaluable while a position has no quote") {
    Quotes some = kQuotes;
    some.erase("TSLA");
    auto f = evaluate(rule(Condition::ValueBelow, 1e9), value(kBook, some), some, 0, 0);
    CHECK_FALSE(f.holds);
    CHECK(f.why == "no quote yet for TSLA");
  }
}

TEST_CASE("portfolio: portfolio_change_pct_below: the day's change of the whole portfolio in percent") {
  const Valuation v = value(kBook, kQuotes);
  const double pct = *v.day_change_pct;  // about -1.5 %
  auto f = evaluate(rule(Condition::ChangePctBelow, -1), v, kQuotes, 0, 0);
  REQUIRE(f.holds);
  CHECK(*f.holds);
  CHECK(f.current_value == doctest::Approx(pct));
  CHECK_FALSE(*evaluate(rule(Condition::ChangePctBelow, -2), v, kQuotes, 0, 0).holds);
  SUBCASE("not evaluable without every quote, or with nothing at the previous close") {
    Quotes some = kQuotes;
    some.erase("AAPL");
    CHECK_FALSE(evaluate(rule(Condition::ChangePctBelow, 0), value(kBook, some), some, 0, 0).holds);
    const std::vector<Position> none;
    auto empty = evaluate(rule(Condition::ChangePctBelow, 0), value(none, kQuotes), kQuotes, 0, 0);
    CHECK_FALSE(empty.holds);
    CHECK(empty.why.find("previous close") != std::string::npos);
  }
}

TEST_CASE("portfolio: position_pnl_pct_below: one position against its cost basis") {
  const Valuation v = value(kBook, kQuotes);
  auto f = evaluate(rule(Condition::PositionPnlPctBelow, 30, "AAPL"), v, kQuotes, 0, 0);
  REQUIRE(f.holds);
  CHECK(*f.holds);  // +25 % < 30 %
  CHECK(f.current_value == doctest::Approx(25));
  CHECK_FALSE(*evaluate(rule(Condition::PositionPnlPctBelow, -10, "AAPL"), v, kQuotes, 0, 0).holds);
  CHECK(*evaluate(rule(Condition::PositionPnlPctBelow, 21, "TSLA"), v, kQuotes, 0, 0).holds);
  SUBCASE("not evaluable without the position, its cost basis or its quote") {
    CHECK(evaluate(rule(Condition::PositionPnlPctBelow, 0, "NVDA"), v, kQuotes, 0, 0).why == "no position in NVDA");
    CHECK(evaluate(rule(Condition::PositionPnlPctBelow, 0, "MSFT"), v, kQuotes, 0, 0).why ==
          "the position in MSFT has no costBasis");
    Quotes some = kQuotes;
    some.erase("AAPL");
    auto f2 = evaluate(rule(Condition::PositionPnlPctBelow, 0, "AAPL"), value(kBook, some), some, 0, 0);
    CHECK_FALSE(f2.holds);
    CHECK(f2.why == "no quote yet for AAPL");
  }
}

TEST_CASE("portfolio: quote_stale: no quote for more than thresholdSec, or none since the monitor started") {
  auto stale = rule(Condition::QuoteStale, 60, "AAPL");  // AAPL quoted at 1000 ms
  const Valuation v = value(kBook, kQuotes);
  auto fresh = evaluate(stale, v, kQuotes, 61'000, 0);
  REQUIRE(fresh.holds);
  CHECK_FALSE(*fresh.holds);  // exactly 60 s: not more
  CHECK(fresh.current_value == doctest::Approx(60));
  auto old = evaluate(stale, v, kQuotes, 61'001, 0);
  CHECK(*old.holds);
  CHECK(old.current_value == doctest::Approx(60.001));
  SUBCASE("a quote stamped in the future is 0 s old") {
    auto f = evaluate(stale, v, kQuotes, 500, 0);
    CHECK_FALSE(*f.holds);
    CHECK(f.current_value == 0);
  }
  SUBCASE("never quoted: silent since the monitor started") {
    auto never = rule(Condition::QuoteStale, 60, "NVDA");
    auto early = evaluate(never, v, kQuotes, 100'000, 50'000);
    REQUIRE(early.holds);
    CHECK_FALSE(*early.holds);
    CHECK(early.current_value == doctest::Approx(50));
    CHECK(*evaluate(never, v, kQuotes, 110'001, 50'000).holds);
  }
}

TEST_CASE("portfolio: spec, positions, portfolio rules, the symbols a check reads") {
  auto doc = parse(R"({"rules":[
      {"alertId":1,"symbol":"GOOG","condition":"price_above","threshold":200},
      {"alertId":2,"condition":"portfolio_value_below","threshold":10000,"cooldownSec":60},
      {"alertId":3,"symbol":"AAPL","condition":"position_pnl_pct_below","threshold":-10},
      {"alertId":4,"symbol":"GOOG","condition":"quote_stale","thresholdSec":120},
      {"alertId":5,"symbol":"MSFT","condition":"quote_stale","thresholdSec":30}],
    "channels":["push"],"checkIntervalMs":5000,
    "positions":[{"symbol":"AAPL","quantity":10,"costBasis":150},{"symbol":"MSFT","quantity":2}]})");
  Spec s;
  REQUIRE_FALSE(parse_spec(doc, s));
  CHECK(s.check_interval_ms == 5000);
  REQUIRE(s.positions.size() == 2);
  CHECK(s.positions[0].cost_basis == 150);
  CHECK_FALSE(s.positions[1].cost_basis);
  REQUIRE(s.rules.size() == 4);  // the price rule is not a portfolio rule
  CHECK(s.rules[0].alert_id == 2);
  CHECK(s.rules[0].cooldown_sec == 60);
  CHECK(s.rules[2].condition == Condition::QuoteStale);
  CHECK(s.rules[2].threshold == 120);
  // The positions', then GOOG: watched by a price rule, not held.
  CHECK(s.symbols == std::vector<std::string>{"AAPL", "MSFT", "GOOG"});
  CHECK(parse_spec(parse(R"({"rules":[],"channels":[]})"), s) == std::nullopt);
  CHECK(s.check_interval_ms == 60000);
}

TEST_CASE("portfolio: spec, one clear line per mistake") {
  auto problem = [](const std::string& rules, const std::string& positions = "[]") {
    Spec s;
    auto doc = parse(R"({"channels":[],"rules":)" + rules + R"(,"positions":)" + positions + "}");
    auto p = parse_spec(doc, s);
    return p.value_or("");
  };
  const std::string held = R"([{"symbol":"AAPL","quantity":1,"costBasis":100},{"symbol":"MSFT","quantity":1}])";
  CHECK(problem(R"([{"alertId":1,"condition":"price_above","threshold":1}])") ==
        "/rules/0/symbol: required field missing (price_above watches one symbol)");
  CHECK(problem(R"([{"alertId":1,"symbol":"A","condition":"price_above"}])") ==
        "/rules/0/threshold: required field missing (price_above needs one)");
  CHECK(problem(R"([{"alertId":1,"symbol":"A","condition":"price_above","threshold":1,"thresholdSec":5}])") ==
        "/rules/0/thresholdSec: only quote_stale takes thresholdSec");
  CHECK(problem(R"([{"alertId":1,"symbol":"A","condition":"portfolio_value_below","threshold":1}])") ==
        "/rules/0/symbol: portfolio_value_below is about the whole portfolio and takes no symbol");
  CHECK(problem(R"([{"alertId":1,"condition":"portfolio_change_pct_below"}])") ==
        "/rules/0/threshold: required field missing (portfolio_change_pct_below needs one)");
  CHECK(problem(R"([{"alertId":1,"condition":"portfolio_value_above","threshold":1,"thresholdSec":9}])") ==
        "/rules/0/thresholdSec: only quote_stale takes thresholdSec");
  CHECK(problem(R"([{"alertId":1,"condition":"quote_stale","thresholdSec":9}])", held) ==
        "/rules/0/symbol: required field missing (quote_stale needs one)");
  CHECK(problem(R"([{"alertId":1,"symbol":"AAPL","condition":"quote_stale","threshold":9}])", held) ==
        "/rules/0/threshold: quote_stale takes thresholdSec (seconds), not threshold");
  CHECK(problem(R"([{"alertId":1,"symbol":"AAPL","condition":"quote_stale"}])", held) ==
        "/rules/0/thresholdSec: required field missing (quote_stale needs one)");
  CHECK(problem(R"([{"alertId":1,"symbol":"NVDA","condition":"quote_stale","thresholdSec":9}])", held) ==
        "/rules/0/symbol: NVDA is neither a position nor watched by a price rule of this monitor");
  CHECK(problem(R"([{"alertId":1,"symbol":"NVDA","condition":"price_below","threshold":1},
                    {"alertId":2,"symbol":"NVDA","condition":"quote_stale","thresholdSec":9}])", held) == "");
  CHECK(problem(R"([{"alertId":1,"symbol":"MSFT","condition":"position_pnl_pct_below","threshold":-5}])", held) ==
        "/rules/0/symbol: position_pnl_pct_below needs a position in MSFT with a costBasis");
  CHECK(problem(R"([{"alertId":1,"symbol":"NVDA","condition":"position_pnl_pct_below","threshold":-5}])", held) ==
        "/rules/0/symbol: position_pnl_pct_below needs a position in NVDA with a costBasis");
  CHECK(problem(R"([{"alertId":1,"symbol":"AAPL","condition":"position_pnl_pct_below","threshold":-5}])", held) == "");
  CHECK(problem("[]", R"([{"symbol":"AAPL","quantity":1},{"symbol":"B","quantity":1},{"symbol":"AAPL","quantity":2}])") ==
        "/positions/2/symbol: AAPL is listed already at /positions/0; one position per symbol (merge the lots)");
}

TEST_CASE("portfolio: alerts, alert_triggered fields plus the figures of the portfolio") {
  const Valuation v = value(kBook, kQuotes);
  SUBCASE("a rule about the whole portfolio") {
    Rule r = rule(Condition::ValueBelow, 3100);
    auto f = evaluate(r, v, kQuotes, 5000, 0);
    auto a = parse(alert_body("alice", r, f, v, kQuotes, 5000));
    CHECK(std::string(a["type"].GetString()) == "alert_triggered");
    CHECK(a["timestamp"].GetInt64() == 5000);
    CHECK(std::string(a["userId"].GetString()) == "alice");
    CHECK(a["alertId"].GetInt64() == 7);
    CHECK(std::string(a["symbol"].GetString()) == "PORTFOLIO");
    CHECK(std::string(a["condition"].GetString()) == "portfolio_value_below");
    CHECK(a["threshold"].IsInt64());  // written as in the spec: 3100, not 3100.0
    CHECK(a["threshold"].GetInt64() == 3100);
    CHECK(a["currentValue"].GetDouble() == doctest::Approx(3075));
    CHECK(a["portfolioValue"].GetDouble() == doctest::Approx(3075));
    CHECK(a["dayChange"].GetDouble() == doctest::Approx(-45));
    CHECK(a["dayChangePct"].GetDouble() == doctest::Approx(*v.day_change_pct));
    CHECK(a["unrealizedPnl"].GetDouble() == doctest::Approx(575));
    CHECK(a["unrealizedPnlPct"].GetDouble() == doctest::Approx(23));
    CHECK_FALSE(a.HasMember("positionPnlPct"));
  }
  SUBCASE("a position's P&L") {
    Rule r = rule(Condition::PositionPnlPctBelow, 30, "AAPL");
    auto a = parse(alert_body("bob", r, evaluate(r, v, kQuotes, 5000, 0), v, kQuotes, 5000));
    CHECK(std::string(a["symbol"].GetString()) == "AAPL");
    CHECK(a["positionPnlPct"].GetDouble() == doctest::Approx(25));
    CHECK(a["positionPnl"].GetDouble() == doctest::Approx(375));
    CHECK(a["price"].GetDouble() == doctest::Approx(187.5));
    CHECK(a["costBasis"].GetDouble() == doctest::Approx(150));
    CHECK(a["quantity"].GetDouble() == doctest::Approx(10));
    CHECK_FALSE(a.HasMember("portfolioValue"));
  }
  SUBCASE("a stale quote") {
    Rule r = rule(Condition::QuoteStale, 60, "AAPL");
    auto a = parse(alert_body("bob", r, evaluate(r, v, kQuotes, 91'000, 0), v, kQuotes, 91'000));
    CHECK(std::string(a["symbol"].GetString()) == "AAPL");
    CHECK(a["threshold"].GetInt64() == 60);
    CHECK(a["currentValue"].GetDouble() == doctest::Approx(90));
    CHECK(a["lastQuoteAt"].GetInt64() == 1000);
    CHECK(a["lastQuoteAgeSec"].GetDouble() == doctest::Approx(90));
    Rule never = rule(Condition::QuoteStale, 60, "NVDA");
    auto b = parse(alert_body("bob", never, evaluate(never, v, kQuotes, 91'000, 0), v, kQuotes, 91'000));
    CHECK_FALSE(b.HasMember("lastQuoteAt"));  // none ever
  }
}
