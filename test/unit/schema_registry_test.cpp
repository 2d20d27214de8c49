// Tests for src/schema_registry.cpp and the schemas in schemas/.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "eventd/json_case.hpp"
#include "eventd/quick_schema.hpp"
#include "eventd/schema_registry.hpp"
#include "source_root.hpp"

namespace {

namespace fs = std::filesystem;

using eventd::test::source_root;

rapidjson::Document parse(const std::string& json) {
  rapidjson::Document doc;
  doc.Parse(json.c_str());
  REQUIRE_MESSAGE(!doc.HasParseError(), json);
  return doc;
}

const eventd::SchemaRegistry& registry() {
  static const eventd::SchemaRegistry r;
  return r;
}

std::optional<std::string> check(const std::string& schema, const std::string& json) {
  const auto doc = parse(json);
  return registry().validate(schema, doc);
}

// A valid sample and the required fields of each message type.
struct Sample {
  std::string json;
  std::vector<std::string> required;
};

const std::map<std::string, Sample>& samples() {
  static const std::map<std::string, Sample> s{
      {"quote_update",
       {R"({"type":"quote_update","timestamp":1700000000000,"symbol":"AAPL","price":189.5,"change":-1.25})",
        {"type", "timestamp", "symbol", "price", "change"}}},
      {"analysis_request",
       {R"({"type":"analysis_request","timestamp":1700000000000,"correlationId":"c-1","userId":"u1",)"
        R"("symbol":"MSFT","analysisType":"chart"})",
        {"type", "timestamp", "userId", "symbol", "analysisType"}}},
      {"analysis_complete",
       {R"({"type":"analysis_complete","timestamp":1700000000000,"userId":"u1","symbol":"MSFT",)"
        R"("workflowId":"wf-9","recommendation":"hold","rsi":55.2,"sma":{"20":401.2},"support":[390,395]})",
        {"type", "timestamp", "userId", "symbol", "workflowId", "recommendation"}}},
      {"alert_triggered",
       {R"({"type":"alert_triggered","timestamp":1700000000000,"userId":"u1","alertId":1,"symbol":"AAPL",)"
        R"("condition":"price_above","threshold":200,"currentValue":201.5})",
        {"type", "timestamp", "userId", "alertId", "symbol", "condition", "threshold", "currentValue"}}},
      {"notification",
       {R"({"type":"notification","timestamp":1700000000000,"userId":"u1","channel":"discord","kind":"alert",)"
        R"("title":"AAPL above 200","body":"AAPL is at 201.5","data":{"alertId":1}})",
        {"type", "timestamp", "userId", "channel", "title", "body"}}},
  };
  return s;
}

std::string without(const std::string& json, const std::string& field) {
  auto doc = parse(json);
  doc.RemoveMember(field.c_str());
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  doc.Accept(w);
  return sb.GetString();
}

std::string with(const std::string& json, const std::string& field, const std::string& value_json) {
  auto doc = parse(json);
  const auto value = parse(value_json);
  doc.RemoveMember(field.c_str());
  rapidjson::Value copy(value, doc.GetAllocator());
  doc.AddMember(rapidjson::Value(field.c_str(), doc.GetAllocator()), copy, doc.GetAllocator());
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  doc.Accept(w);
  return sb.GetString();
}

}  // namespace

TEST_CASE("schema_registry: every schema is embedded and compiles") {
  const auto names = eventd::embedded_schema_names();
  for (const char* n : {"quote_update", "analysis_request", "analysis_complete", "alert_triggered",
                        "notification", "monitor", "config"}) {
    CAPTURE(n);
    CHECK(std::find(names.begin(), names.end(), n) != names.end());
    CHECK_FALSE(eventd::embedded_schema(n).empty());
    CHECK(registry().has(n));
  }
  CHECK(eventd::embedded_schema("nope").empty());
  CHECK_FALSE(registry().has("nope"));
  CHECK(eventd::SchemaRegistry::message_types() ==
        std::vector<std::string>{"quote_update", "analysis_request", "analysis_complete", "alert_triggered",
                                 "notification"});
}

TEST_CASE("schema_registry: embedded text matches schemas/ on disk") {
  const fs::path root = source_root();
  REQUIRE_MESSAGE(!root.empty(), "cannot locate the source tree from " << __FILE__);
  std::size_t on_disk = 0;
  for (const auto& entry : fs::directory_iterator(root / "schemas")) {
    const std::string file = entry.path().filename().string();
    const std::string suffix = ".schema.json";
    if (file.size() <= suffix.size() || file.substr(file.size() - suffix.size()) != suffix) continue;
    ++on_disk;
    const std::string name = file.substr(0, file.size() - suffix.size());
    CAPTURE(name);
    std::ifstream in(entry.path());
    std::stringstream text;
    text << in.rdbuf();
    CHECK(eventd::embedded_schema(name) == text.str());
    // Each schema documents itself.
    const auto doc = parse(text.str());
    CHECK(doc.HasMember("title"));
    CHECK(doc.HasMember("description"));
  }
  CHECK(on_disk == eventd::embedded_schema_names().size());
}

TEST_CASE("schema_registry: every message type accepts its sample") {
  for (const auto& [type, sample] : samples()) {
    CAPTURE(type);
    CHECK(check(type, sample.json) == std::nullopt);
  }
}

TEST_CASE("schema_registry: every required field is named when missing") {
  for (const auto& [type, sample] : samples()) {
    for (const auto& field : sample.required) {
      CAPTURE(type);
      CAPTURE(field);
      CHECK(check(type, without(sample.json, field)) == "/" + field + ": required field missing");
    }
  }
}

TEST_CASE("schema_registry: type must equal the schema's own name") {
  for (const auto& [type, sample] : samples()) {
    CAPTURE(type);
    CHECK(check(type, with(sample.json, "type", R"("other")")) == "/type: must be \"" + type + "\", got \"other\"");
  }
}

TEST_CASE("schema_registry: common fields") {
  const std::string q = samples().at("quote_update").json;
  SUBCASE("timestamp is an integer >= 0") {
    CHECK(check("quote_update", with(q, "timestamp", "-1")) == "/timestamp: must be >= 0, got -1");
    CHECK(check("quote_update", with(q, "timestamp", "1.5")) == "/timestamp: expected integer, got number");
    CHECK(check("quote_update", with(q, "timestamp", R"("2024-01-01")")) == "/timestamp: expected integer, got string");
  }
  SUBCASE("correlationId is an optional string") {
    CHECK(check("quote_update", with(q, "correlationId", R"("abc")")) == std::nullopt);
    CHECK(check("quote_update", with(q, "correlationId", "5")) == "/correlationId: expected string, got integer");
  }
  SUBCASE("extra fields are allowed") {
    CHECK(check("quote_update", with(q, "volume", "1000")) == std::nullopt);
  }
  SUBCASE("the body must be an object") {
    CHECK(check("quote_update", "[1]") == "(root): expected object, got array");
  }
}

TEST_CASE("schema_registry: quote_update") {
  const std::string q = samples().at("quote_update").json;
  CHECK(check("quote_update", with(q, "price", "0")) == "/price: must be > 0, got 0");
  CHECK(check("quote_update", with(q, "price", "-3.5")) == "/price: must be > 0, got -3.5");
  CHECK(check("quote_update", with(q, "price", "0.0001")) == std::nullopt);
  CHECK(check("quote_update", with(q, "price", R"("1")")) == "/price: expected number, got string");
  CHECK(check("quote_update", with(q, "change", "3")) == std::nullopt);
  SUBCASE("symbol pattern") {
    for (const char* ok : {R"("BRK.B")", R"("EUR:USD")", R"("btc-usd")", R"("X_1")"}) {
      CAPTURE(ok);
      CHECK(check("quote_update", with(q, "symbol", ok)) == std::nullopt);
    }
    CHECK(check("quote_update", with(q, "symbol", R"("AA PL")")) ==
          R"(/symbol: must match ^[A-Za-z0-9._:-]+$, got "AA PL")");
    CHECK(check("quote_update", with(q, "symbol", R"("")")) ==
          "/symbol: must not be empty");
    CHECK(check("quote_update", with(q, "symbol", R"("AAAAAAAAAABBBBBBBBBBCCCCCCCCCCDDD")")) ==
          "/symbol: must be at most 32 characters long");
  }
}

TEST_CASE("schema_registry: each document is judged on its own (the validators are reused)") {
  const std::string q = samples().at("quote_update").json;
  const std::string n = samples().at("notification").json;
  // A failure stopped half-way through a document leaves nothing behind for the next.
  for (int round = 0; round < 3; ++round) {
    CAPTURE(round);
    CHECK(check("quote_update", with(q, "price", R"("1")")) == "/price: expected number, got string");
    CHECK(check("quote_update", q) == std::nullopt);
    CHECK(check("notification", n) == std::nullopt);
    CHECK(check("quote_update", with(q, "price", "0")) == "/price: must be > 0, got 0");
    CHECK(check("quote_update", q) == std::nullopt);
  }
}

TEST_CASE("schema_registry: analysis_request") {
  const std::string a = samples().at("analysis_request").json;
  for (const char* t : {R"("chart")", R"("options")", R"("full")"})
    CHECK(check("analysis_request", with(a, "analysisType", t)) == std::nullopt);
  CHECK(check("analysis_request", with(a, "analysisType", R"("daily")")) ==
        R"(/analysisType: must be one of chart, options, full, got "daily")");
  CHECK(check("analysis_request", with(a, "userId", R"("")")) == "/userId: must not be empty");
}

TEST_CASE("schema_registry: analysis_complete allows the indicators") {
  const std::string c = samples().at("analysis_complete").json;
  CHECK(check("analysis_complete", with(c, "macd", R"({"line":1.2,"signal":0.9,"histogram":0.3})")) ==
        std::nullopt);
  CHECK(check("analysis_complete", with(c, "workflowId", "7")) == "/workflowId: expected string, got integer");
}

TEST_CASE("schema_registry: alert_triggered") {
  const std::string a = samples().at("alert_triggered").json;
  CHECK(check("alert_triggered", with(a, "alertId", R"("1")")) == "/alertId: expected integer, got string");
  CHECK(check("alert_triggered", with(a, "alertId", "1.5")) == "/alertId: expected integer, got number");
  CHECK(check("alert_triggered", with(a, "condition", R"("price_equals")")) ==
        R"(/condition: must be one of price_above, price_below, change_pct_above, change_pct_below, )"
        R"(portfolio_value_below, portfolio_value_above, portfolio_change_pct_below, position_pnl_pct_below, )"
        R"(quote_stale, got "price_equals")");
  CHECK(check("alert_triggered", with(a, "condition", R"("quote_stale")")) == std::nullopt);
  CHECK(check("alert_triggered", with(a, "currentValue", "null")) == "/currentValue: expected number, got null");
}

TEST_CASE("schema_registry: notification") {
  const std::string n = samples().at("notification").json;
  CHECK(check("notification", with(n, "channel", R"("sms")")) ==
        R"(/channel: must be one of discord, email, push, got "sms")");
  CHECK(check("notification", without(n, "kind")) == std::nullopt);
  CHECK(check("notification", without(n, "data")) == std::nullopt);
  CHECK(check("notification", with(n, "kind", R"("Alert!")")) ==
        R"(/kind: must match ^[a-z0-9_-]+$, got "Alert!")");
  CHECK(check("notification", with(n, "data", "[1]")) == "/data: expected object, got array");
}

TEST_CASE("schema_registry: snake_case input validates after normalise_keys") {
  auto doc = parse(
      R"({"type":"alert_triggered","timestamp":1700000000000,"user_id":"u1","alert_id":4,"symbol":"AAPL",)"
      R"("condition":"price_below","threshold":150,"current_value":149.9,"correlation_id":"c"})");
  CHECK(registry().validate("alert_triggered", doc) == "/userId: required field missing");
  eventd::normalise_keys(doc, doc.GetAllocator());
  CHECK(registry().validate("alert_triggered", doc) == std::nullopt);

  auto req = parse(R"({"type":"analysis_request","timestamp":1,"user_id":"u","symbol":"A","analysis_type":"full"})");
  eventd::normalise_keys(req, req.GetAllocator());
  CHECK(registry().validate("analysis_request", req) == std::nullopt);
}

TEST_CASE("schema_registry: monitor spec") {
  const std::string spec =
      R"({"rules":[{"alertId":1,"symbol":"AAPL","condition":"price_above","threshold":200,"cooldownSec":300}],)"
      R"("channels":["push","email"],"positions":[{"symbol":"AAPL","quantity":10}],"checkIntervalMs":60000})";
  CHECK(check("monitor", spec) == std::nullopt);
  CHECK(check("monitor", R"({"rules":[],"channels":[]})") == std::nullopt);

  SUBCASE("rules and channels are required") {
    CHECK(check("monitor", R"({"channels":["push"]})") == "/rules: required field missing");
    CHECK(check("monitor", R"({"rules":[]})") == "/channels: required field missing");
  }
  SUBCASE("rule fields") {
    CHECK(check("monitor", R"({"rules":[{"alertId":1,"symbol":"AAPL","threshold":2}],"channels":[]})") ==
          "/rules/0/condition: required field missing");
    CHECK(check("monitor",
                R"({"rules":[{"alertId":1,"symbol":"A","condition":"price_above","threshold":2,"cooldown":5}],)"
                R"("channels":[]})") == R"(/rules/0/cooldown: unknown key; did you mean "cooldownSec"?)");
    CHECK(check("monitor",
                R"({"rules":[{"alertId":1,"symbol":"A","condition":"price_above","threshold":2,"cooldownSec":-1}],)"
                R"("channels":[]})") == "/rules/0/cooldownSec: must be >= 0, got -1");
    CHECK(check("monitor",
                R"({"rules":[{"alertId":"x","symbol":"A","condition":"price_above","threshold":2}],)"
                R"("channels":[]})") == "/rules/0/alertId: expected integer, got string");
  }
  SUBCASE("channels") {
    CHECK(check("monitor", R"({"rules":[],"channels":["push","sms"]})") ==
          R"(/channels/1: must be one of discord, email, push, got "sms")");
    CHECK(check("monitor", R"({"rules":[],"channels":["push","email","push"]})") ==
          R"(/channels/2: duplicate item "push"; items must be unique)");
  }
  SUBCASE("positions and interval") {
    CHECK(check("monitor", R"({"rules":[],"channels":[],"positions":[{"symbol":"A"}]})") ==
          "/positions/0/quantity: required field missing");
    CHECK(check("monitor", R"({"rules":[],"channels":[],"checkIntervalMs":999})") ==
          "/checkIntervalMs: must be >= 1000, got 999");
    CHECK(check("monitor", R"({"rules":[],"channels":[],"checkIntervalMs":86400001})") ==
          "/checkIntervalMs: must be <= 86400000, got 86400001");
    CHECK(check("monitor", R"({"rules":[],"channels":[],"positions":[{"symbol":"A","quantity":1,"costBasis":0}]})") ==
          "/positions/0/costBasis: must be > 0, got 0");
    CHECK(check("monitor", R"({"rules":[],"channels":[],"positions":[{"symbol":"A","quantity":1,"costBase":5}]})") ==
          R"(/positions/0/costBase: unknown key; did you mean "costBasis"?)");
  }
  SUBCASE("portfolio rules: the shapes (eventctl checks which fields each condition needs)") {
    CHECK(check("monitor", R"({"rules":[{"alertId":1,"condition":"portfolio_value_below","threshold":9}],)"
                           R"("channels":[]})") == std::nullopt);
    CHECK(check("monitor", R"({"rules":[{"alertId":1,"symbol":"A","condition":"quote_stale","thresholdSec":60}],)"
                           R"("channels":[]})") == std::nullopt);
    CHECK(check("monitor", R"({"rules":[{"alertId":1,"symbol":"A","condition":"quote_stale","thresholdSec":0}],)"
                           R"("channels":[]})") == "/rules/0/thresholdSec: must be >= 1, got 0");
    CHECK(check("monitor", R"({"rules":[{"alertId":1,"symbol":"A","condition":"quote_stale","thresholdSec":1.5}],)"
                           R"("channels":[]})") == "/rules/0/thresholdSec: expected integer, got number");
  }
  SUBCASE("no unknown top-level keys") {
    CHECK(check("monitor", R"({"rules":[],"channels":[],"interval":5})") ==
          "/interval: unknown key; expected one of rules, channels, positions, checkIntervalMs");
  }
}

TEST_CASE("schema_registry: unknown schema name is reported, not crashed on") {
  CHECK(check("nope", "{}") == "no schema named \"nope\"");
}

TEST_CASE("schema_registry: no control characters in strings a pattern checks") {
  // RapidJSON's regex engine stops at NUL: "A\u0000B" matched ^[A-Za-z0-9._:-]+$.
  const std::string q = samples().at("quote_update").json;
  CHECK(check("quote_update", with(q, "symbol", R"("A\u0000B")")) ==
        R"(/symbol: must not contain control characters, got "A\u0000B")");
  for (const char* bad : {R"("\u0000")", R"("AAPL\u0000")", R"("A\u001fB")", R"("A\u007fB")", R"("\n")"}) {
    CAPTURE(bad);
    const auto problem = check("quote_update", with(q, "symbol", bad));
    REQUIRE(problem);
    CHECK(problem->starts_with("/symbol: must not contain control characters"));
  }
  const auto c1 = check("quote_update", with(q, "symbol", R"("A\u0080B")"));  // not ASCII: the pattern's
  REQUIRE(c1);
  CHECK(c1->starts_with("/symbol: must match "));
  // Strings without a pattern may hold them (JSON allows them, escaped).
  CHECK(check("quote_update", with(q, "correlationId", R"("a\u0000b\n")")) == std::nullopt);
  SUBCASE("every message type with a pattern") {
    CHECK(check("analysis_request", with(samples().at("analysis_request").json, "symbol", R"("M\u0000")")) ==
          R"(/symbol: must not contain control characters, got "M\u0000")");
    CHECK(check("alert_triggered", with(samples().at("alert_triggered").json, "symbol", R"("A\u0000")")) ==
          R"(/symbol: must not contain control characters, got "A\u0000")");
    CHECK(check("analysis_complete", with(samples().at("analysis_complete").json, "symbol", R"("A\u0000")")) ==
          R"(/symbol: must not contain control characters, got "A\u0000")");
    CHECK(check("notification", with(samples().at("notification").json, "kind", R"("alert\u0000x")")) ==
          R"(/kind: must not contain control characters, got "alert\u0000x")");
  }
  SUBCASE("the monitor spec, inside arrays of objects") {
    CHECK(check("monitor", R"({"rules":[{"alertId":1,"symbol":"OK","condition":"price_above","threshold":1},)"
                           R"({"alertId":2,"symbol":"A\u0000B","condition":"price_above","threshold":1}],"channels":[]})") ==
          R"(/rules/1/symbol: must not contain control characters, got "A\u0000B")");
    CHECK(check("monitor", R"({"rules":[],"channels":[],"positions":[{"symbol":"X\u0001","quantity":1}]})") ==
          R"(/positions/0/symbol: must not contain control characters, got "X\u0001")");
  }
  SUBCASE("the config") {
    CHECK(check("config", R"({"amqp":{"managementUrl":"http://h\u0000x"}})") ==
          R"(/amqp/managementUrl: must not contain control characters, got "http://h\u0000x")");
  }
}

namespace {

// RapidJSON's own verdict on `doc` against embedded schema `name` (the registry's
// quick check left out).
bool rapidjson_accepts(const std::string& name, const rapidjson::Value& doc) {
  static std::map<std::string, std::unique_ptr<rapidjson::SchemaDocument>> compiled;
  auto& schema = compiled[name];
  if (!schema) schema = std::make_unique<rapidjson::SchemaDocument>(parse(std::string(eventd::embedded_schema(name))));
  rapidjson::SchemaValidator validator(*schema);
  return doc.Accept(validator) && validator.IsValid();
}

// Values at the edges of what the schemas check: types, number kinds and bounds,
// lengths in code points, pattern characters, enum members.
const std::vector<std::string>& edge_values() {
  static const std::vector<std::string> v = [] {
    std::vector<std::string> out = {
        "null", "true", "false", "0", "-0", "0.0", "-0.0", "1", "-1", "0.5", "-0.5", "1.0", "1e-300", "1e300",
        "-1e300", "5e-324", "2147483647", "2147483648", "-2147483649", "4294967296", "9007199254740991",
        "9007199254740992", "9223372036854775807", "9223372036854775808", "18446744073709551615",
        "18446744073709551616", "-9223372036854775808", "-9223372036854775809", "1700000000000", "255", "256",
        "3600", "86401", R"("")", R"("A")", R"("AAPL")", R"("BRK.B")", R"("a b")", R"("a-b")", R"("a:b")",
        R"("a_b")", R"("a/b")", R"("\u00e9")", R"("\u00c9\u00c9")", R"("AAPL\n")", R"("quote_update")",
        R"("alert_triggered")", R"("chart")", R"("options")", R"("price_above")", R"("hold")", R"("discord")",
        R"("alert")", R"("u1")", R"("http://x")", R"("https://x")", R"("ftp://x")", "[]", "[1]", R"([1,"a"])",
        "[390,395]", "{}", R"({"a":1})", R"({"20":401.2})", R"({"alertId":1})"};
    for (int n : {31, 32, 33, 64, 65, 128, 129, 256, 257}) {
      out.push_back("\"" + std::string(n, 'A') + "\"");
      std::string accented;
      for (int i = 0; i < n; ++i) accented += "\\u00e9";
      out.push_back("\"" + accented + "\"");
    }
    return out;
  }();
  return v;
}

}  // namespace

TEST_CASE("quick schema check: it serves every message type, and accepts only what RapidJSON accepts") {
  std::mt19937 rng(20261201);
  long compared = 0, agreed = 0, quick_accepted = 0;
  for (const auto& [type, sample] : samples()) {
    CAPTURE(type);
    REQUIRE(registry().has_quick_check(type));
    const auto quick = eventd::QuickSchema::compile(parse(std::string(eventd::embedded_schema(type))));
    REQUIRE(quick);
    auto compare = [&](const std::string& json) {
      const auto doc = parse(json);
      const bool q = quick->accepts(doc), r = rapidjson_accepts(type, doc);
      if (q && !r) FAIL_CHECK("the quick check accepts what RapidJSON refuses: " << json);
      ++compared;
      agreed += q == r;
      quick_accepted += q;
    };
    compare(sample.json);
    std::vector<std::string> fields;
    const auto sample_doc = parse(sample.json);
    for (const auto& m : sample_doc.GetObject()) fields.emplace_back(m.name.GetString());
    fields.insert(fields.end(), {"correlationId", "zzz", "userId", "data", "kind"});
    for (const auto& field : fields) {
      compare(without(sample.json, field));
      for (const auto& value : edge_values()) compare(with(sample.json, field, value));
    }
    for (int i = 0; i < 3000; ++i) {  // several changes at once
      std::string json = sample.json;
      for (int k = 1 + static_cast<int>(rng() % 3); k > 0; --k) {
        const auto& field = fields[rng() % fields.size()];
        json = rng() % 5 == 0 ? without(json, field) : with(json, field, edge_values()[rng() % edge_values().size()]);
      }
      compare(json);
    }
  }
  // Every schema keyword these use is implemented: the two decide alike, not just safely.
  CHECK(agreed == compared);
  CHECK(quick_accepted > 0);
}

TEST_CASE("quick schema check: schemas with keywords it does not implement are left to RapidJSON") {
  for (const char* schema :
       {R"({"type":"array","uniqueItems":true})", R"({"anyOf":[{"type":"string"}]})", R"({"type":["string","null"]})",
        R"({"type":"string","pattern":"^https?://"})", R"({"enum":[1,2]})", R"({"items":[{"type":"string"}]})",
        R"({"properties":{"a":{"$ref":"#"}}})", R"({"multipleOf":2})", R"({"minLength":-1})"}) {
    CAPTURE(schema);
    CHECK(eventd::QuickSchema::compile(parse(schema)) == nullptr);
  }
  CHECK(eventd::QuickSchema::compile(parse(R"({"type":"string","pattern":"^[a-z0-9_-]+$","maxLength":8})")));
}
