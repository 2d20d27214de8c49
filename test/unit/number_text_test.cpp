// format_number: the shortest round-trip text, character for character what
// std::to_chars writes, over the short decimals its direct path takes and around them.
#include <doctest/doctest.h>

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>

#include "eventd/number_text.hpp"

using eventd::format_number;

namespace {

std::string reference(double v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  REQUIRE(ec == std::errc());
  return std::string(buf, end);
}

// Counts mismatches (and shows the first few) rather than one CHECK per value.
struct Tally {
  long checked = 0, wrong = 0;
  void operator()(double v) {
    ++checked;
    const std::string got = format_number(v), want = reference(v);
    if (got != want && ++wrong <= 5) FAIL_CHECK("format_number(" << want << ") wrote " << got);
  }
};

}  // namespace

TEST_CASE("format_number: prices and changes in their shortest exact form") {
  CHECK(format_number(187.12) == "187.12");
  CHECK(format_number(-1.5) == "-1.5");
  CHECK(format_number(400) == "400");
  CHECK(format_number(0.05) == "0.05");
  CHECK(format_number(-0.000123) == "-0.000123");
  CHECK(format_number(0.1 + 0.2) == "0.30000000000000004");  // not a short decimal
  CHECK(format_number(1000000) == "1e+06");                    // to_chars' shorter form
  CHECK(format_number(1200000) == "1200000");                  // a tie: fixed
  CHECK(format_number(0.0001) == "1e-04");
  CHECK(format_number(0.00012) == "0.00012");  // a tie again
  CHECK(format_number(0.00001) == "1e-05");
  CHECK(format_number(0.0) == "0");
  CHECK(format_number(-0.0) == "-0");
  CHECK(format_number(1e300) == "1e+300");
  CHECK(format_number(123456789.123456) == "123456789.123456");
}

TEST_CASE("format_number equals std::to_chars for every decimal of up to 4 digits at each scale") {
  Tally tally;
  for (int k = 0; k <= 8; ++k) {
    const double scale = std::pow(10.0, k);
    for (int m = 1; m <= 9999; ++m) {
      tally(m / scale);
      tally(-m / scale);
      tally(m * scale);  // integers with trailing zeros: fixed or exponent form
    }
  }
  CHECK(tally.wrong == 0);
  CHECK(tally.checked == 9 * 9999 * 3);
}

TEST_CASE("format_number equals std::to_chars for random short decimals, their neighbours and random doubles") {
  std::mt19937_64 rng(20261201);
  Tally tally;
  for (int i = 0; i < 300000; ++i) {
    const int k = static_cast<int>(rng() % 9);           // fractional digits, some beyond 6
    const uint64_t m = rng() % 1000000000000000ull;        // up to 15 digits
    const double v = static_cast<double>(m) / std::pow(10.0, k);
    tally(v);
    tally(std::nextafter(v, 0.0));  // one ulp off: no longer a short decimal
    tally(std::nextafter(v, 1e300));
    // Uniform over bit patterns (finite ones), any magnitude.
    uint64_t bits = rng();
    double any;
    static_assert(sizeof any == sizeof bits);
    std::memcpy(&any, &bits, sizeof any);
    if (std::isfinite(any)) tally(any);
  }
  CHECK(tally.wrong == 0);
}

TEST_CASE("decimal_digits: the length std::to_chars writes") {
  static_assert(eventd::decimal_digits(0) == 1 && eventd::decimal_digits(9) == 1 && eventd::decimal_digits(10) == 2);
  for (uint64_t n : {uint64_t{99}, uint64_t{100}, uint64_t{999'999}, uint64_t{1'000'000}, UINT64_MAX}) {
    char text[24];
    const auto end = std::to_chars(text, text + sizeof text, n).ptr;
    CHECK(eventd::decimal_digits(n) == end - text);
  }
}
