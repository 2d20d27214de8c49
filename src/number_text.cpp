// Shortest round-trip text of a double (see number_text.hpp).
//
// std::to_chars finds the shortest digits by a general algorithm, the largest single
// cost of a quote's request in eventd. Prices and changes are short decimals, so those
// take a direct path first: the value has k <= 6 fractional digits when some integer m
// gives m / 10^k == value exactly (division is correctly rounded, and so is reading
// the text "m with a point" back: both give the double nearest to m / 10^k). The least
// such k gives the shortest digits: below 1e9 a double's spacing is under 1e-6, so at
// most one integer m is near enough at any k, and a text with fewer digits would be one
// with a smaller k. Whatever is not such a decimal, or would be written in exponent form
// by to_chars (it picks the shorter of the two, fixed on a tie), goes to to_chars.
#include "eventd/number_text.hpp"

#include <charconv>
#include <cmath>
#include <cstdint>

namespace eventd {
namespace {

constexpr double kPow10[] = {1, 10, 100, 1e3, 1e4, 1e5, 1e6};
constexpr int kMaxFraction = 6;
constexpr double kLimit = 1e9;

// Writes `value` in fixed notation into `out` when it is a short decimal that to_chars
// would also write in fixed notation; returns the length, or 0 to leave it to to_chars.
std::size_t short_decimal(double value, char* out) {
  const double a = std::fabs(value);
  if (!(a < kLimit) || a == 0) return 0;  // NaN, infinities, zeros and large values too
  for (int k = 0; k <= kMaxFraction; ++k) {
    const double scaled = std::nearbyint(a * kPow10[k]);
    if (scaled == 0 || scaled / kPow10[k] != a) continue;
    const auto m = static_cast<uint64_t>(scaled);
    const int digits = decimal_digits(m);
    int significant = digits;  // m without its trailing zeros (only k == 0 has any)
    if (k == 0) {
      for (uint64_t t = m; t % 10 == 0; t /= 10) --significant;
    }
    const int exponent = digits - 1 - k;  // of the leading digit
    const int fixed_length = exponent >= 0 ? digits + (k > 0 ? 1 : 0) : 2 + k;
    const int exponent_digits = std::abs(exponent) >= 100 ? 3 : 2;
    const int scientific_length = significant + (significant > 1 ? 1 : 0) + 2 + exponent_digits;
    if (fixed_length > scientific_length) return 0;

    char digits_text[24];
    auto [end, ec] = std::to_chars(digits_text, digits_text + sizeof digits_text, m);
    (void)ec;
    char* p = out;
    if (std::signbit(value)) *p++ = '-';
    if (k == 0) {
      for (const char* d = digits_text; d < end; ++d) *p++ = *d;
    } else if (digits > k) {  // integer part, point, k digits
      const char* point = end - k;
      for (const char* d = digits_text; d < point; ++d) *p++ = *d;
      *p++ = '.';
      for (const char* d = point; d < end; ++d) *p++ = *d;
    } else {  // 0.<zeros><digits>
      *p++ = '0';
      *p++ = '.';
      for (int z = digits; z < k; ++z) *p++ = '0';
      for (const char* d = digits_text; d < end; ++d) *p++ = *d;
    }
    return static_cast<std::size_t>(p - out);
  }
  return 0;
}

}  // namespace

std::string format_number(double value) {
  char buf[32];
  if (std::size_t n = short_decimal(value, buf)) return std::string(buf, n);
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
  if (ec != std::errc()) return std::to_string(value);
  return std::string(buf, end);
}

}  // namespace eventd
