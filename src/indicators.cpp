// Indicator arithmetic and the analysis scoring rule (see indicators.hpp).
#include "eventd/indicators.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace eventd {
namespace {

double mean_of(std::span<const double> values) {
  double sum = 0;
  for (double v : values) sum += v;
  return sum / static_cast<double>(values.size());
}

double rsi_from(double avg_gain, double avg_loss) {
  if (avg_loss == 0) return avg_gain == 0 ? 50.0 : 100.0;
  return 100.0 - 100.0 / (1.0 + avg_gain / avg_loss);
}

std::string format(const char* fmt, double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, value);
  return buf;
}

std::string price_text(double price) { return format("%.2f", price); }

}  // namespace

std::vector<double> sma_series(std::span<const double> prices, std::size_t period) {
  std::vector<double> out;
  if (period == 0 || prices.size() < period) return out;
  out.reserve(prices.size() - period + 1);
  // Each window summed afresh: a running sum drifts over a 1000-price history.
  for (std::size_t end = period; end <= prices.size(); ++end) out.push_back(mean_of(prices.subspan(end - period, period)));
  return out;
}

std::optional<double> sma(std::span<const double> prices, std::size_t period) {
  if (period == 0 || prices.size() < period) return std::nullopt;
  return mean_of(prices.last(period));
}

std::vector<double> ema_series(std::span<const double> prices, std::size_t period) {
  std::vector<double> out;
  if (period == 0 || prices.size() < period) return out;
  out.reserve(prices.size() - period + 1);
  const double k = 2.0 / (static_cast<double>(period) + 1.0);
  double value = mean_of(prices.first(period));
  out.push_back(value);
  for (std::size_t i = period; i < prices.size(); ++i) {
    value += (prices[i] - value) * k;
    out.push_back(value);
  }
  return out;
}

std::optional<double> ema(std::span<const double> prices, std::size_t period) {
  auto series = ema_series(prices, period);
  if (series.empty()) return std::nullopt;
  return series.back();
}

std::vector<Macd> macd_series(std::span<const double> prices, std::size_t fast, std::size_t slow,
                              std::size_t signal) {
  std::vector<Macd> out;
  if (fast == 0 || signal == 0 || fast >= slow) return out;
  const auto fast_ema = ema_series(prices, fast);
  const auto slow_ema = ema_series(prices, slow);
  if (slow_ema.empty()) return out;
  // slow_ema[j] and fast_ema[j + slow - fast] both end at prices[slow - 1 + j].
  std::vector<double> line;
  line.reserve(slow_ema.size());
  for (std::size_t j = 0; j < slow_ema.size(); ++j) line.push_back(fast_ema[j + slow - fast] - slow_ema[j]);
  const auto signal_line = ema_series(line, signal);
  out.reserve(signal_line.size());
  for (std::size_t i = 0; i < signal_line.size(); ++i) {
    const double m = line[signal - 1 + i];
    out.push_back(Macd{m, signal_line[i], m - signal_line[i]});
  }
  return out;
}

std::optional<Macd> macd(std::span<const double> prices, std::size_t fast, std::size_t slow, std::size_t signal) {
  auto series = macd_series(prices, fast, slow, signal);
  if (series.empty()) return std::nullopt;
  return series.back();
}

std::vector<double> rsi_series(std::span<const double> prices, std::size_t period) {
  std::vector<double> out;
  if (period == 0 || prices.size() < period + 1) return out;
  out.reserve(prices.size() - period);
  double avg_gain = 0;
  double avg_loss = 0;
  for (std::size_t i = 1; i <= period; ++i) {
    const double change = prices[i] - prices[i - 1];
    if (change > 0) avg_gain += change;
    else avg_loss -= change;
  }
  const double n = static_cast<double>(period);
  avg_gain /= n;
  avg_loss /= n;
  out.push_back(rsi_from(avg_gain, avg_loss));
  for (std::size_t i = period + 1; i < prices.size(); ++i) {
    const double change = prices[i] - prices[i - 1];
    avg_gain = (avg_gain * (n - 1) + std::max(change, 0.0)) / n;
    avg_loss = (avg_loss * (n - 1) + std::max(-change, 0.0)) / n;
    out.push_back(rsi_from(avg_gain, avg_loss));
  }
  return out;
}

std::optional<double> rsi(std::span<const double> prices, std::size_t period) {
  auto series = rsi_series(prices, period);
  if (series.empty()) return std::nullopt;
  return series.back();
}

SupportResistance support_resistance(std::span<const double> prices, const SupportResistanceOptions& options) {
  SupportResistance out;
  if (prices.empty()) return out;
  const auto window = prices.last(std::min(options.window, prices.size()));
  const std::size_t span = std::max<std::size_t>(options.span, 1);

  std::vector<double> pivots;
  for (std::size_t i = span; i + span < window.size(); ++i) {
    const double p = window[i];
    bool low = true;
    bool high = true;
    // Strict on the left, inclusive on the right: a plateau counts once, at its start.
    for (std::size_t j = i - span; j < i; ++j) {
      low = low && window[j] > p;
      high = high && window[j] < p;
    }
    for (std::size_t j = i + 1; j <= i + span; ++j) {
      low = low && window[j] >= p;
      high = high && window[j] <= p;
    }
    if (low || high) pivots.push_back(p);
  }
  std::sort(pivots.begin(), pivots.end());

  // Anchoring each cluster at its lowest price stops a chain of close pivots drifting.
  std::vector<PriceLevel> levels;
  double anchor = 0;
  double sum = 0;
  for (double p : pivots) {
    if (levels.empty() || p > anchor * (1.0 + options.tolerance)) {
      levels.push_back(PriceLevel{p, 1});
      anchor = p;
      sum = p;
    } else {
      auto& level = levels.back();
      sum += p;
      ++level.touches;
      level.price = sum / static_cast<double>(level.touches);
    }
  }

  const double last = window.back();
  // levels is ascending: support is read from the top down, resistance from the bottom up.
  for (auto it = levels.rbegin(); it != levels.rend() && out.support.size() < options.max_levels; ++it) {
    if (it->price < last) out.support.push_back(*it);
  }
  for (auto it = levels.begin(); it != levels.end() && out.resistance.size() < options.max_levels; ++it) {
    if (it->price > last) out.resistance.push_back(*it);
  }
  return out;
}

std::optional<double> historical_volatility(std::span<const double> prices, std::size_t returns,
                                            double periods_per_year) {
  if (returns < 2 || prices.size() < returns + 1) return std::nullopt;
  const auto window = prices.last(returns + 1);
  std::vector<double> logs;
  logs.reserve(returns);
  for (std::size_t i = 1; i < window.size(); ++i) {
    if (!(window[i - 1] > 0) || !(window[i] > 0)) return std::nullopt;
    logs.push_back(std::log(window[i] / window[i - 1]));
  }
  const double mean = mean_of(logs);
  double squares = 0;
  for (double r : logs) squares += (r - mean) * (r - mean);
  const double variance = squares / static_cast<double>(returns - 1);
  return std::sqrt(variance * periods_per_year);
}

double expected_move(double price, double annual_vol, double calendar_days) {
  return price * annual_vol * std::sqrt(std::max(calendar_days, 0.0) / 365.0);
}

std::optional<AnalysisKind> parse_analysis_kind(std::string_view name) {
  if (name == "chart") return AnalysisKind::Chart;
  if (name == "options") return AnalysisKind::Options;
  if (name == "full") return AnalysisKind::Full;
  return std::nullopt;
}

std::string_view analysis_kind_name(AnalysisKind kind) {
  switch (kind) {
    case AnalysisKind::Chart: return "chart";
    case AnalysisKind::Options: return "options";
    case AnalysisKind::Full: return "full";
  }
  return "full";
}

std::variant<Analysis, AnalysisError> analyse(std::span<const double> prices, AnalysisKind kind) {
  const bool want_chart = kind != AnalysisKind::Options;
  const bool want_options = kind != AnalysisKind::Chart;
  const std::size_t needed = want_chart ? chart_min_prices : options_min_prices;
  if (prices.size() < needed) {
    return AnalysisError{"need at least " + std::to_string(needed) + " prices for " +
                         std::string(analysis_kind_name(kind)) + " analysis, have " + std::to_string(prices.size())};
  }
  for (std::size_t i = 0; i < prices.size(); ++i) {
    if (!std::isfinite(prices[i]) || prices[i] <= 0) {
      return AnalysisError{"price at index " + std::to_string(i) + " is not a positive number: " +
                           format("%g", prices[i])};
    }
  }

  Analysis a;
  a.kind = kind;
  a.prices_used = prices.size();
  a.last_price = prices.back();

  if (want_chart) {
    // The length check above makes every value computable.
    ChartAnalysis c;
    c.sma_20 = *sma(prices, 20);
    c.sma_50 = *sma(prices, 50);
    c.ema_12 = *ema(prices, 12);
    c.ema_26 = *ema(prices, 26);
    c.macd = *macd(prices);
    c.rsi_14 = *rsi(prices);
    auto levels = support_resistance(prices);
    c.support = std::move(levels.support);
    c.resistance = std::move(levels.resistance);

    const std::string rsi_text = "RSI " + format("%.1f", c.rsi_14);
    if (c.rsi_14 < 30) {
      a.score += 1;
      a.reasons.push_back(rsi_text + " below 30: oversold");
    } else if (c.rsi_14 > 70) {
      a.score -= 1;
      a.reasons.push_back(rsi_text + " above 70: overbought");
    } else {
      a.reasons.push_back(rsi_text + " between 30 and 70: neutral");
    }

    const std::string sma_text = "SMA(50) " + price_text(c.sma_50);
    if (a.last_price > c.sma_50) {
      a.score += 1;
      a.reasons.push_back("price " + price_text(a.last_price) + " above " + sma_text);
    } else if (a.last_price < c.sma_50) {
      a.score -= 1;
      a.reasons.push_back("price " + price_text(a.last_price) + " below " + sma_text);
    } else {
      a.reasons.push_back("price at " + sma_text);
    }

    const std::string hist_text = " (" + format("%.4f", c.macd.histogram) + ")";
    if (c.macd.histogram > 0) {
      a.score += 1;
      a.reasons.push_back("MACD histogram positive" + hist_text);
    } else if (c.macd.histogram < 0) {
      a.score -= 1;
      a.reasons.push_back("MACD histogram negative" + hist_text);
    } else {
      a.reasons.push_back("MACD histogram zero");
    }

    if (!c.support.empty()) a.reasons.push_back("nearest support " + price_text(c.support.front().price));
    if (!c.resistance.empty()) a.reasons.push_back("nearest resistance " + price_text(c.resistance.front().price));
    a.chart = std::move(c);
  }

  if (want_options) {
    OptionsAnalysis o;
    o.volatility_returns = options_min_prices - 1;
    o.historical_volatility = *historical_volatility(prices, o.volatility_returns);
    o.expected_move_days = 30;
    o.expected_move = expected_move(a.last_price, o.historical_volatility, o.expected_move_days);
    o.expected_low = a.last_price - o.expected_move;
    o.expected_high = a.last_price + o.expected_move;
    a.reasons.push_back("historical volatility " + format("%.1f", o.historical_volatility * 100) +
                        "% annualised over " + std::to_string(o.volatility_returns) + " returns");
    a.reasons.push_back("1-sigma 30-day expected move +/-" + price_text(o.expected_move) + ": " +
                        price_text(o.expected_low) + " to " + price_text(o.expected_high));
    a.options = o;
  }

  if (want_chart) {
    a.recommendation = a.score >= 2 ? "buy" : a.score <= -2 ? "sell" : "hold";
    a.reasons.push_back("score " + std::string(a.score > 0 ? "+" : "") + std::to_string(a.score) + ": " +
                        a.recommendation + " (buy at +2 or more, sell at -2 or less)");
  } else {
    a.recommendation = "hold";
    a.reasons.push_back("volatility gives no direction: hold");
  }
  return a;
}

}  // namespace eventd
