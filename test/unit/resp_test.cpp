// RESP request encoding: byte for byte what hiredis writes.
#include <doctest/doctest.h>
#include <hiredis/hiredis.h>

#include <string>
#include <vector>

#include "eventd/redis/resp.hpp"

using eventd::redis::append_array_header;
using eventd::redis::append_bulk;
using eventd::redis::append_command;

namespace {

std::string hiredis_format(const std::vector<std::string_view>& args) {
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (std::string_view a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  char* out = nullptr;
  int n = redisFormatCommandArgv(&out, static_cast<int>(args.size()), argv.data(), lens.data());
  REQUIRE(n > 0);
  std::string s(out, static_cast<std::size_t>(n));
  redisFreeCommand(out);
  return s;
}

}  // namespace

TEST_CASE("append_command writes what hiredis' formatter writes") {
  const std::string binary("a\0b\r\nc", 6);
  const std::string long_arg(100000, 'x');
  const std::vector<std::vector<std::string_view>> commands = {
      {"PING"},
      {"SET", "eventd:idem:{AAPL}:m1", "1", "NX", "GET", "EX", "86400"},
      {"FCALL", "f", "0", ""},
      {"SET", binary, long_arg},
  };
  for (const auto& args : commands) {
    std::string out;
    append_command(out, args);
    CHECK(out == hiredis_format(args));
  }
}

TEST_CASE("append_command appends: two commands in one buffer are the two encodings in order") {
  std::string out = "keep";
  const std::vector<std::string_view> a{"GET", "k"}, b{"DEL", "k", "j"};
  append_command(out, a);
  append_command(out, b);
  CHECK(out == "keep" + hiredis_format(a) + hiredis_format(b));
}

TEST_CASE("a command written piece by piece equals the one written whole") {
  const std::vector<std::string_view> args{"FCALL", "eventd_x_quote_unwatched", "3", "k1", "k2", "k3", "1"};
  std::string pieces;
  append_array_header(pieces, args.size());
  for (std::string_view a : args) append_bulk(pieces, a);
  CHECK(pieces == hiredis_format(args));
  CHECK(pieces.starts_with("*7\r\n$5\r\nFCALL\r\n"));
}
