// Topology description, header capping, logging, backoff, metrics.
#include <doctest/doctest.h>

#include <algorithm>

#include <rapidjson/document.h>

#include "eventd/amqp_table.hpp"
#include "eventd/backoff.hpp"
#include "eventd/config.hpp"
#include "eventd/dispatcher.hpp"
#include "eventd/handlers/quote_update.hpp"
#include "eventd/log.hpp"
#include "eventd/metrics.hpp"
#include "eventd/topology.hpp"

using namespace eventd;

namespace {

Config default_config() { return parse_config("{}", "test"); }

const QueueArgument* arg(const QueueSpec& q, const std::string& key) {
  for (const auto& a : q.arguments) {
    if (a.key == key) return &a;
  }
  return nullptr;
}

}  // namespace

TEST_CASE("topology: default queues, their dead-letter and retry queues") {
  Topology t = build_topology(default_config());
  CHECK(t.exchanges.size() == 2);
  CHECK(t.consumed == std::vector<std::string>{"eventd.quotes", "eventd.analysis", "eventd.analysis-results",
                                                "eventd.alerts", "eventd.notify.discord", "eventd.notify.email",
                                                "eventd.notify.push"});
  SUBCASE("work queues are quorum with a delivery limit and dead-letter to Q.dlq") {
    const QueueSpec* q = t.find_queue("eventd.alerts");
    REQUIRE(q != nullptr);
    CHECK(std::get<std::string>(arg(*q, "x-queue-type")->value) == "quorum");
    CHECK(std::get<int64_t>(arg(*q, "x-delivery-limit")->value) == 20);
    CHECK(std::get<std::string>(arg(*q, "x-dead-letter-exchange")->value).empty());
    CHECK(std::get<std::string>(arg(*q, "x-dead-letter-routing-key")->value) == "eventd.alerts.dlq");
  }
  SUBCASE("each work queue has a dlq and one TTL queue per distinct delay, dead-lettering back") {
    REQUIRE(t.find_queue("eventd.alerts.dlq") != nullptr);
    for (int ms : {1000, 2000, 4000, 8000}) {
      const QueueSpec* r = t.find_queue("eventd.alerts.retry." + std::to_string(ms) + "ms");
      REQUIRE(r != nullptr);
      CHECK(std::get<int64_t>(arg(*r, "x-message-ttl")->value) == ms);
      CHECK(std::get<std::string>(arg(*r, "x-dead-letter-routing-key")->value) == "eventd.alerts");
      CHECK(std::get<std::string>(arg(*r, "x-queue-type")->value) == "quorum");  // as their work queue
    }
    CHECK(t.find_queue("eventd.alerts.retry.16000ms") == nullptr);
  }
  SUBCASE("bindings follow DESIGN.md") {
    auto has = [&](const std::string& q, const std::string& ex, const std::string& key) {
      return std::any_of(t.bindings.begin(), t.bindings.end(), [&](const BindingSpec& b) {
        return b.queue == q && b.exchange == ex && b.routing_key == key;
      });
    };
    CHECK(has("eventd.quotes", "market.quotes", ""));
    CHECK(has("eventd.analysis", "events", "analysis.request.#"));
    CHECK(has("eventd.analysis-results", "events", "analysis.complete.#"));
    CHECK(has("eventd.alerts", "events", "alert.triggered.#"));
    CHECK(has("eventd.notify.push", "events", "notification.push.#"));
  }
}

TEST_CASE("topology: a classic queue gets no delivery limit") {
  Config c = parse_config(R"({"topology":{"queues":[{"name":"q1","exchange":"events","bindingKey":"a.#","type":"classic"}]}})",
                          "test");
  Topology t = build_topology(c);
  const QueueSpec* q = t.find_queue("q1");
  REQUIRE(q != nullptr);
  CHECK(std::get<std::string>(arg(*q, "x-queue-type")->value) == "classic");
  CHECK(arg(*q, "x-delivery-limit") == nullptr);
}

TEST_CASE("topology: quorumInitialGroupSize on quorum queues only") {
  SUBCASE("absent: no argument, the broker's default") {
    Topology t = build_topology(default_config());
    for (const auto& q : t.queues) CHECK(arg(q, kQuorumInitialGroupSize) == nullptr);
  }
  SUBCASE("set") {
    Config c = parse_config(R"({"topology":{"quorumInitialGroupSize":3,"queues":[
        {"name":"q1","exchange":"events","bindingKey":"a.#"},
        {"name":"q2","exchange":"events","bindingKey":"b.#","type":"classic"}]}})", "test");
    Topology t = build_topology(c);
    for (const char* name : {"q1", "q1.dlq", "q1.retry.1000ms"}) {
      const QueueSpec* q = t.find_queue(name);
      REQUIRE(q != nullptr);
      REQUIRE(arg(*q, kQuorumInitialGroupSize) != nullptr);
      CHECK(std::get<int64_t>(arg(*q, kQuorumInitialGroupSize)->value) == 3);
    }
    for (const char* name : {"q2", "q2.dlq", "q2.retry.1000ms"}) {
      const QueueSpec* q = t.find_queue(name);
      REQUIRE(q != nullptr);
      CHECK(arg(*q, kQuorumInitialGroupSize) == nullptr);
    }
  }
}

TEST_CASE("topology: retry queues have their work queue's type") {
  Config c = parse_config(R"({"topology":{"quorumInitialGroupSize":5,"queues":[
      {"name":"q1","exchange":"events","bindingKey":"a.#"},
      {"name":"q2","exchange":"events","bindingKey":"b.#","type":"classic"}]}})", "test");
  Topology t = build_topology(c);
  const QueueSpec* quorum = t.find_queue("q1.retry.1000ms");
  const QueueSpec* classic = t.find_queue("q2.retry.1000ms");
  REQUIRE(quorum != nullptr);
  REQUIRE(classic != nullptr);
  CHECK(std::get<std::string>(arg(*quorum, kQueueType)->value) == "quorum");
  CHECK(std::get<int64_t>(arg(*quorum, kQuorumInitialGroupSize)->value) == 5);
  CHECK(arg(*quorum, "x-delivery-limit") == nullptr);  // nobody consumes it
  CHECK(std::get<std::string>(arg(*classic, kQueueType)->value) == "classic");
  CHECK(arg(*classic, kQuorumInitialGroupSize) == nullptr);
}

TEST_CASE("topology: reading RabbitMQ's refusal of a redeclare") {
  const std::string prefix = "cannot declare queue 'eventd.quotes': channel closed by broker: 406 PRECONDITION_FAILED - "
                             "inequivalent arg 'x-quorum-initial-group-size' for queue 'eventd.quotes' in vhost '/': ";
  SUBCASE("the queue has none") {
    auto r = refused_argument(prefix + "received the value '3' of type 'long' but current is none");
    REQUIRE(r);
    CHECK(r->key == kQuorumInitialGroupSize);
    CHECK(r->existing == "none");
  }
  SUBCASE("the queue has another value") {
    auto r = refused_argument(prefix + "received '2' but current is '3'");
    REQUIRE(r);
    CHECK(r->existing == "3");
    r = refused_argument(prefix + "received none but current is the value '5' of type 'signedint'");
    REQUIRE(r);
    CHECK(r->existing == "5");
  }
  SUBCASE("another argument") {
    auto r = refused_argument("406 PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'q.retry.1000ms' "
                              "in vhost '/': received the value 'quorum' of type 'longstr' but current is the value "
                              "'classic' of type 'longstr'");
    REQUIRE(r);
    CHECK(r->key == "x-queue-type");
    CHECK(r->existing == "classic");
  }
  SUBCASE("not such a refusal") {
    CHECK_FALSE(refused_argument("cannot declare queue 'q': a socket error occurred"));
    CHECK_FALSE(refused_argument("404 NOT_FOUND - home node 'n@h' of durable queue 'q' in vhost '/' is down"));
    CHECK_FALSE(refused_argument(prefix + "received '2'"));
    CHECK_FALSE(refused_argument(prefix + "received '2' but current is 'unterminated"));
  }
}

TEST_CASE("topology: which differences of an existing queue eventd keeps") {
  Topology t = build_topology(parse_config(R"({"topology":{"quorumInitialGroupSize":3}})", "test"));
  const QueueSpec& work = *t.find_queue("eventd.quotes");
  const QueueSpec& retry = *t.find_queue("eventd.quotes.retry.1000ms");
  SUBCASE("the initial group size, of any queue") {
    CHECK(keepable(work, kQuorumInitialGroupSize, "none"));
    CHECK(keepable(work, kQuorumInitialGroupSize, "5"));
    CHECK(keepable(retry, kQuorumInitialGroupSize, "1"));
    CHECK_FALSE(keepable(work, kQuorumInitialGroupSize, "0"));
    CHECK_FALSE(keepable(work, kQuorumInitialGroupSize, "three"));
  }
  SUBCASE("a classic retry queue, but no other type difference") {
    CHECK(keepable(retry, kQueueType, "classic"));
    CHECK_FALSE(keepable(work, kQueueType, "classic"));
    CHECK_FALSE(keepable(*t.find_queue("eventd.quotes.dlq"), kQueueType, "classic"));
    CHECK_FALSE(keepable(retry, kQueueType, "stream"));
  }
  SUBCASE("anything else is a real difference") {
    CHECK_FALSE(keepable(work, "x-delivery-limit", "5"));
    CHECK_FALSE(keepable(retry, "x-message-ttl", "500"));
  }
  SUBCASE("described one line per kind, with what to do") {
    const auto lines = describe({{"eventd.quotes", kQuorumInitialGroupSize, "none", "3"},
                                 {"eventd.quotes.retry.1000ms", kQueueType, "classic", "quorum"},
                                 {"eventd.quotes.dlq", kQuorumInitialGroupSize, "5", "3"}});
    REQUIRE(lines.size() == 2);
    CHECK(lines[0].starts_with("2 existing queue(s) keep the x-quorum-initial-group-size they were created with "
                               "(configured: 3): eventd.quotes (none), eventd.quotes.dlq (5); "));
    CHECK(lines[0].find("rabbitmq-queues add_member") != std::string::npos);
    CHECK(lines[1].starts_with("1 retry queue(s) made classic by an older eventd are kept: eventd.quotes.retry.1000ms;"));
    CHECK(lines[1].find("delete_queue --if-empty") != std::string::npos);
    CHECK(describe({}).empty());
  }
}

TEST_CASE("dispatcher: eventd's own headers, the publish tag included, are recognised") {
  CHECK(is_eventd_header("x-retry-count"));
  CHECK(is_eventd_header("x-error-code"));
  CHECK(is_eventd_header(AmqpConnection::kPublishTag));
  CHECK_FALSE(is_eventd_header("x-custom"));
  CHECK_FALSE(is_eventd_header("x-death"));
}

TEST_CASE("dispatcher: header values are capped without splitting UTF-8") {
  CHECK(cap_utf8("short", 1024) == "short");
  std::string long_ascii(2000, 'a');
  CHECK(cap_utf8(long_ascii, 1024).size() == 1024);
  std::string euros;
  for (int i = 0; i < 500; ++i) euros += "\xE2\x82\xAC";  // 3-byte sequences
  std::string capped = cap_utf8(euros, 1024);
  CHECK(capped.size() == 1023);  // 341 whole sequences
  CHECK(capped.size() % 3 == 0);
}

TEST_CASE("log: one JSON object a line with escaped fields") {
  std::string line = log::format(log::Level::Warn, "dead-lettering", {{"queue", "q\"1"}, {"n", 3}, {"ok", true}},
                                 1795446198657);
  rapidjson::Document d;
  d.Parse(line.c_str());
  REQUIRE_FALSE(d.HasParseError());
  CHECK(std::string(d["ts"].GetString()) == "2026-11-23T15:03:18.657Z");
  CHECK(std::string(d["level"].GetString()) == "warn");
  CHECK(std::string(d["msg"].GetString()) == "dead-lettering");
  CHECK(std::string(d["queue"].GetString()) == "q\"1");
  CHECK(d["n"].GetInt() == 3);
  CHECK(d["ok"].GetBool());
  CHECK(line.find('\n') == std::string::npos);
  SUBCASE("unknown (empty) text fields are left out") {
    std::string l = log::format(log::Level::Info, "m", {{"message_id", ""}, {"queue", "q"}}, 0);
    CHECK(l.find("message_id") == std::string::npos);
    CHECK(l.find("\"queue\":\"q\"") != std::string::npos);
  }
}

TEST_CASE("log: levels") {
  CHECK(log::set_level("warn"));
  CHECK_FALSE(log::enabled(log::Level::Info));
  CHECK(log::enabled(log::Level::Error));
  CHECK_FALSE(log::set_level("loud"));
  CHECK(log::set_level("info"));
  CHECK(log::enabled(log::Level::Info));
}

TEST_CASE("backoff: grows, caps, jitters within 20 %, resets") {
  Backoff b(100, 1000, 42);
  uint32_t first = b.next();
  CHECK(first >= 80);
  CHECK(first <= 120);
  uint32_t second = b.next();
  CHECK(second >= 160);
  CHECK(second <= 240);
  for (int i = 0; i < 20; ++i) {
    uint32_t d = b.next();
    CHECK(d <= 1200);
  }
  CHECK(b.next() >= 800);
  b.reset();
  CHECK(b.next() <= 120);
}

TEST_CASE("amqp_table: builder and integer headers") {
  FieldTable t;
  t.add("x-error-code", "PARSE_ERROR").add_int("x-retry-count", 3).add("x-count-text", "7");
  amqp_table_t table = t.table();
  CHECK(table.num_entries == 3);
  CHECK(t.contains("x-retry-count"));
  int64_t n = 0;
  CHECK(table_get_int(&table, "x-retry-count", n));
  CHECK(n == 3);
  CHECK(table_get_int(&table, "x-count-text", n));
  CHECK(n == 7);
  CHECK_FALSE(table_get_int(&table, "x-error-code", n));
  CHECK_FALSE(table_get_int(&table, "missing", n));
  std::string s;
  CHECK(table_get_string(&table, "x-error-code", s));
  CHECK(s == "PARSE_ERROR");
  CHECK_FALSE(table_get_int(nullptr, "x", n));
}

TEST_CASE("metrics: Prometheus text with labels, histogram buckets cumulative") {
  Metrics m;
  m.counters("eventd.quotes", "quote_update").consumed = 5;
  m.counters("eventd.quotes", "quote_update").acked = 4;
  m.handler_latency("quote_update").observe(0.0004);
  m.handler_latency("quote_update").observe(0.003);
  m.redis_up = true;
  std::string text = m.render();
  CHECK(text.find("eventd_messages_consumed_total{queue=\"eventd.quotes\",type=\"quote_update\"} 5\n") !=
        std::string::npos);
  CHECK(text.find("eventd_messages_acked_total{queue=\"eventd.quotes\",type=\"quote_update\"} 4\n") !=
        std::string::npos);
  CHECK(text.find("eventd_handler_duration_seconds_bucket{type=\"quote_update\",le=\"0.0005\"} 1\n") !=
        std::string::npos);
  CHECK(text.find("eventd_handler_duration_seconds_bucket{type=\"quote_update\",le=\"0.005\"} 2\n") !=
        std::string::npos);
  CHECK(text.find("eventd_handler_duration_seconds_count{type=\"quote_update\"} 2\n") != std::string::npos);
  CHECK(text.find("eventd_redis_up 1\n") != std::string::npos);
  CHECK(text.find("eventd_amqp_up 0\n") != std::string::npos);
}

TEST_CASE("metrics: deferrals apart from retries; one series per breaker state, 1 for the current one") {
  Metrics m;
  m.counters("eventd.notify.discord", "notification").deferred = 3;
  m.sink_circuits = {{"discord", CircuitState::Open}, {"email", CircuitState::Closed}};
  std::string text = m.render();
  CHECK(text.find("eventd_messages_deferred_total{queue=\"eventd.notify.discord\",type=\"notification\"} 3\n") !=
        std::string::npos);
  CHECK(text.find("eventd_messages_retried_total{queue=\"eventd.notify.discord\",type=\"notification\"} 0\n") !=
        std::string::npos);
  CHECK(text.find("eventd_sink_circuit_state{channel=\"discord\",state=\"open\"} 1\n") != std::string::npos);
  CHECK(text.find("eventd_sink_circuit_state{channel=\"discord\",state=\"closed\"} 0\n") != std::string::npos);
  CHECK(text.find("eventd_sink_circuit_state{channel=\"discord\",state=\"half_open\"} 0\n") != std::string::npos);
  CHECK(text.find("eventd_sink_circuit_state{channel=\"email\",state=\"closed\"} 1\n") != std::string::npos);
  CHECK(text.find("# TYPE eventd_sink_circuit_state gauge\n") != std::string::npos);
}

TEST_CASE("metrics: one series per configured broker node, 1 for the connected one") {
  Metrics m;
  CHECK(m.render().find("eventd_amqp_connected_node{") == std::string::npos);
  m.amqp_nodes = {{"10.0.0.1:5672", false}, {"10.0.0.2:5672", true}, {"[::1]:5672", false}};
  std::string text = m.render();
  CHECK(text.find("# TYPE eventd_amqp_connected_node gauge\n") != std::string::npos);
  CHECK(text.find("eventd_amqp_connected_node{node=\"10.0.0.1:5672\"} 0\n") != std::string::npos);
  CHECK(text.find("eventd_amqp_connected_node{node=\"10.0.0.2:5672\"} 1\n") != std::string::npos);
  CHECK(text.find("eventd_amqp_connected_node{node=\"[::1]:5672\"} 0\n") != std::string::npos);
}
