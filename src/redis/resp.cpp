// RESP request encoding (see resp.hpp).
#include "eventd/redis/resp.hpp"

#include <charconv>

namespace eventd::redis {
namespace {

void append_prefixed_number(std::string& out, char prefix, std::size_t n) {
  char buf[24];
  buf[0] = prefix;
  auto [end, ec] = std::to_chars(buf + 1, buf + sizeof buf - 2, n);
  (void)ec;  // 20 digits always fit
  *end++ = '\r';
  *end++ = '\n';
  out.append(buf, end);
}

}  // namespace

void append_array_header(std::string& out, std::size_t count) { append_prefixed_number(out, '*', count); }

void append_bulk(std::string& out, std::string_view arg) {
  append_prefixed_number(out, '$', arg.size());
  out.append(arg);
  out.append("\r\n", 2);
}

void append_command(std::string& out, std::span<const std::string_view> args) {
  std::size_t total = 16;
  for (std::string_view a : args) total += a.size() + 16;
  out.reserve(out.size() + total);
  append_array_header(out, args.size());
  for (std::string_view a : args) append_bulk(out, a);
}

}  // namespace eventd::redis
