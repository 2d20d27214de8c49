// Portfolio monitors, the pure part: a monitor spec's positions and portfolio rules,
// the valuation of the positions at the latest quotes, the five portfolio conditions,
// and the alert_triggered body a firing rule publishes. No I/O, no clock: quotes and
// the time are passed in. eventd's checks (portfolio_checks.hpp) and `eventctl monitor
// status` both compute with these functions.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <rapidjson/document.h>

namespace eventd::portfolio {

struct Position {
  std::string symbol;
  double quantity = 0;               // negative: a short position
  std::optional<double> cost_basis;  // price per unit paid
};

// The latest quote of a symbol, as quote_update stores it (keys::quote).
struct Quote {
  double price = 0;
  double change = 0;  // against the previous close
  int64_t timestamp_ms = 0;
};
// Symbol -> latest quote; a symbol without an entry has had no quote yet.
using Quotes = std::map<std::string, Quote, std::less<>>;

// A figure is absent (nullopt) when something it needs is missing: a quote, a cost
// basis, a denominator that is 0. It is never 0 in their place, and never infinite.
struct PositionValue {
  Position position;
  std::optional<Quote> quote;
  std::optional<double> market_value;  // quantity x price
  std::optional<double> day_change;    // quantity x change
  std::optional<double> pnl;           // unrealised: quantity x (price - costBasis)
  std::optional<double> pnl_pct;       // pnl / (|quantity| x costBasis) x 100
};

struct Valuation {
  std::vector<PositionValue> positions;  // in spec order
  std::vector<std::string> unquoted;     // symbols of positions without a quote yet
  // Totals need every position's quote (P&L: every position with a cost basis).
  std::optional<double> market_value;
  std::optional<double> day_change;
  std::optional<double> day_change_pct;  // sum(q x change) / sum(q x (price - change)) x 100
  std::optional<double> pnl;
  std::optional<double> pnl_pct;         // pnl / sum(|q| x costBasis) x 100
};

Valuation value(std::span<const Position> positions, const Quotes& quotes);

enum class Condition { ValueBelow, ValueAbove, ChangePctBelow, PositionPnlPctBelow, QuoteStale };

// "portfolio_value_below" ... "quote_stale"; nullopt for any other name (the price
// conditions included).
std::optional<Condition> parse_condition(std::string_view name);
std::string_view condition_name(Condition condition);
// Conditions whose rule names a symbol (the others are about the whole portfolio).
bool names_symbol(Condition condition);

struct Rule {
  int64_t alert_id = 0;
  Condition condition = Condition::ValueBelow;
  double threshold = 0;       // money or percent; quote_stale: thresholdSec
  std::string symbol;         // position_pnl_pct_below, quote_stale
  int64_t cooldown_sec = 0;
};

// What one check finds for one rule.
struct Finding {
  std::optional<bool> holds;  // nullopt: not evaluable now, `why` says what is missing
  double current_value = 0;   // what was compared with the threshold (when evaluable)
  std::string why;
};

// `now_ms`: the check's time. `started_ms`: when the monitor was started; a symbol that
// never had a quote counts as silent since then (quote_stale).
//  - portfolio_value_below / _above: the total market value < / > threshold; not
//    evaluable while a position has no quote.
//  - portfolio_change_pct_below: the day's change of the whole portfolio in percent <
//    threshold; not evaluable while a position has no quote or the previous close's
//    value is 0.
//  - position_pnl_pct_below: the position's unrealised P&L in percent < threshold; not
//    evaluable without a quote, a cost basis, or with quantity 0.
//  - quote_stale: the symbol's last quote is more than threshold seconds old at now_ms
//    (a quote stamped in the future counts as 0 s old); always evaluable.
Finding evaluate(const Rule& rule, const Valuation& valuation, const Quotes& quotes, int64_t now_ms,
                 int64_t started_ms);

// The portfolio part of a monitor spec (schema-valid, see monitor.schema.json).
struct Spec {
  std::vector<Position> positions;
  std::vector<Rule> rules;              // portfolio rules only; price rules stay in the spec
  std::vector<std::string> symbols;     // whose quotes a check reads: positions, then quote_stale symbols
  int64_t check_interval_ms = 60000;
};

// Parses a schema-valid spec. Returns the first mistake schema validation cannot
// catch, as one line "<JSON pointer>: <what>" (nothing set in `out` then):
//   a rule without the fields its condition needs, or with fields it does not take
//   (a portfolio rule has a symbol only when its condition names one; quote_stale has
//   thresholdSec instead of threshold); a position listed twice; position_pnl_pct_below
//   on a symbol that is not a position with a costBasis; quote_stale on a symbol that
//   is neither a position nor watched by a price rule.
std::optional<std::string> parse_spec(const rapidjson::Value& spec, Spec& out);

// The symbol of the alert of a rule about the whole portfolio (alert_triggered needs one).
inline constexpr std::string_view kPortfolioSymbol = "PORTFOLIO";

// The alert_triggered body (JSON) a firing rule publishes: the fields of a price
// rule's alert (symbol: the rule's, or kPortfolioSymbol; threshold: as in the spec,
// thresholdSec for quote_stale; currentValue: the finding's) plus the portfolio figures
// that apply: portfolioValue, dayChange, dayChangePct, unrealizedPnl, unrealizedPnlPct
// for the portfolio-wide rules; quantity, costBasis, price, marketValue, positionPnl,
// positionPnlPct for position_pnl_pct_below; lastQuoteAt (absent: none ever) and
// lastQuoteAgeSec for quote_stale. Absent figures are left out.
std::string alert_body(std::string_view user, const Rule& rule, const Finding& finding, const Valuation& valuation,
                       const Quotes& quotes, int64_t now_ms);

}  // namespace eventd::portfolio
