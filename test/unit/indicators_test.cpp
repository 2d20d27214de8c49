// Tests for src/indicators.cpp.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "eventd/indicators.hpp"

namespace {

using eventd::AnalysisKind;

// Absolute tolerance: the published tables are rounded to two decimals.
void check_near(double actual, double expected, double tolerance) {
  CAPTURE(actual);
  CAPTURE(expected);
  CHECK(std::abs(actual - expected) <= tolerance);
}

void check_all_near(const std::vector<double>& actual, const std::vector<double>& expected, double tolerance) {
  REQUIRE(actual.size() == expected.size());
  for (std::size_t i = 0; i < actual.size(); ++i) {
    CAPTURE(i);
    check_near(actual[i], expected[i], tolerance);
  }
}

// StockCharts ChartSchool "Moving Averages": the 10-day SMA/EMA spreadsheet.
const std::vector<double> stockcharts_ma_prices{
    22.27, 22.19, 22.08, 22.17, 22.18, 22.13, 22.23, 22.43, 22.24, 22.29, 22.15, 22.39, 22.38, 22.61, 23.36,
    24.05, 23.75, 23.83, 23.95, 23.63, 23.82, 23.87, 23.65, 23.19, 23.10, 23.33, 22.68, 23.10, 22.40, 22.17};

// Wilder's RSI example as StockCharts publishes it (cs-rsi.xls). The spreadsheet holds
// four decimals; the table shows two, and rounding the inputs to two moves the RSI by
// up to 0.07, so the four-decimal prices are the ones that reproduce the published RSI.
const std::vector<double> wilder_prices{
    44.3389, 44.0902, 44.1497, 43.6124, 44.3278, 44.8264, 45.0955, 45.4245, 45.8433, 46.0826, 45.8931,
    46.0328, 45.6140, 46.2820, 46.2820, 46.0028, 46.0328, 46.4116, 46.2222, 45.6439, 46.2122, 46.2521,
    45.7137, 46.4515, 45.7835, 45.3548, 44.0288, 44.1783, 44.2181, 44.5672, 43.4205, 42.6628, 43.1314};
const std::vector<double> wilder_published_rsi{70.53, 66.32, 66.55, 69.41, 66.36, 57.97, 62.93,
                                               63.26, 56.06, 62.38, 54.71, 50.42, 39.99, 41.46,
                                               41.87, 45.46, 37.30, 33.08, 37.77};

// 40 zigzag prices around 100, then 20 along `leg`: shapes for the scoring tests.
std::vector<double> zigzag_then(double (*leg)(int)) {
  std::vector<double> p;
  for (int i = 0; i < 40; ++i) p.push_back(100 + (i % 2 ? 1.0 : -1.0));
  for (int i = 1; i <= 20; ++i) p.push_back(leg(i) + (i % 2 ? 0.8 : -0.8));
  return p;
}

eventd::Analysis ok(std::variant<eventd::Analysis, eventd::AnalysisError> result) {
  if (const auto* e = std::get_if<eventd::AnalysisError>(&result)) FAIL("unexpected error: " << e->error);
  return std::get<eventd::Analysis>(std::move(result));
}

std::string error_of(const std::variant<eventd::Analysis, eventd::AnalysisError>& result) {
  REQUIRE(std::holds_alternative<eventd::AnalysisError>(result));
  return std::get<eventd::AnalysisError>(result).error;
}

bool has_reason(const eventd::Analysis& a, const std::string& text) {
  for (const auto& r : a.reasons) {
    if (r == text) return true;
  }
  return false;
}

bool has_reason_starting(const eventd::Analysis& a, const std::string& prefix) {
  for (const auto& r : a.reasons) {
    if (r.rfind(prefix, 0) == 0) return true;
  }
  return false;
}

}  // namespace

TEST_CASE("indicators: SMA matches the StockCharts 10-day example") {
  // Exact means of each 10-price window; StockCharts shows them rounded (22.22, 22.21, ...).
  const std::vector<double> expected{22.221, 22.209, 22.229, 22.259, 22.303, 22.421, 22.613,
                                     22.765, 22.905, 23.076, 23.21,  23.377, 23.525, 23.652,
                                     23.71,  23.684, 23.612, 23.505, 23.432, 23.277, 23.131};
  check_all_near(eventd::sma_series(stockcharts_ma_prices, 10), expected, 1e-9);
  REQUIRE(eventd::sma(stockcharts_ma_prices, 10));
  check_near(*eventd::sma(stockcharts_ma_prices, 10), 23.131, 1e-9);

  SUBCASE("too little data") {
    CHECK_FALSE(eventd::sma(std::span(stockcharts_ma_prices).first(9), 10));
    CHECK(eventd::sma_series(std::span(stockcharts_ma_prices).first(9), 10).empty());
    CHECK_FALSE(eventd::sma(stockcharts_ma_prices, 0));
    CHECK_FALSE(eventd::sma({}, 1));
  }
  SUBCASE("period equal to the length") {
    const std::vector<double> p{1, 2, 3, 4};
    CHECK(*eventd::sma(p, 4) == doctest::Approx(2.5));
    CHECK(eventd::sma_series(p, 4).size() == 1);
  }
}

TEST_CASE("indicators: EMA matches the StockCharts 10-day example") {
  // Seed 22.221 (the SMA), then (22.15 - 22.221) * 2/11 + 22.221 = 22.2080909...
  // StockCharts' rounded table: 22.22 22.21 22.24 22.27 22.33 22.52 22.80 22.97 23.13
  // 23.28 23.34 23.43 23.51 23.53 23.47 23.40 23.39 23.26 23.23 23.08 22.92.
  const std::vector<double> published{22.22, 22.21, 22.24, 22.27, 22.33, 22.52, 22.80, 22.97, 23.13, 23.28, 23.34,
                                      23.43, 23.51, 23.53, 23.47, 23.40, 23.39, 23.26, 23.23, 23.08, 22.92};
  const auto series = eventd::ema_series(stockcharts_ma_prices, 10);
  check_all_near(series, published, 0.005 + 1e-9);
  check_near(series[0], 22.221, 1e-12);
  check_near(series[1], 22.221 + (22.15 - 22.221) * 2.0 / 11.0, 1e-12);
  check_near(series[2], 22.241165289256195, 1e-9);
  check_near(series.back(), 22.915004, 1e-6);
  REQUIRE(eventd::ema(stockcharts_ma_prices, 10));
  CHECK(*eventd::ema(stockcharts_ma_prices, 10) == series.back());

  SUBCASE("too little data") {
    CHECK_FALSE(eventd::ema(std::span(stockcharts_ma_prices).first(9), 10));
    CHECK_FALSE(eventd::ema(stockcharts_ma_prices, 0));
  }
  SUBCASE("a straight line: the EMA lags by slope * (period - 1) / 2") {
    std::vector<double> line;
    for (int i = 0; i < 40; ++i) line.push_back(10 + 2.0 * i);
    const auto e = eventd::ema_series(line, 5);
    for (std::size_t i = 0; i < e.size(); ++i) check_near(e[i], line[i + 4] - 2.0 * 2, 1e-9);
  }
}

TEST_CASE("indicators: MACD on a hand-checked series") {
  SUBCASE("periods 2/3/2 on 1 2 3 4 5 4 3") {
    // EMA(2): 1.5 2.5 3.5 4.5 25/6 61/18 from index 1; EMA(3): 2 3 4 4 3.5 from index 2.
    // MACD line from index 2: 1/2 1/2 1/2 1/6 -1/9; signal EMA(2) of it: 1/2 1/2 5/18 1/54.
    const std::vector<double> p{1, 2, 3, 4, 5, 4, 3};
    const auto s = eventd::macd_series(p, 2, 3, 2);
    REQUIRE(s.size() == 4);
    check_near(s[0].macd, 0.5, 1e-12);
    check_near(s[0].signal, 0.5, 1e-12);
    check_near(s[0].histogram, 0.0, 1e-12);
    check_near(s[2].macd, 1.0 / 6, 1e-12);
    check_near(s[2].signal, 5.0 / 18, 1e-12);
    check_near(s[2].histogram, 1.0 / 6 - 5.0 / 18, 1e-12);
    check_near(s[3].macd, -1.0 / 9, 1e-12);
    check_near(s[3].signal, 1.0 / 54, 1e-12);
    check_near(s[3].histogram, -7.0 / 54, 1e-12);
    const auto last = eventd::macd(p, 2, 3, 2);
    REQUIRE(last);
    check_near(last->histogram, -7.0 / 54, 1e-12);
  }
  SUBCASE("12/26/9 on a straight line is 7 * slope, histogram 0") {
    // EMA(n) of a line lags by slope * (n - 1) / 2: 12.5 - 5.5 = 7 slopes apart.
    std::vector<double> line;
    for (int i = 0; i < 60; ++i) line.push_back(100 + 0.5 * i);
    const auto m = eventd::macd(line);
    REQUIRE(m);
    check_near(m->macd, 3.5, 1e-9);
    check_near(m->signal, 3.5, 1e-9);
    check_near(m->histogram, 0.0, 1e-9);
    CHECK(eventd::macd_series(line).size() == 60 - 33);
  }
  SUBCASE("needs slow + signal - 1 prices") {
    std::vector<double> p(34, 50.0);
    CHECK(eventd::macd(p));
    p.pop_back();
    CHECK_FALSE(eventd::macd(p));
    CHECK(eventd::macd_series(p).empty());
  }
  SUBCASE("bad periods") {
    const std::vector<double> p(100, 1.0);
    CHECK_FALSE(eventd::macd(p, 26, 12, 9));
    CHECK_FALSE(eventd::macd(p, 12, 12, 9));
    CHECK_FALSE(eventd::macd(p, 0, 26, 9));
    CHECK_FALSE(eventd::macd(p, 12, 26, 0));
  }
}

TEST_CASE("indicators: RSI matches Wilder's worked example") {
  SUBCASE("StockCharts' published table, to 0.01") {
    const auto series = eventd::rsi_series(wilder_prices, 14);
    check_all_near(series, wilder_published_rsi, 0.01);
    // More digits, as PyAlgoTrade's test of the same data pins them.
    check_near(series.front(), 70.53278948, 1e-6);
    check_near(series.back(), 37.77295211, 1e-6);
  }
  SUBCASE("the first value needs period + 1 prices") {
    const auto first15 = std::span(wilder_prices).first(15);
    REQUIRE(eventd::rsi(first15));
    check_near(*eventd::rsi(first15), 70.53, 0.01);
    CHECK_FALSE(eventd::rsi(first15.first(14)));
    CHECK(eventd::rsi_series(first15.first(14)).empty());
    CHECK_FALSE(eventd::rsi(wilder_prices, 0));
  }
  SUBCASE("the same prices rounded to two decimals give slightly different values") {
    // The two-decimal table column is not the input of the published RSI: computing from
    // it gives 70.46 (not 70.53), ... 37.79 (not 37.77). Values computed from the formula.
    const std::vector<double> rounded{44.34, 44.09, 44.15, 43.61, 44.33, 44.83, 45.10, 45.42, 45.84, 46.08, 45.89,
                                      46.03, 45.61, 46.28, 46.28, 46.00, 46.03, 46.41, 46.22, 45.64, 46.21, 46.25,
                                      45.71, 46.45, 45.78, 45.35, 44.03, 44.18, 44.22, 44.57, 43.42, 42.66, 43.13};
    const std::vector<double> expected{70.464135, 66.249619, 66.480942, 69.346853, 66.294713, 57.915021, 62.880718,
                                       63.208789, 56.011585, 62.339929, 54.670971, 50.386815, 40.019424, 41.492635,
                                       41.902430, 45.499497, 37.322778, 33.090483, 37.788772};
    check_all_near(eventd::rsi_series(rounded, 14), expected, 1e-5);
  }
  SUBCASE("edge cases") {
    std::vector<double> rising;
    std::vector<double> falling;
    for (int i = 0; i < 20; ++i) {
      rising.push_back(10 + i);
      falling.push_back(100 - i);
    }
    CHECK(*eventd::rsi(rising) == 100.0);
    CHECK(*eventd::rsi(falling) == 0.0);
    CHECK(*eventd::rsi(std::vector<double>(20, 7.0)) == 50.0);
  }
}

TEST_CASE("indicators: support and resistance from pivots") {
  // Swings between highs 112, 110, 108, 105, 104.8 and lows 90, 93, 95, 97, 97.2; last 100.
  const std::vector<double> p{100, 106, 112, 106, 98,  90,  96,  103,   110, 104, 98,  93,   99,   104, 108, 103,
                              99,  95,  98,  101, 105, 102, 99,  97,    100, 102, 104.8, 102, 99, 97.2, 98.5, 100};

  SUBCASE("nearest three each side, close pivots clustered") {
    const auto sr = eventd::support_resistance(p);
    REQUIRE(sr.support.size() == 3);
    check_near(sr.support[0].price, 97.1, 1e-9);  // 97 and 97.2 are within 0.5%
    CHECK(sr.support[0].touches == 2);
    check_near(sr.support[1].price, 95, 1e-9);
    check_near(sr.support[2].price, 93, 1e-9);  // 90 is the fourth: left out
    REQUIRE(sr.resistance.size() == 3);
    check_near(sr.resistance[0].price, 104.9, 1e-9);  // 104.8 and 105
    CHECK(sr.resistance[0].touches == 2);
    check_near(sr.resistance[1].price, 108, 1e-9);
    check_near(sr.resistance[2].price, 110, 1e-9);  // 112 is the fourth
    CHECK(sr.resistance[2].touches == 1);
  }
  SUBCASE("only the recent window counts") {
    eventd::SupportResistanceOptions options;
    options.window = 12;  // 105 102 99 97 100 102 104.8 102 99 97.2 98.5 100
    const auto sr = eventd::support_resistance(p, options);
    REQUIRE(sr.support.size() == 1);
    check_near(sr.support[0].price, 97.1, 1e-9);
    REQUIRE(sr.resistance.size() == 1);
    check_near(sr.resistance[0].price, 104.8, 1e-9);  // 105 is the window's first price
  }
  SUBCASE("zero tolerance keeps every pivot apart") {
    eventd::SupportResistanceOptions options;
    options.tolerance = 0;
    const auto sr = eventd::support_resistance(p, options);
    REQUIRE(sr.support.size() == 3);
    check_near(sr.support[0].price, 97.2, 1e-12);
    check_near(sr.support[1].price, 97, 1e-12);
    check_near(sr.support[2].price, 95, 1e-12);
  }
  SUBCASE("a flat bottom counts once") {
    const std::vector<double> flat{10, 9, 8, 8, 9, 10, 11};
    const auto sr = eventd::support_resistance(flat);
    REQUIRE(sr.support.size() == 1);
    CHECK(sr.support[0].price == 8);
    CHECK(sr.support[0].touches == 1);
    CHECK(sr.resistance.empty());
  }
  SUBCASE("too short or monotonic: no levels") {
    CHECK(eventd::support_resistance({}).support.empty());
    const std::vector<double> up{1, 2, 3, 4, 5, 6, 7, 8};
    const auto sr = eventd::support_resistance(up);
    CHECK(sr.support.empty());
    CHECK(sr.resistance.empty());
  }
}

TEST_CASE("indicators: historical volatility and expected move") {
  SUBCASE("alternating log returns of +-1%") {
    // 20 returns of +-0.01 have mean 0 and sample variance 20 * 0.0001 / 19.
    std::vector<double> p{100};
    for (int i = 0; i < 20; ++i) p.push_back(p.back() * std::exp(i % 2 ? -0.01 : 0.01));
    const auto hv = eventd::historical_volatility(p);
    REQUIRE(hv);
    check_near(*hv, 0.01 * std::sqrt(20.0 / 19.0 * 252.0), 1e-12);
    check_near(*hv, 0.1628690142091911, 1e-12);

    SUBCASE("only the last 20 returns count") {
      std::vector<double> longer{5, 500, 1, 300};
      longer.insert(longer.end(), p.begin(), p.end());
      check_near(*eventd::historical_volatility(longer), *hv, 1e-12);
    }
  }
  SUBCASE("an irregular series, checked with Python's statistics.stdev") {
    const std::vector<double> p{100, 101, 99.5, 102, 103, 101.5};
    REQUIRE(eventd::historical_volatility(p, 5));
    check_near(*eventd::historical_volatility(p, 5), 0.2754984734354147, 1e-12);
  }
  SUBCASE("steady growth has no volatility") {
    std::vector<double> p{50};
    for (int i = 0; i < 20; ++i) p.push_back(p.back() * 1.01);
    check_near(*eventd::historical_volatility(p), 0.0, 1e-9);
  }
  SUBCASE("not computable") {
    CHECK_FALSE(eventd::historical_volatility(std::vector<double>(20, 10.0)));
    std::vector<double> p(21, 10.0);
    p[5] = 0;
    CHECK_FALSE(eventd::historical_volatility(p));
    CHECK_FALSE(eventd::historical_volatility(std::vector<double>(21, 10.0), 1));
  }
  SUBCASE("expected move uses calendar days over 365") {
    check_near(eventd::expected_move(100, 0.2), 100 * 0.2 * std::sqrt(30.0 / 365.0), 1e-12);
    check_near(eventd::expected_move(100, 0.2), 5.733821790809959, 1e-12);
    check_near(eventd::expected_move(50, 0.35, 7), 2.42348667651235, 1e-12);
    check_near(eventd::expected_move(80, 0.25, 365), 20, 1e-12);
    CHECK(eventd::expected_move(80, 0.25, 0) == 0);
  }
}

TEST_CASE("indicators: analysis kinds parse and print") {
  for (auto kind : {AnalysisKind::Chart, AnalysisKind::Options, AnalysisKind::Full}) {
    CHECK(eventd::parse_analysis_kind(eventd::analysis_kind_name(kind)) == kind);
  }
  CHECK(eventd::analysis_kind_name(AnalysisKind::Options) == "options");
  CHECK_FALSE(eventd::parse_analysis_kind("daily"));
  CHECK_FALSE(eventd::parse_analysis_kind("Chart"));
}

TEST_CASE("indicators: analyse refuses too little or bad history") {
  const std::vector<double> twelve(12, 10.0);
  CHECK(error_of(eventd::analyse(twelve, AnalysisKind::Chart)) == "need at least 50 prices for chart analysis, have 12");
  CHECK(error_of(eventd::analyse(std::vector<double>(49, 10.0), AnalysisKind::Full)) ==
        "need at least 50 prices for full analysis, have 49");
  CHECK(error_of(eventd::analyse(std::vector<double>(20, 10.0), AnalysisKind::Options)) ==
        "need at least 21 prices for options analysis, have 20");
  CHECK(error_of(eventd::analyse({}, AnalysisKind::Options)) == "need at least 21 prices for options analysis, have 0");

  std::vector<double> bad(60, 10.0);
  bad[7] = std::numeric_limits<double>::quiet_NaN();
  CHECK(error_of(eventd::analyse(bad, AnalysisKind::Chart)) == "price at index 7 is not a positive number: nan");
  bad[7] = -1;
  CHECK(error_of(eventd::analyse(bad, AnalysisKind::Options)) == "price at index 7 is not a positive number: -1");
}

TEST_CASE("indicators: analyse scores chart signals") {
  SUBCASE("accelerating rise: above SMA(50), MACD positive, RSI neutral -> buy") {
    // RSI 59.93, SMA(50) 101.148, MACD histogram +0.5348 (computed independently).
    const auto p = zigzag_then([](int i) { return 100 + 0.02 * i * i; });
    const auto a = ok(eventd::analyse(p, AnalysisKind::Chart));
    CHECK(a.kind == AnalysisKind::Chart);
    CHECK(a.prices_used == 60);
    CHECK(a.last_price == p.back());
    REQUIRE(a.chart);
    CHECK_FALSE(a.options);
    check_near(a.chart->rsi_14, 59.93, 0.01);
    check_near(a.chart->sma_50, 101.148, 0.001);
    check_near(a.chart->macd.histogram, 0.5348, 0.0001);
    CHECK(a.chart->sma_20 == *eventd::sma(p, 20));
    CHECK(a.chart->ema_12 == *eventd::ema(p, 12));
    CHECK(a.chart->ema_26 == *eventd::ema(p, 26));
    CHECK(a.score == 2);
    CHECK(a.recommendation == "buy");
    CHECK(has_reason(a, "RSI 59.9 between 30 and 70: neutral"));
    CHECK(has_reason(a, "price 107.20 above SMA(50) 101.15"));
    CHECK(has_reason(a, "MACD histogram positive (0.5348)"));
    CHECK(has_reason(a, "score +2: buy (buy at +2 or more, sell at -2 or less)"));
  }
  SUBCASE("accelerating fall -> sell") {
    const auto p = zigzag_then([](int i) { return 100 - 0.02 * i * i; });
    const auto a = ok(eventd::analyse(p, AnalysisKind::Chart));
    CHECK(a.score == -2);
    CHECK(a.recommendation == "sell");
    CHECK(has_reason(a, "price 91.20 below SMA(50) 98.85"));
    CHECK(has_reason_starting(a, "MACD histogram negative"));
  }
  SUBCASE("a steady climb is overbought: +1 +1 -1 -> hold") {
    std::vector<double> p;
    for (int i = 0; i < 60; ++i) p.push_back(100 + i + (i % 2 ? 0.3 : -0.3));
    const auto a = ok(eventd::analyse(p, AnalysisKind::Chart));
    CHECK(a.chart->rsi_14 == 100.0);
    CHECK(a.score == 1);
    CHECK(a.recommendation == "hold");
    CHECK(has_reason(a, "RSI 100.0 above 70: overbought"));
  }
  SUBCASE("a steady slide is oversold: +1 -1 -1 -> hold") {
    std::vector<double> p;
    for (int i = 0; i < 60; ++i) p.push_back(200 - i - (i % 2 ? 0.3 : -0.3));
    const auto a = ok(eventd::analyse(p, AnalysisKind::Chart));
    CHECK(a.score == -1);
    CHECK(a.recommendation == "hold");
    CHECK(has_reason(a, "RSI 0.0 below 30: oversold"));
  }
  SUBCASE("support and resistance come from the last 50 prices") {
    std::vector<double> p(30, 100.0);
    const std::vector<double> swings{100, 106, 112, 106, 98,  90,  96,  103,   110, 104, 98,  93,   99,   104, 108, 103,
                                     99,  95,  98,  101, 105, 102, 99,  97,    100, 102, 104.8, 102, 99, 97.2, 98.5, 100};
    p.insert(p.end(), swings.begin(), swings.end());
    const auto a = ok(eventd::analyse(p, AnalysisKind::Chart));
    REQUIRE(a.chart->support.size() == 3);
    check_near(a.chart->support[0].price, 97.1, 1e-9);
    REQUIRE(a.chart->resistance.size() == 3);
    check_near(a.chart->resistance[0].price, 104.9, 1e-9);
    CHECK(has_reason(a, "nearest support 97.10"));
    CHECK(has_reason(a, "nearest resistance 104.90"));
  }
}

TEST_CASE("indicators: analyse options and full") {
  std::vector<double> p{100};
  for (int i = 0; i < 20; ++i) p.push_back(p.back() * std::exp(i % 2 ? -0.01 : 0.01));
  const double hv = 0.01 * std::sqrt(20.0 / 19.0 * 252.0);

  SUBCASE("options needs only 21 prices and never picks a direction") {
    const auto a = ok(eventd::analyse(p, AnalysisKind::Options));
    CHECK_FALSE(a.chart);
    REQUIRE(a.options);
    check_near(a.options->historical_volatility, hv, 1e-12);
    CHECK(a.options->volatility_returns == 20);
    CHECK(a.options->expected_move_days == 30);
    check_near(a.options->expected_move, eventd::expected_move(p.back(), hv, 30), 1e-12);
    check_near(a.options->expected_low, p.back() - a.options->expected_move, 1e-12);
    check_near(a.options->expected_high, p.back() + a.options->expected_move, 1e-12);
    CHECK(a.score == 0);
    CHECK(a.recommendation == "hold");
    CHECK(has_reason(a, "historical volatility 16.3% annualised over 20 returns"));
    CHECK(has_reason_starting(a, "1-sigma 30-day expected move +/-"));
    CHECK(has_reason(a, "volatility gives no direction: hold"));
  }
  SUBCASE("full has both parts and the chart's recommendation") {
    const auto rise = zigzag_then([](int i) { return 100 + 0.02 * i * i; });
    const auto a = ok(eventd::analyse(rise, AnalysisKind::Full));
    REQUIRE(a.chart);
    REQUIRE(a.options);
    CHECK(a.options->historical_volatility == *eventd::historical_volatility(rise));
    CHECK(a.recommendation == "buy");
    CHECK(has_reason_starting(a, "historical volatility "));
    CHECK_FALSE(has_reason(a, "volatility gives no direction: hold"));
  }
}
