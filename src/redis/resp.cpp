// RESP request encoding (see resp.hpp).
#include "eventd/redis/resp.hpp"

#include <charconv>
#include <cstring>

#include "eventd/number_text.hpp"

namespace eventd::redis {
namespace {

std::size_t digit_count(std::size_t n) { return static_cast<std::size_t>(decimal_digits(n)); }

// Writes `<prefix><n>\r\n` at `p`; returns the end.
char* put_prefixed_number(char* p, char prefix, std::size_t n, std::size_t digits) {
  *p++ = prefix;
  std::to_chars(p, p + digits, n);
  p += digits;
  *p++ = '\r';
  *p++ = '\n';
  return p;
}

// The whole encoding is sized first and written through a pointer: appending piece by
// piece (three appends per argument, each checking capacity) cost twice as much.
char* put_bulk(char* p, std::string_view arg) {
  p = put_prefixed_number(p, '$', arg.size(), digit_count(arg.size()));
  if (!arg.empty()) std::memcpy(p, arg.data(), arg.size());
  p += arg.size();
  *p++ = '\r';
  *p++ = '\n';
  return p;
}

std::size_t bulk_size(std::string_view arg) { return 1 + digit_count(arg.size()) + 2 + arg.size() + 2; }

}  // namespace

void append_array_header(std::string& out, std::size_t count) {
  const std::size_t digits = digit_count(count), at = out.size();
  out.resize(at + 1 + digits + 2);
  put_prefixed_number(out.data() + at, '*', count, digits);
}

void append_bulk(std::string& out, std::string_view arg) {
  const std::size_t at = out.size();
  out.resize(at + bulk_size(arg));
  put_bulk(out.data() + at, arg);
}

void append_command(std::string& out, std::span<const std::string_view> args) {
  const std::size_t header_digits = digit_count(args.size());
  std::size_t total = 1 + header_digits + 2;
  for (std::string_view a : args) total += bulk_size(a);
  const std::size_t at = out.size();
  out.resize(at + total);
  char* p = put_prefixed_number(out.data() + at, '*', args.size(), header_digits);
  for (std::string_view a : args) p = put_bulk(p, a);
}

}  // namespace eventd::redis
