// Tests for src/routing.cpp.
#include <doctest/doctest.h>

#include <string>

#include <rapidjson/document.h>

#include "eventd/routing.hpp"

namespace {

rapidjson::Document parse(const char* json) {
  rapidjson::Document doc;
  doc.Parse(json);
  REQUIRE_FALSE(doc.HasParseError());
  return doc;
}

std::optional<eventd::Route> route(const std::string& type, const char* body,
                                   const eventd::TopologyConfig& topology = {}) {
  const auto doc = parse(body);
  return eventd::route_for(topology, type, doc);
}

}  // namespace

TEST_CASE("routing: every message type with the default topology") {
  SUBCASE("quote_update goes to the quotes exchange") {
    const auto r = route("quote_update", R"({"type":"quote_update","symbol":"AAPL","price":1,"change":0})");
    REQUIRE(r);
    CHECK(r->exchange == "market.quotes");
    CHECK(r->routing_key == "AAPL");
  }
  SUBCASE("analysis_request") {
    const auto r = route("analysis_request", R"({"userId":"u1","symbol":"BRK.B","analysisType":"full"})");
    REQUIRE(r);
    CHECK(r->exchange == "events");
    CHECK(r->routing_key == "analysis.request.BRK.B");
  }
  SUBCASE("analysis_complete") {
    const auto r = route("analysis_complete", R"({"userId":"u1","symbol":"AAPL"})");
    REQUIRE(r);
    CHECK(r->exchange == "events");
    CHECK(r->routing_key == "analysis.complete.u1");
  }
  SUBCASE("alert_triggered") {
    const auto r = route("alert_triggered", R"({"userId":"u7","alertId":3})");
    REQUIRE(r);
    CHECK(r->exchange == "events");
    CHECK(r->routing_key == "alert.triggered.u7");
  }
  SUBCASE("notification with kind") {
    const auto r = route("notification", R"({"userId":"u1","channel":"push","kind":"alert"})");
    REQUIRE(r);
    CHECK(r->exchange == "events");
    CHECK(r->routing_key == "notification.push.alert");
  }
  SUBCASE("notification without kind is general") {
    const auto r = route("notification", R"({"userId":"u1","channel":"email"})");
    REQUIRE(r);
    CHECK(r->routing_key == "notification.email.general");
  }
}

TEST_CASE("routing: configured exchange names are used") {
  eventd::TopologyConfig topo;
  topo.quotes_exchange.name = "q.x";
  topo.events_exchange.name = "e.x";
  CHECK(route("quote_update", R"({"symbol":"AAPL"})", topo)->exchange == "q.x");
  CHECK(route("alert_triggered", R"({"userId":"u"})", topo)->exchange == "e.x");
}

TEST_CASE("routing: unknown type or missing key field gives nullopt") {
  CHECK_FALSE(route("bogus", R"({"symbol":"AAPL"})"));
  CHECK_FALSE(route("quote_update", R"({"price":1})"));
  CHECK_FALSE(route("quote_update", R"({"symbol":""})"));
  CHECK_FALSE(route("analysis_request", R"({"userId":"u"})"));
  CHECK_FALSE(route("analysis_complete", R"({"userId":5})"));
  CHECK_FALSE(route("alert_triggered", R"({"symbol":"AAPL"})"));
  CHECK_FALSE(route("notification", R"({"userId":"u"})"));
  CHECK_FALSE(route("notification", R"({"channel":"push","kind":7})"));
  CHECK_FALSE(route("quote_update", R"([1,2])"));
}

TEST_CASE("routing: a routing key longer than 255 bytes is refused") {
  const std::string user(250, 'u');
  const std::string body = R"({"userId":")" + user + R"("})";
  CHECK_FALSE(route("alert_triggered", body.c_str()));
  const std::string ok(255 - std::string("alert.triggered.").size(), 'u');
  const std::string body_ok = R"({"userId":")" + ok + R"("})";
  CHECK(route("alert_triggered", body_ok.c_str()));
}
