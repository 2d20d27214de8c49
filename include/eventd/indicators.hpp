// Technical-analysis indicators over a price history, and the chart/options analysis
// built from them. Pure: no I/O, no clock; prices are passed in, oldest first.
#pragma once

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace eventd {

// Moving averages. `period` 0 or more than prices.size() gives nullopt / an empty series.
// Element i of a series is the value ending at prices[period - 1 + i].
std::optional<double> sma(std::span<const double> prices, std::size_t period);
std::vector<double> sma_series(std::span<const double> prices, std::size_t period);

// EMA seeded with the SMA of the first `period` prices, then
// ema = (price - prev) * k + prev with k = 2 / (period + 1).
std::optional<double> ema(std::span<const double> prices, std::size_t period);
std::vector<double> ema_series(std::span<const double> prices, std::size_t period);

struct Macd {
  double macd = 0;       // EMA(fast) - EMA(slow)
  double signal = 0;     // EMA(signal) of the MACD line, which starts when EMA(slow) exists
  double histogram = 0;  // macd - signal
};
// Needs slow + signal - 1 prices (34 for 12/26/9). Element i of the series ends at
// prices[slow + signal - 2 + i]. Requires 0 < fast < slow and signal > 0.
std::optional<Macd> macd(std::span<const double> prices, std::size_t fast = 12, std::size_t slow = 26,
                         std::size_t signal = 9);
std::vector<Macd> macd_series(std::span<const double> prices, std::size_t fast = 12, std::size_t slow = 26,
                              std::size_t signal = 9);

// Wilder's RSI: the first averages are the simple means of the first `period` gains and
// losses, then avg = (prev * (period - 1) + current) / period. Needs period + 1 prices;
// element i of the series ends at prices[period + i]. No losses gives 100, no movement
// at all gives 50.
std::optional<double> rsi(std::span<const double> prices, std::size_t period = 14);
std::vector<double> rsi_series(std::span<const double> prices, std::size_t period = 14);

// Support and resistance, by the method:
//  1. Take the last `window` prices (all of them if fewer).
//  2. Pivots: a pivot low is strictly lower than the `span` prices before it and no
//     higher than the `span` after it (so a flat bottom counts once, at its first
//     price); pivot highs mirror that. The first and last `span` prices cannot be pivots.
//  3. Pool lows and highs (a broken resistance becomes support), sort ascending and
//     cluster greedily: a pivot joins the current cluster while it is within
//     `tolerance` (relative) of the cluster's first, lowest price. A level is the mean
//     of its cluster; `touches` is the cluster's size.
//  4. Levels below the last price are support, above it resistance, nearest first, at
//     most `max_levels` each; a level exactly at the last price is neither.
struct SupportResistanceOptions {
  std::size_t window = 50;
  std::size_t span = 2;
  double tolerance = 0.005;
  std::size_t max_levels = 3;
};
struct PriceLevel {
  double price = 0;
  std::size_t touches = 0;
};
struct SupportResistance {
  std::vector<PriceLevel> support;     // below the last price, highest first
  std::vector<PriceLevel> resistance;  // above the last price, lowest first
};
SupportResistance support_resistance(std::span<const double> prices, const SupportResistanceOptions& options = {});

// Annualised historical volatility: sample standard deviation (n - 1) of the last
// `returns` log returns, times sqrt(periods_per_year). Needs returns + 1 prices, all
// positive, and returns >= 2. 0.25 means 25%.
std::optional<double> historical_volatility(std::span<const double> prices, std::size_t returns = 20,
                                            double periods_per_year = 252);

// One-sigma expected move over `calendar_days`: price * annual_vol * sqrt(days / 365).
// Calendar days, because option expiries are counted that way; the volatility above is
// annualised from trading days, and both are per year, so they combine.
double expected_move(double price, double annual_vol, double calendar_days = 30);

enum class AnalysisKind { Chart, Options, Full };
std::optional<AnalysisKind> parse_analysis_kind(std::string_view name);  // "chart" | "options" | "full"
std::string_view analysis_kind_name(AnalysisKind kind);

// Minimum history: chart (and full) needs SMA(50); options needs 20 returns.
inline constexpr std::size_t chart_min_prices = 50;
inline constexpr std::size_t options_min_prices = 21;

struct ChartAnalysis {
  double sma_20 = 0;
  double sma_50 = 0;
  double ema_12 = 0;
  double ema_26 = 0;
  Macd macd;  // 12/26/9
  double rsi_14 = 0;
  std::vector<PriceLevel> support;
  std::vector<PriceLevel> resistance;
};

struct OptionsAnalysis {
  double historical_volatility = 0;  // annualised, 20 returns
  std::size_t volatility_returns = 0;
  double expected_move_days = 0;  // calendar days
  double expected_move = 0;       // one sigma, in price units
  double expected_low = 0;        // last price -/+ expected_move
  double expected_high = 0;
};

// Scoring rule (chart and full): each signal scores +1 (bullish), -1 (bearish) or 0.
//   RSI(14) below 30: +1 (oversold); above 70: -1 (overbought); otherwise 0.
//   Last price above SMA(50): +1; below: -1; equal: 0.
//   MACD histogram positive: +1; negative: -1; zero: 0.
// Score >= 2: "buy"; <= -2: "sell"; otherwise "hold". Options alone has no directional
// signal (volatility says how far, not which way), so it is always "hold" with score 0.
struct Analysis {
  AnalysisKind kind = AnalysisKind::Full;
  std::size_t prices_used = 0;
  double last_price = 0;
  std::optional<ChartAnalysis> chart;      // chart and full
  std::optional<OptionsAnalysis> options;  // options and full
  int score = 0;
  std::string recommendation;  // "buy" | "sell" | "hold"
  std::vector<std::string> reasons;
};

struct AnalysisError {
  std::string error;  // e.g. "need at least 50 prices for chart analysis, have 12"
};

// Never throws for bad input: too little history or a price that is not finite and
// positive gives AnalysisError.
std::variant<Analysis, AnalysisError> analyse(std::span<const double> prices, AnalysisKind kind);

}  // namespace eventd
