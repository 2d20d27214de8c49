// UTF-8 validation, sanitising, truncation and base64.
#include <doctest/doctest.h>

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
