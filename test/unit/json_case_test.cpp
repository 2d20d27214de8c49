// Tests for src/json_case.cpp.
#include <doctest/doctest.h>

#include <string>

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "eventd/json_case.hpp"

namespace {

std::string normalised(const char* json) {
  rapidjson::Document doc;
  doc.Parse(json);
  REQUIRE_FALSE(doc.HasParseError());
  eventd::normalise_keys(doc, doc.GetAllocator());
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  doc.Accept(w);
  return sb.GetString();
}

}  // namespace

TEST_CASE("json_case: snake_to_camel") {
  using eventd::snake_to_camel;
  CHECK(snake_to_camel("user_id") == "userId");
  CHECK(snake_to_camel("analysis_type") == "analysisType");
  CHECK(snake_to_camel("current_value_x") == "currentValueX");
  CHECK(snake_to_camel("userId") == "userId");
  CHECK(snake_to_camel("type") == "type");
  CHECK(snake_to_camel("") == "");
  CHECK(snake_to_camel("_private") == "_private");
  CHECK(snake_to_camel("trailing_") == "trailing_");
  CHECK(snake_to_camel("__both_ends__") == "__bothEnds__");
  CHECK(snake_to_camel("___") == "___");
  CHECK(snake_to_camel("double__gap") == "doubleGap");
  CHECK(snake_to_camel("sma_20") == "sma20");
}

TEST_CASE("json_case: normalise_keys renames top level and nested keys") {
  SUBCASE("top level, order kept") {
    CHECK(normalised(R"({"type":"x","user_id":"u1","analysis_type":"chart"})") ==
          R"({"type":"x","userId":"u1","analysisType":"chart"})");
  }
  SUBCASE("nested objects and arrays of objects") {
    CHECK(normalised(R"({"data":{"order_id":1,"items":[{"unit_price":2},3,[{"a_b":4}]]}})") ==
          R"({"data":{"orderId":1,"items":[{"unitPrice":2},3,[{"aB":4}]]}})");
  }
  SUBCASE("values are untouched") {
    CHECK(normalised(R"({"alert_id":"snake_value","list":["a_b"]})") ==
          R"({"alertId":"snake_value","list":["a_b"]})");
  }
  SUBCASE("camelCase wins over snake_case, whichever comes first") {
    CHECK(normalised(R"({"user_id":"snake","userId":"camel"})") == R"({"userId":"camel"})");
    CHECK(normalised(R"({"userId":"camel","user_id":"snake"})") == R"({"userId":"camel"})");
  }
  SUBCASE("two snake spellings of one key: the first wins") {
    CHECK(normalised(R"({"user_id":"first","user__id":"second"})") == R"({"userId":"first"})");
  }
  SUBCASE("leading underscore keys are kept") {
    CHECK(normalised(R"({"_meta":1,"__x_y":2})") == R"({"_meta":1,"__xY":2})");
  }
  SUBCASE("non-objects are left alone") {
    CHECK(normalised(R"([1,"a_b",{"c_d":1}])") == R"([1,"a_b",{"cD":1}])");
    CHECK(normalised(R"("a_b")") == R"("a_b")");
  }
}
