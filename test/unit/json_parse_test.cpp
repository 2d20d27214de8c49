// Tests for include/eventd/json_parse.hpp: how message bodies, CLI input, config
// files and Redis values are parsed.
#include <doctest/doctest.h>

#include <string>

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>

#include "eventd/json_case.hpp"
#include "eventd/json_parse.hpp"
#include "eventd/schema_registry.hpp"

namespace {

using eventd::parse_json;

std::string nested_arrays(std::size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

// A quote_update whose extra field "x" holds `depth` nested arrays.
std::string deep_quote(std::size_t depth) {
  return R"({"type":"quote_update","timestamp":1700000000000,"symbol":"A","price":1,"change":0,"x":)" +
         nested_arrays(depth) + "}";
}

}  // namespace

TEST_CASE("json_parse: a document nested too deep is a parse error, not a stack overflow") {
  // 100 000 levels overflowed the recursive parser's stack (SIGSEGV): one message
  // like this took eventd down, and eventctl and --check-config with it.
  for (std::size_t depth : {65u, 1000u, 100000u, 1000000u}) {
    rapidjson::Document doc;
    auto error = parse_json<rapidjson::kParseValidateEncodingFlag>(doc, nested_arrays(depth));
    REQUIRE(error);
    CHECK(error->what == "Nested deeper than 64 levels.");
    CHECK(error->offset == 65);  // just after the 65th "["
  }
  std::string objects;
  for (int i = 0; i < 100000; ++i) objects += R"({"a":)";
  objects += "1" + std::string(100000, '}');
  rapidjson::Document doc;
  auto error = parse_json(doc, objects);
  REQUIRE(error);
  CHECK(error->what == "Nested deeper than 64 levels.");
}

TEST_CASE("json_parse: 64 levels are fine; the bound is configurable") {
  rapidjson::Document doc;
  CHECK_FALSE(parse_json(doc, nested_arrays(64)));
  CHECK(doc.IsArray());
  CHECK(parse_json(doc, nested_arrays(3), 2));
  CHECK_FALSE(parse_json(doc, nested_arrays(2), 2));
  CHECK_FALSE(parse_json(doc, "1", 0));  // scalars have no depth
  CHECK(parse_json(doc, "{}", 0));
}

TEST_CASE("json_parse: other errors read as Document::Parse's") {
  for (const std::string text : {"", "{", "{} x", R"({"a":1,})", "[1e400]", "\"\xff\"", "{\"a\" 1}"}) {
    CAPTURE(text);
    rapidjson::Document expected;
    expected.Parse<rapidjson::kParseValidateEncodingFlag>(text.data(), text.size());
    REQUIRE(expected.HasParseError());
    rapidjson::Document doc;
    auto error = parse_json<rapidjson::kParseValidateEncodingFlag>(doc, text);
    REQUIRE(error);
    CHECK(error->offset == expected.GetErrorOffset());
    CHECK(error->what == rapidjson::GetParseError_En(expected.GetParseError()));
  }
}

TEST_CASE("json_parse: invalid UTF-8 is RapidJSON's error at its offset, valid UTF-8 parses as with its check") {
  // Valid text skips RapidJSON's per-character check (json_parse.hpp); text with an
  // invalid sequence anywhere is parsed with it.
  for (const std::string text : {"{\"s\":\"caf\xC3\xA9\"}", "{\"s\":\"12345678\xED\xA0\x80\"}", "[\"ok\",\"\xC0\xAF\"]",
                                 "{\"k\xFF\":1}", "{\"a\":1} \xFF", "{\"s\":\"\xF0\x9F\x98\x80\"}"}) {
    CAPTURE(text);
    rapidjson::Document expected;
    expected.Parse<rapidjson::kParseValidateEncodingFlag>(text.data(), text.size());
    rapidjson::Document doc;
    auto error = parse_json<rapidjson::kParseValidateEncodingFlag>(doc, text);
    CHECK(bool(error) == expected.HasParseError());
    if (error) {
      CHECK(error->offset == expected.GetErrorOffset());
      CHECK(error->what == rapidjson::GetParseError_En(expected.GetParseError()));
    } else {
      CHECK(doc == expected);
    }
  }
}

TEST_CASE("json_parse: parsed in place, the same document or error as parse_json") {
  using eventd::parse_json_in_place;
  constexpr unsigned kFlags = rapidjson::kParseValidateEncodingFlag | eventd::kParseUniqueKeysFlag;
  const std::string with_nul("{\"a\":\"x\0y\"}", 11);
  for (const std::string& text :
       {std::string(R"({"type":"quote_update","symbol":"AAPL","price":189.5,"s":"caf\u00e9 \"q\" \\ \n"})"),
        std::string("{\"s\":\"caf\xC3\xA9\"}"), std::string("{\"s\":\"\xED\xA0\x80\"}"), std::string("{\"a\":1,\"a\":2}"),
        std::string("{\"a\":1} x"), std::string("{"), std::string(""), nested_arrays(70), with_nul,
        std::string("[\"\\ud800\"]"), std::string(R"({"n":[1,-2.5e3,18446744073709551615,true,null,{}]})")}) {
    CAPTURE(text);
    rapidjson::Document expected;
    auto expected_error = parse_json<kFlags>(expected, text);
    rapidjson::Document doc;
    std::string scratch;
    auto error = parse_json_in_place<kFlags>(doc, text, scratch);
    REQUIRE(bool(error) == bool(expected_error));
    if (error) {
      CHECK(error->offset == expected_error->offset);
      CHECK(error->what == expected_error->what);
      CHECK(doc.IsNull());
    } else {
      CHECK(doc == expected);
    }
  }
}

TEST_CASE("json_parse: in place, the document's strings are the scratch copy's bytes, the text untouched") {
  const std::string text = R"({"symbol":"AAPL","note":"a\tb"})";
  const std::string original = text;
  rapidjson::Document doc;
  std::string scratch;
  REQUIRE_FALSE(eventd::parse_json_in_place<rapidjson::kParseValidateEncodingFlag>(doc, text, scratch));
  const char* symbol = doc["symbol"].GetString();
  CHECK(symbol >= scratch.data());
  CHECK(symbol < scratch.data() + scratch.size());
  CHECK(std::string(doc["note"].GetString()) == "a\tb");
  CHECK(text == original);
}

TEST_CASE("json_parse: a valid document parses as with Document::Parse") {
  const std::string text = R"({"a":[1,-2,18446744073709551615,1.5,"s",true,null,{"b":{}}],"c":"caf\u00e9"})";
  rapidjson::Document expected;
  expected.Parse(text.data(), text.size());
  rapidjson::Document doc;
  CHECK_FALSE(parse_json(doc, text));
  CHECK(doc == expected);
  // With a caller's allocator, as the dispatcher parses each message into its own pool.
  char buffer[256];
  rapidjson::MemoryPoolAllocator<> pool(buffer, sizeof buffer);
  rapidjson::Document pooled(&pool);
  CHECK_FALSE(parse_json(pooled, text));
  CHECK(pooled == expected);
}

TEST_CASE("json_parse: on error the document keeps its previous value") {
  rapidjson::Document doc;
  REQUIRE_FALSE(parse_json(doc, R"({"a":1})"));
  CHECK(parse_json(doc, nested_arrays(100)));
  REQUIRE(doc.IsObject());
  CHECK(doc["a"].GetInt() == 1);
}

TEST_CASE("dispatcher steps: a deep message body is rejected before normalising and validating") {
  // The dispatcher's steps on a message body: parse, normalise keys, validate.
  eventd::SchemaRegistry schemas;
  {
    rapidjson::Document doc;
    auto error = parse_json<rapidjson::kParseValidateEncodingFlag>(doc, deep_quote(200000));
    REQUIRE(error);
    CHECK(error->what == "Nested deeper than 64 levels.");
  }
  {
    // Just within the bound (the body is level 1): parses, normalises, validates.
    rapidjson::Document doc;
    REQUIRE_FALSE(parse_json<rapidjson::kParseValidateEncodingFlag>(doc, deep_quote(63)));
    eventd::normalise_keys(doc, doc.GetAllocator());
    CHECK_FALSE(schemas.validate("quote_update", doc));
  }
}

TEST_CASE("json_parse: with kParseUniqueKeysFlag a key given twice is an error naming it") {
  constexpr unsigned kFlags = rapidjson::kParseValidateEncodingFlag | eventd::kParseUniqueKeysFlag;
  SUBCASE("at the top level") {
    rapidjson::Document doc;
    const std::string text = R"({"price":1,"price":-1})";
    auto error = parse_json<kFlags>(doc, text);
    REQUIRE(error);
    CHECK(error->what == R"(Duplicate key "price" at /price.)");
    CHECK(error->offset == text.find("-1") - 1);  // just after the second key
    // Without the flag RapidJSON keeps both members.
    CHECK_FALSE(parse_json(doc, text));
    CHECK(doc.MemberCount() == 2);
  }
  SUBCASE("nested, with the JSON pointer through arrays and escaped tokens") {
    rapidjson::Document doc;
    auto error = parse_json<kFlags>(doc, R"({"a":1,"rules":[{"x":1},{"s":[0,{"k/~":1,"k/~":2}]}]})");
    REQUIRE(error);
    CHECK(error->what == R"(Duplicate key "k/~" at /rules/1/s/1/k~1~0.)");
  }
  SUBCASE("control characters in a key are shown escaped") {
    rapidjson::Document doc;
    auto error = parse_json<kFlags>(doc, "{\"a\\u0000\":1,\"a\\u0000\":2}");
    REQUIRE(error);
    CHECK(error->what == R"(Duplicate key "a\u0000" at /a\u0000.)");
  }
  SUBCASE("the same key in different objects, and keys that only look alike, are fine") {
    rapidjson::Document doc;
    CHECK_FALSE(parse_json<kFlags>(doc, R"({"a":{"a":1,"b":{"a":2}},"b":[{"a":1},{"a":2}],"c":{"a":1},"A":0,"a ":0})"));
    CHECK(doc["c"]["a"].GetInt() == 1);
    CHECK_FALSE(parse_json<kFlags>(doc, R"({"a":1,"a\u0000":2,"a\u0000b":3})"));
    CHECK(doc.MemberCount() == 3);
  }
  SUBCASE("an object with many keys (hashed past the first 16)") {
    std::string text = "{";
    for (int i = 0; i < 5000; ++i) text += (i ? "," : "") + std::string("\"k") + std::to_string(i) + "\":" + std::to_string(i);
    rapidjson::Document doc;
    CHECK_FALSE(parse_json<kFlags>(doc, text + "}"));
    CHECK(doc.MemberCount() == 5000);
    auto late = parse_json<kFlags>(doc, text + ",\"k4999\":0}");
    REQUIRE(late);
    CHECK(late->what == R"(Duplicate key "k4999" at /k4999.)");
    auto early = parse_json<kFlags>(doc, text + ",\"k3\":0}");
    REQUIRE(early);
    CHECK(early->what == R"(Duplicate key "k3" at /k3.)");
    CHECK(doc.MemberCount() == 5000);  // the document kept its previous value
  }
  SUBCASE("depth errors still win; other parse errors read as before") {
    rapidjson::Document doc;
    auto error = parse_json<kFlags>(doc, nested_arrays(100));
    REQUIRE(error);
    CHECK(error->what == "Nested deeper than 64 levels.");
    error = parse_json<kFlags>(doc, R"({"a":1,})");
    REQUIRE(error);
    CHECK(error->what == rapidjson::GetParseError_En(rapidjson::kParseErrorObjectMissName));
  }
}
