// UTF-8 validation, sanitising, truncation and base64.
#include <doctest/doctest.h>

#include <rapidjson/encodings.h>
#include <rapidjson/stringbuffer.h>

#include <random>
#include <string>
#include <vector>

#include "eventd/dispatcher.hpp"
#include "eventd/utf8.hpp"

using namespace eventd;

TEST_CASE("utf8: validation rejects stray, overlong, surrogate and truncated sequences") {
  CHECK(valid_utf8("plain ascii"));
  CHECK(valid_utf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"));
  CHECK_FALSE(valid_utf8("\xFF\xFE"));
  CHECK_FALSE(valid_utf8("\xC3"));               // truncated
  CHECK_FALSE(valid_utf8("\xC0\xAF"));           // overlong '/'
  CHECK_FALSE(valid_utf8("\xED\xA0\x80"));       // surrogate
  CHECK_FALSE(valid_utf8("\xF4\x90\x80\x80"));   // above U+10FFFF
}

namespace {

// RapidJSON's own check (the one kParseValidateEncodingFlag applies to strings).
bool rapidjson_valid(const std::string& s) {
  rapidjson::StringStream in(s.c_str());
  rapidjson::GenericStringBuffer<rapidjson::UTF8<>> out;
  while (static_cast<std::size_t>(in.Tell()) < s.size()) {
    if (!rapidjson::UTF8<>::Validate(in, out)) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("utf8: validation agrees with RapidJSON's at every alignment of the eight-byte ASCII skip") {
  const std::vector<std::string> sequences = {"\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80", "\xC3", "\xC0\xAF",
                                              "\xED\xA0\x80", "\xF4\x90\x80\x80", "\x80", "\xFF", "\xE0\x80\x80"};
  for (std::size_t before = 0; before <= 17; ++before) {
    for (std::size_t after = 0; after <= 9; after += 3) {
      for (const std::string& seq : sequences) {
        const std::string text = std::string(before, 'a') + seq + std::string(after, 'b');
        CAPTURE(before);
        CAPTURE(after);
        CHECK(valid_utf8(text) == rapidjson_valid(text));
      }
    }
  }
  // Random bytes, mostly ASCII as bodies are.
  std::mt19937 rng(7);
  for (int i = 0; i < 20000; ++i) {
    std::string text(rng() % 40, 'x');
    for (char& c : text) c = static_cast<char>(rng() % 8 == 0 ? 0x80 + rng() % 128 : 0x20 + rng() % 95);
    CHECK(valid_utf8(text) == rapidjson_valid(text));
  }
}

TEST_CASE("utf8: sanitising replaces each invalid byte with U+FFFD and keeps the rest") {
  CHECK(sanitize_utf8("ok") == "ok");
  CHECK(sanitize_utf8("AB\xFF\xFE") == "AB\xEF\xBF\xBD\xEF\xBF\xBD");
  CHECK(sanitize_utf8("\xC3\xA9\xC3") == "\xC3\xA9\xEF\xBF\xBD");
  CHECK(cap_utf8("x\xFF", 100) == "x\xEF\xBF\xBD");
}

TEST_CASE("utf8: truncation counts characters, not bytes") {
  std::string accents;
  for (int i = 0; i < 10; ++i) accents += "\xC3\xA9";
  CHECK(truncate_utf8_chars(accents, 4) == "\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9");
  CHECK(truncate_utf8_chars("abc", 10) == "abc");
}

TEST_CASE("utf8: base64 per RFC 4648") {
  CHECK(base64("") == "");
  CHECK(base64("f") == "Zg==");
  CHECK(base64("fo") == "Zm8=");
  CHECK(base64("foo") == "Zm9v");
  CHECK(base64("foobar") == "Zm9vYmFy");
  CHECK(base64(std::string("\xFF\xFE\x00", 3)) == "//4A");
}
