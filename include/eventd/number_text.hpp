// Numbers as eventd writes them into Redis and derived messages: the shortest text that
// reads back as the same double, exactly what std::to_chars(first, last, value) writes
// ("187.12", not "187.1200000001"; "1e+06" for a million, as to_chars prefers it).
#pragma once

#include <cstdint>
#include <string>

namespace eventd {

std::string format_number(double value);

// Decimal digits of n (1 for 0): the length std::to_chars writes for it.
constexpr int decimal_digits(uint64_t n) {
  int d = 1;
  for (; n >= 10; n /= 10) ++d;
  return d;
}

}  // namespace eventd
