// Tests for src/config.cpp and the repository's eventd.jsonc.
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include "eventd/config.hpp"
#include "source_root.hpp"

namespace {

namespace fs = std::filesystem;
using eventd::Config;
using eventd::ConfigError;
using eventd::QueueType;

using eventd::test::source_root;

// A fake environment for the URL overrides.
std::map<std::string, std::string> g_env;
const char* fake_getenv(const char* name) {
  const auto it = g_env.find(name);
  return it == g_env.end() ? nullptr : it->second.c_str();
}

Config parse(const std::string& text) { return eventd::parse_config(text, "test.jsonc", &fake_getenv); }

// The ConfigError text for `text`, or "" if it parsed.
std::string error_of(const std::string& text) {
  try {
    parse(text);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

std::string amqp_error(const std::string& url) {
  try {
    eventd::parse_amqp_url(url);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

std::string redis_error(const std::string& url) {
  try {
    eventd::parse_redis_url(url);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

struct EnvGuard {
  EnvGuard() { g_env.clear(); }
  ~EnvGuard() { g_env.clear(); }
};

bool same_queues(const std::vector<eventd::QueueConfig>& a, const std::vector<eventd::QueueConfig>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i].name != b[i].name || a[i].exchange != b[i].exchange || a[i].binding_key != b[i].binding_key ||
        a[i].type != b[i].type)
      return false;
  return true;
}

}  // namespace

TEST_CASE("config: empty object gives the documented defaults") {
  EnvGuard env;
  const Config c = parse("{}");
  CHECK(c.source == "test.jsonc");
  CHECK(c.amqp.url == "amqp://guest:guest@127.0.0.1:5672/%2f");
  CHECK(c.amqp.endpoint().host == "127.0.0.1");
  CHECK(c.amqp.endpoint().port == 5672);
  CHECK(c.amqp.endpoint().user == "guest");
  CHECK(c.amqp.endpoint().password == "guest");
  CHECK(c.amqp.endpoint().vhost == "/");
  CHECK(c.amqp.prefetch == 500);
  CHECK(c.amqp.heartbeat_sec == 30);
  CHECK(c.amqp.connect_timeout_ms == 5000);
  CHECK(c.redis.url == "redis://127.0.0.1:6379/0");
  CHECK(c.redis.endpoint.nodes.at(0).host == "127.0.0.1");
  CHECK(c.redis.endpoint.nodes.at(0).port == 6379);
  CHECK(c.redis.endpoint.db == 0);
  CHECK(c.redis.endpoint.password.empty());
  CHECK(c.redis.connect_timeout_ms == 5000);
  CHECK(c.topology.quotes_exchange.name == "market.quotes");
  CHECK(c.topology.quotes_exchange.type == "fanout");
  CHECK(c.topology.events_exchange.name == "events");
  CHECK(c.topology.events_exchange.type == "topic");
  CHECK(c.topology.delivery_limit == 20);
  CHECK(same_queues(c.topology.queues, eventd::default_queues(c.topology)));
  CHECK(c.retry.initial_delay_ms == 1000);
  CHECK(c.retry.max_delay_ms == 60000);
  CHECK(c.retry.multiplier == 2);
  CHECK(c.retry.max_attempts == 5);
  CHECK(c.retry.max_age_ms == 3600000);
  CHECK(c.idempotency_ttl_sec == 86400);
  CHECK(c.quote_history_length == 1000);
  CHECK(c.portfolio.poll_ms == 250);
  CHECK(c.portfolio.lease_ms == 10000);
  CHECK(c.portfolio.claim_batch == 100);
  CHECK(c.http.enabled);
  CHECK(c.http.host == "127.0.0.1");
  CHECK(c.http.port == 9464);
  CHECK(c.log_level == "info");
  CHECK(c.shutdown_drain_ms == 10000);
  CHECK(c.limits.max_message_bytes == 1048576);
}

TEST_CASE("config: default queues match DESIGN.md") {
  const auto q = eventd::default_queues(eventd::TopologyConfig{});
  REQUIRE(q.size() == 7);
  const std::vector<std::vector<std::string>> expected{
      {"eventd.quotes", "market.quotes", ""},
      {"eventd.analysis", "events", "analysis.request.#"},
      {"eventd.analysis-results", "events", "analysis.complete.#"},
      {"eventd.alerts", "events", "alert.triggered.#"},
      {"eventd.notify.discord", "events", "notification.discord.#"},
      {"eventd.notify.email", "events", "notification.email.#"},
      {"eventd.notify.push", "events", "notification.push.#"},
  };
  for (std::size_t i = 0; i < q.size(); ++i) {
    CAPTURE(i);
    CHECK(q[i].name == expected[i][0]);
    CHECK(q[i].exchange == expected[i][1]);
    CHECK(q[i].binding_key == expected[i][2]);
    CHECK(q[i].type == QueueType::Quorum);
  }

  SUBCASE("renamed exchanges are followed") {
    eventd::TopologyConfig t;
    t.quotes_exchange = {"prices", "topic"};
    t.events_exchange = {"bus", "topic"};
    const auto r = eventd::default_queues(t);
    CHECK(r[0].exchange == "prices");
    CHECK(r[0].binding_key == "#");  // a topic quotes exchange needs a wildcard
    CHECK(r[1].exchange == "bus");
  }
}

TEST_CASE("config: the repository's eventd.jsonc parses and spells out the defaults") {
  EnvGuard env;
  const fs::path root = source_root();
  REQUIRE_MESSAGE(!root.empty(), "cannot locate the source tree from " << __FILE__);
  const std::string path = (root / "eventd.jsonc").string();

  const Config file = eventd::parse_config(
      [&] {
        std::ifstream in(path);
        std::stringstream s;
        s << in.rdbuf();
        return s.str();
      }(),
      path, &fake_getenv);
  const Config defaults = parse("{}");
  CHECK(file.amqp.url == defaults.amqp.url);
  CHECK(file.amqp.prefetch == defaults.amqp.prefetch);
  CHECK(file.amqp.heartbeat_sec == defaults.amqp.heartbeat_sec);
  CHECK(file.amqp.connect_timeout_ms == defaults.amqp.connect_timeout_ms);
  CHECK(file.redis.url == defaults.redis.url);
  CHECK(file.redis.connect_timeout_ms == defaults.redis.connect_timeout_ms);
  CHECK(file.topology.quotes_exchange.name == defaults.topology.quotes_exchange.name);
  CHECK(file.topology.quotes_exchange.type == defaults.topology.quotes_exchange.type);
  CHECK(file.topology.events_exchange.name == defaults.topology.events_exchange.name);
  CHECK(file.topology.events_exchange.type == defaults.topology.events_exchange.type);
  CHECK(file.topology.delivery_limit == defaults.topology.delivery_limit);
  CHECK(same_queues(file.topology.queues, defaults.topology.queues));
  CHECK(file.retry.initial_delay_ms == defaults.retry.initial_delay_ms);
  CHECK(file.retry.max_delay_ms == defaults.retry.max_delay_ms);
  CHECK(file.retry.multiplier == defaults.retry.multiplier);
  CHECK(file.retry.max_attempts == defaults.retry.max_attempts);
  CHECK(file.retry.max_age_ms == defaults.retry.max_age_ms);
  CHECK(file.idempotency_ttl_sec == defaults.idempotency_ttl_sec);
  CHECK(file.quote_history_length == defaults.quote_history_length);
  CHECK(file.portfolio.poll_ms == defaults.portfolio.poll_ms);
  CHECK(file.portfolio.lease_ms == defaults.portfolio.lease_ms);
  CHECK(file.portfolio.claim_batch == defaults.portfolio.claim_batch);
  CHECK(file.http.enabled == defaults.http.enabled);
  CHECK(file.http.host == defaults.http.host);
  CHECK(file.http.port == defaults.http.port);
  CHECK(file.log_level == defaults.log_level);
  CHECK(file.shutdown_drain_ms == defaults.shutdown_drain_ms);
  CHECK(file.limits.max_message_bytes == defaults.limits.max_message_bytes);

  SUBCASE("load_config reads it from disk") {
    const Config loaded = eventd::load_config(path);
    CHECK(loaded.source == path);
    CHECK(same_queues(loaded.topology.queues, defaults.topology.queues));
  }
}

TEST_CASE("config: comments and trailing commas are accepted") {
  EnvGuard env;
  const Config c = parse(R"(
    // line comment
    {
      /* block
         comment */
      "amqp": { "prefetch": 10, },  // trailing comma
      "log": { "level": "debug" },
    }
  )");
  CHECK(c.amqp.prefetch == 10);
  CHECK(c.log_level == "debug");
}

TEST_CASE("config: values are read") {
  EnvGuard env;
  const Config c = parse(R"({
    "amqp": {"url": "amqp://app:s3cret@rabbit:5673/prod", "prefetch": 50, "heartbeatSec": 0, "connectTimeoutMs": 100},
    "redis": {"url": "redis://:pw@cache:6380/3", "connectTimeoutMs": 200},
    "topology": {
      "exchanges": {"quotes": {"name": "q", "type": "topic"}, "events": {"name": "e", "type": "direct"}},
      "queues": [{"name": "a", "exchange": "q", "bindingKey": "#"}, {"name": "b", "exchange": "e", "type": "classic"}],
      "deliveryLimit": 7
    },
    "retry": {"initialDelayMs": 10, "maxDelayMs": 20, "multiplier": 3, "maxAttempts": 1, "maxAgeMs": 5000000000},
    "idempotency": {"ttlSec": 60},
    "quotes": {"historyLength": 50},
    "http": {"enabled": false, "listen": "[::1]:8080"},
    "log": {"level": "warn"},
    "shutdown": {"drainTimeoutMs": 0}
  })");
  CHECK(c.amqp.endpoint().host == "rabbit");
  CHECK(c.amqp.endpoint().port == 5673);
  CHECK(c.amqp.endpoint().user == "app");
  CHECK(c.amqp.endpoint().password == "s3cret");
  CHECK(c.amqp.endpoint().vhost == "prod");
  CHECK(c.amqp.prefetch == 50);
  CHECK(c.amqp.heartbeat_sec == 0);
  CHECK(c.amqp.connect_timeout_ms == 100);
  CHECK(c.redis.endpoint.nodes.at(0).host == "cache");
  CHECK(c.redis.endpoint.nodes.at(0).port == 6380);
  CHECK(c.redis.endpoint.db == 3);
  CHECK(c.redis.endpoint.password == "pw");
  CHECK(c.redis.connect_timeout_ms == 200);
  CHECK(c.topology.quotes_exchange.type == "topic");
  CHECK(c.topology.events_exchange.type == "direct");
  REQUIRE(c.topology.queues.size() == 2);
  CHECK(c.topology.queues[0].binding_key == "#");
  CHECK(c.topology.queues[0].type == QueueType::Quorum);
  CHECK(c.topology.queues[1].binding_key.empty());
  CHECK(c.topology.queues[1].type == QueueType::Classic);
  CHECK(c.topology.delivery_limit == 7);
  CHECK(c.retry.initial_delay_ms == 10);
  CHECK(c.retry.max_delay_ms == 20);
  CHECK(c.retry.multiplier == 3);
  CHECK(c.retry.max_attempts == 1);
  CHECK(c.retry.max_age_ms == 5000000000ULL);
  CHECK(c.idempotency_ttl_sec == 60);
  CHECK(c.quote_history_length == 50);
  CHECK_FALSE(c.http.enabled);
  CHECK(c.http.host == "::1");
  CHECK(c.http.port == 8080);
  CHECK(c.log_level == "warn");
  CHECK(c.shutdown_drain_ms == 0);
}

TEST_CASE("config: JSON syntax errors give line and column") {
  EnvGuard env;
  CHECK(error_of("{\n  \"amqp\": {\n    \"prefetch\": 10\n    \"heartbeatSec\": 5\n  }\n}") ==
        "test.jsonc: invalid JSON at line 4 column 5: Missing a comma or '}' after an object member");
  CHECK(error_of("") == "test.jsonc: invalid JSON at line 1 column 1: The document is empty");
  CHECK(error_of("{} x") ==
        "test.jsonc: invalid JSON at line 1 column 4: The document root must not be followed by other values");
}

TEST_CASE("config: deep nesting is an error, not a stack overflow") {
  EnvGuard env;
  // 100 000 levels overflowed the parser's stack (SIGSEGV) before the depth bound.
  CHECK(error_of(std::string(100000, '[') + std::string(100000, ']')) ==
        "test.jsonc: invalid JSON at line 1 column 66: Nested deeper than 64 levels");
  std::string objects;
  for (int i = 0; i < 100000; ++i) objects += "{\"a\":";
  objects += "1" + std::string(100000, '}');
  CHECK(error_of(objects) == "test.jsonc: invalid JSON at line 1 column 322: Nested deeper than 64 levels");
  CHECK(error_of(R"({"amqp": {"url": [[[[1]]]]}})") == "test.jsonc: /amqp/url: expected string, got array");
}

TEST_CASE("config: strings must be valid UTF-8") {
  EnvGuard env;
  CHECK(error_of("{\"amqp\": {\"url\": \"amqp://\xff@h/\"}}") ==
        "test.jsonc: invalid JSON at line 1 column 26: Invalid encoding in string");
}

TEST_CASE("config: unknown keys are rejected with their pointer") {
  EnvGuard env;
  CHECK(error_of(R"({"amqp": {"prefecth": 10}})") == R"(test.jsonc: /amqp/prefecth: unknown key; did you mean "prefetch"?)");
  CHECK(error_of(R"({"amqp": {"heartbeat_sec": 10}})") ==
        R"(test.jsonc: /amqp/heartbeat_sec: unknown key; did you mean "heartbeatSec"?)");
  CHECK(error_of(R"({"metrics": {}})") ==
        "test.jsonc: /metrics: unknown key; expected one of amqp, redis, credentials, topology, retry, idempotency, "
        "quotes, portfolio, http, log, notify, shutdown, limits");
  CHECK(error_of(R"({"topology": {"queues": [{"name": "a", "exchange": "events", "durable": true}]}})") ==
        "test.jsonc: /topology/queues/0/durable: unknown key; expected one of name, exchange, bindingKey, type");
  CHECK(error_of(R"({"topology": {"exchanges": {"quote": {}}}})") ==
        R"(test.jsonc: /topology/exchanges/quote: unknown key; did you mean "quotes"?)");
  CHECK(error_of(R"({"$schema": "config.schema.json"})").empty());
}

TEST_CASE("config: limits") {
  EnvGuard env;
  CHECK(parse(R"({"limits": {"maxMessageBytes": 4096}})").limits.max_message_bytes == 4096);
  CHECK(error_of(R"({"limits": {"maxMessageBytes": 100}})") == "test.jsonc: /limits/maxMessageBytes: must be >= 1024, got 100");
  CHECK(error_of(R"({"limits": {"maxMessageBytes": 134217729}})") ==
        "test.jsonc: /limits/maxMessageBytes: must be <= 134217728, got 134217729");
  CHECK(error_of(R"({"limits": {"maxBytes": 1}})") ==
        "test.jsonc: /limits/maxBytes: unknown key; expected one of maxMessageBytes");
}

TEST_CASE("config: duplicate keys are rejected") {
  EnvGuard env;
  CHECK(error_of(R"({"amqp": {"prefetch": 10, "prefetch": 20}})") == "test.jsonc: /amqp/prefetch: duplicate key");
}

TEST_CASE("config: wrong types name the field and both types") {
  EnvGuard env;
  CHECK(error_of(R"({"amqp": {"prefetch": "500"}})") == "test.jsonc: /amqp/prefetch: expected integer, got string");
  CHECK(error_of(R"({"amqp": {"prefetch": 1.5}})") == "test.jsonc: /amqp/prefetch: expected integer, got number");
  CHECK(error_of(R"({"http": {"enabled": "yes"}})") == "test.jsonc: /http/enabled: expected boolean, got string");
  CHECK(error_of(R"({"amqp": []})") == "test.jsonc: /amqp: expected object, got array");
  CHECK(error_of(R"([])") == "test.jsonc: (root): expected object, got array");
}

TEST_CASE("config: prefetch must be at least 1") {
  EnvGuard env;
  CHECK(error_of(R"({"amqp": {"prefetch": 0}})") == "test.jsonc: /amqp/prefetch: must be >= 1, got 0");
  CHECK(error_of(R"({"amqp": {"prefetch": 65536}})") == "test.jsonc: /amqp/prefetch: must be <= 65535, got 65536");
  CHECK(parse(R"({"amqp": {"prefetch": 65535}})").amqp.prefetch == 65535);
}

TEST_CASE("config: numeric ranges") {
  EnvGuard env;
  CHECK(error_of(R"({"amqp": {"heartbeatSec": 3601}})") == "test.jsonc: /amqp/heartbeatSec: must be <= 3600, got 3601");
  CHECK(error_of(R"({"amqp": {"heartbeatSec": -1}})") == "test.jsonc: /amqp/heartbeatSec: must be >= 0, got -1");
  CHECK(error_of(R"({"retry": {"maxAttempts": 0}})") == "test.jsonc: /retry/maxAttempts: must be >= 1, got 0");
  CHECK(error_of(R"({"quotes": {"historyLength": 49}})") == "test.jsonc: /quotes/historyLength: must be >= 50, got 49");
  CHECK(error_of(R"({"topology": {"deliveryLimit": 0}})") == "test.jsonc: /topology/deliveryLimit: must be >= 1, got 0");
  // maxAgeMs is compared as int64_t: 2^64-1 became -1 and expired every message.
  CHECK(error_of(R"({"retry": {"maxAgeMs": 18446744073709551615}})") ==
        "test.jsonc: /retry/maxAgeMs: must be <= 9007199254740991, got 18446744073709551615");
  CHECK(parse(R"({"retry": {"maxAgeMs": 9007199254740991}})").retry.max_age_ms == 9007199254740991ULL);
  SUBCASE("retry delays must be ordered") {
    CHECK(error_of(R"({"retry": {"initialDelayMs": 5000, "maxDelayMs": 1000}})") ==
          "test.jsonc: /retry/maxDelayMs: must be >= /retry/initialDelayMs (5000), got 1000");
    CHECK(error_of(R"({"retry": {"initialDelayMs": 120000}})") ==
          "test.jsonc: /retry/initialDelayMs: must be <= /retry/maxDelayMs (60000), got 120000");
  }
}

TEST_CASE("config: enums") {
  EnvGuard env;
  CHECK(error_of(R"({"log": {"level": "verbose"}})") ==
        R"(test.jsonc: /log/level: must be one of debug, info, warn, error, got "verbose")");
  CHECK(error_of(R"({"topology": {"exchanges": {"events": {"type": "headers"}}}})") ==
        R"(test.jsonc: /topology/exchanges/events/type: must be one of fanout, topic, direct, got "headers")");
  CHECK(error_of(R"({"topology": {"queues": [{"name": "a", "exchange": "events", "type": "stream"}]}})") ==
        R"(test.jsonc: /topology/queues/0/type: must be one of quorum, classic, got "stream")");
}

TEST_CASE("config: queues") {
  EnvGuard env;
  SUBCASE("exchange must be one of the configured two") {
    CHECK(error_of(R"({"topology": {"queues": [
            {"name": "a", "exchange": "events"}, {"name": "b", "exchange": "market.quotes"},
            {"name": "c", "exchange": "evnts"}]}})") ==
          R"(test.jsonc: /topology/queues/2/exchange: "evnts" is not a configured exchange (market.quotes, events))");
  }
  SUBCASE("names are unique") {
    CHECK(error_of(R"({"topology": {"queues": [
            {"name": "a", "exchange": "events"}, {"name": "a", "exchange": "events"}]}})") ==
          R"(test.jsonc: /topology/queues/1/name: duplicate queue name "a" (first at /topology/queues/0/name))");
  }
  SUBCASE("name and exchange are required") {
    CHECK(error_of(R"({"topology": {"queues": [{"exchange": "events"}]}})") ==
          "test.jsonc: /topology/queues/0/name: required field missing");
    CHECK(error_of(R"({"topology": {"queues": [{"name": "a"}]}})") ==
          "test.jsonc: /topology/queues/0/exchange: required field missing");
  }
  SUBCASE("reserved names") {
    CHECK(error_of(R"({"topology": {"queues": [{"name": "amq.x", "exchange": "events"}]}})") ==
          R"(test.jsonc: /topology/queues/0/name: names starting with "amq." are reserved by RabbitMQ, got "amq.x")");
    CHECK(error_of(R"({"topology": {"queues": [{"name": "x.dlq", "exchange": "events"}]}})") ==
          "test.jsonc: /topology/queues/0/name: names ending in \".dlq\" or \".retry.<ms>\" are reserved for "
          "eventd's dead-letter and retry queues, got \"x.dlq\"");
    CHECK(error_of(R"({"topology": {"queues": [{"name": "x.retry.1000", "exchange": "events"}]}})").find(
              "/topology/queues/0/name: names ending in") != std::string::npos);
    CHECK(error_of(R"({"topology": {"exchanges": {"events": {"name": "amq.topic"}}}})") ==
          R"(test.jsonc: /topology/exchanges/events/name: names starting with "amq." are reserved by RabbitMQ, got "amq.topic")");
  }
  SUBCASE("an empty list is an error, not silently nothing consumed") {
    CHECK(error_of(R"({"topology": {"queues": []}})") == "test.jsonc: /topology/queues: must have at least 1 item");
  }
  SUBCASE("exchanges must differ") {
    CHECK(error_of(R"({"topology": {"exchanges": {"events": {"name": "market.quotes"}}}})") ==
          R"(test.jsonc: /topology/exchanges/events/name: must differ from the quotes exchange name, got "market.quotes")");
  }
  SUBCASE("renamed exchanges apply to the default queues") {
    const Config c = parse(R"({"topology": {"exchanges": {"events": {"name": "bus"}}}})");
    REQUIRE(c.topology.queues.size() == 7);
    CHECK(c.topology.queues[1].exchange == "bus");
    CHECK(c.topology.events_exchange.type == "topic");
  }
}

TEST_CASE("config: http.listen") {
  EnvGuard env;
  CHECK(parse(R"({"http": {"listen": "0.0.0.0:80"}})").http.host == "0.0.0.0");
  CHECK(parse(R"({"http": {"listen": "localhost:9000"}})").http.port == 9000);
  CHECK(error_of(R"({"http": {"listen": "9464"}})") ==
        R"(test.jsonc: /http/listen: expected "host:port", e.g. "127.0.0.1:9464" or "[::1]:9464", got "9464")");
  CHECK(error_of(R"({"http": {"listen": "127.0.0.1:0"}})") ==
        R"(test.jsonc: /http/listen: invalid port "0"; expected 1..65535)");
  CHECK(error_of(R"({"http": {"listen": "127.0.0.1:65536"}})") ==
        R"(test.jsonc: /http/listen: invalid port "65536"; expected 1..65535)");
  CHECK(error_of(R"({"http": {"listen": "::1:9464"}})") ==
        R"(test.jsonc: /http/listen: IPv6 addresses must be in brackets, e.g. "[::1]:9464", got "::1:9464")");
  CHECK(error_of(R"({"http": {"listen": ":9464"}})") ==
        R"(test.jsonc: /http/listen: expected "host:port", e.g. "127.0.0.1:9464" or "[::1]:9464", got ":9464")");
}

TEST_CASE("config: environment overrides the URLs") {
  EnvGuard env;
  SUBCASE("EVENTD_AMQP_URL with the default vhost spelled %2f") {
    g_env["EVENTD_AMQP_URL"] = "amqp://bob:pa%40ss@mq.example:5673/%2f";
    const Config c = parse(R"({"amqp": {"url": "amqp://other/x"}})");
    CHECK(c.amqp.url == "amqp://bob:pa%40ss@mq.example:5673/%2f");
    CHECK(c.amqp.endpoint().host == "mq.example");
    CHECK(c.amqp.endpoint().port == 5673);
    CHECK(c.amqp.endpoint().user == "bob");
    CHECK(c.amqp.endpoint().password == "pa@ss");
    CHECK(c.amqp.endpoint().vhost == "/");
  }
  SUBCASE("EVENTD_HTTP_LISTEN: one port per instance") {
    g_env["EVENTD_HTTP_LISTEN"] = "127.0.0.1:9470";
    Config c = parse(R"({"http": {"listen": "127.0.0.1:9464"}})");
    CHECK(c.http.host == "127.0.0.1");
    CHECK(c.http.port == 9470);
    g_env["EVENTD_HTTP_LISTEN"] = "9470";
    CHECK(error_of("{}") == R"(EVENTD_HTTP_LISTEN: expected "host:port", e.g. "127.0.0.1:9464" or "[::1]:9464", got "9470")");
    g_env["EVENTD_HTTP_LISTEN"] = "";
  }
  SUBCASE("EVENTD_AMQP_URL with a named vhost") {
    g_env["EVENTD_AMQP_URL"] = "amqp://mq/staging";
    const Config c = parse("{}");
    CHECK(c.amqp.endpoint().vhost == "staging");
    CHECK(c.amqp.endpoint().user == "guest");
    CHECK(c.amqp.endpoint().port == 5672);
  }
  SUBCASE("EVENTD_REDIS_URL with a db") {
    g_env["EVENTD_REDIS_URL"] = "redis://:secret@cache.example:6390/5";
    const Config c = parse("{}");
    CHECK(c.redis.url == "redis://:secret@cache.example:6390/5");
    CHECK(c.redis.endpoint.nodes.at(0).host == "cache.example");
    CHECK(c.redis.endpoint.nodes.at(0).port == 6390);
    CHECK(c.redis.endpoint.db == 5);
    CHECK(c.redis.endpoint.password == "secret");
    CHECK(c.redis.endpoint.user.empty());
  }
  SUBCASE("an empty variable counts as unset") {
    g_env["EVENTD_AMQP_URL"] = "";
    CHECK(parse("{}").amqp.endpoint().host == "127.0.0.1");
  }
  SUBCASE("a bad variable is named in the error") {
    g_env["EVENTD_AMQP_URL"] = "amqp://mq:0/";
    CHECK(error_of("{}") == R"(EVENTD_AMQP_URL: invalid port "0" in the AMQP URL; expected 1..65535)");
    g_env["EVENTD_AMQP_URL"] = "amqp://mq:5672/";
    g_env["EVENTD_REDIS_URL"] = "redis://cache/x";
    CHECK(error_of("{}") == R"(EVENTD_REDIS_URL: invalid database "x" in the Redis URL; expected an integer >= 0)");
  }
  SUBCASE("the override replaces a bad URL in the file") {
    g_env["EVENTD_REDIS_URL"] = "redis://cache:6379/1";
    CHECK(parse(R"({"redis": {"url": "nonsense"}})").redis.endpoint.db == 1);
  }
  SUBCASE("no getenv function: no overrides") {
    g_env["EVENTD_AMQP_URL"] = "amqp://elsewhere/";
    CHECK(eventd::parse_config("{}", "x", nullptr).amqp.endpoint().host == "127.0.0.1");
  }
}

TEST_CASE("config: a bad URL in the file names its pointer") {
  EnvGuard env;
  CHECK(error_of(R"({"amqp": {"url": "http://mq/"}})") ==
        R"(test.jsonc: /amqp/url: unsupported scheme "http" in the AMQP URL; expected amqp:// or amqps://)");
  CHECK(error_of(R"({"redis": {"url": "127.0.0.1:6379"}})") ==
        "test.jsonc: /redis/url: missing scheme in the Redis URL; expected redis://host:port/...");
}

TEST_CASE("config: parse_amqp_url") {
  SUBCASE("defaults") {
    const auto e = eventd::parse_amqp_url("amqp://mq");
    CHECK(e.host == "mq");
    CHECK(e.port == 5672);
    CHECK(e.user == "guest");
    CHECK(e.password == "guest");
    CHECK(e.vhost == "/");
    CHECK(eventd::parse_amqp_url("amqp://mq/").vhost == "/");
    CHECK(eventd::parse_amqp_url("AMQP://mq:1").port == 1);
  }
  SUBCASE("user without password keeps the default password") {
    const auto e = eventd::parse_amqp_url("amqp://alice@mq");
    CHECK(e.user == "alice");
    CHECK(e.password == "guest");
    CHECK_FALSE(e.has_password);
    CHECK(eventd::parse_amqp_url("amqp://alice:pw@mq").has_password);
    CHECK_FALSE(eventd::parse_amqp_url("amqp://mq").has_password);
  }
  SUBCASE("amqps: TLS, port 5671 by default") {
    const auto e = eventd::parse_amqp_url("amqps://u:p@mq.example/prod");
    CHECK(e.tls);
    CHECK(e.port == 5671);
    CHECK(e.host == "mq.example");
    CHECK(e.vhost == "prod");
    CHECK(e.node() == "mq.example:5671");
    CHECK(eventd::parse_amqp_url("AMQPS://mq:5999").port == 5999);
    CHECK(eventd::parse_amqp_url("amqps://[::1]/").port == 5671);
    CHECK_FALSE(eventd::parse_amqp_url("amqp://mq").tls);
  }
  SUBCASE("percent-decoding of user, password and vhost") {
    const auto e = eventd::parse_amqp_url("amqp://us%3Aer:p%2Fw%3A@mq/a%2Fb");
    CHECK(e.user == "us:er");
    CHECK(e.password == "p/w:");
    CHECK(e.vhost == "a/b");
  }
  SUBCASE("IPv6 host") {
    const auto e = eventd::parse_amqp_url("amqp://[::1]:5673/v");
    CHECK(e.host == "::1");
    CHECK(e.port == 5673);
  }
  SUBCASE("malformed URLs") {
    CHECK(amqp_error("http://mq/") == R"(unsupported scheme "http" in the AMQP URL; expected amqp:// or amqps://)");
    CHECK(amqp_error("amqps://mq:x/") == R"(invalid port "x" in the AMQP URL; expected 1..65535)");
    CHECK(amqp_error("mq:5672") == "missing scheme in the AMQP URL; expected amqp://host:port/...");
    CHECK(amqp_error("amqp://") == "missing host in the AMQP URL");
    CHECK(amqp_error("amqp://user:pw@:5672/") == "missing host in the AMQP URL");
    CHECK(amqp_error("amqp://mq:abc/") == R"(invalid port "abc" in the AMQP URL; expected 1..65535)");
    CHECK(amqp_error("amqp://mq:0/") == R"(invalid port "0" in the AMQP URL; expected 1..65535)");
    CHECK(amqp_error("amqp://mq:70000/") == R"(invalid port "70000" in the AMQP URL; expected 1..65535)");
    CHECK(amqp_error("amqp://mq:/") == R"(invalid port "" in the AMQP URL; expected 1..65535)");
    CHECK(amqp_error("amqp://mq/a/b") ==
          R"(the vhost in the AMQP URL must be percent-encoded ("/" is %2F), got "a/b")");
    CHECK(amqp_error("amqp://mq/%zz") == "invalid percent-encoding in the AMQP URL vhost");
    CHECK(amqp_error("amqp://u:%4@mq/") == "invalid percent-encoding in the AMQP URL password");
    CHECK(amqp_error("amqp://mq/?heartbeat=5") ==
          "query parameters and fragments are not supported in the AMQP URL; set the options in the config file");
    CHECK(amqp_error("amqp://::1/") == "IPv6 addresses in the AMQP URL must be in brackets, e.g. [::1]");
  }
}

std::string amqp_list_error(const std::string& urls) {
  try {
    eventd::parse_amqp_urls(urls);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST_CASE("config: parse_amqp_urls") {
  SUBCASE("one URI is one endpoint") {
    const auto eps = eventd::parse_amqp_urls("amqp://u:p@mq:5673/v");
    REQUIRE(eps.size() == 1);
    CHECK(eps[0].host == "mq");
    CHECK(eps[0].port == 5673);
    CHECK(eps[0].node() == "mq:5673");
  }
  SUBCASE("several URIs, in order, whitespace around the commas ignored") {
    const auto eps =
        eventd::parse_amqp_urls(" amqp://u:p@10.0.0.1:5672/%2f ,\tamqp://u:q@10.0.0.2/%2F,amqp://w@[::1]:5674/%2f ");
    REQUIRE(eps.size() == 3);
    CHECK(eps[0].node() == "10.0.0.1:5672");
    CHECK(eps[1].node() == "10.0.0.2:5672");
    CHECK(eps[2].node() == "[::1]:5674");
    CHECK(eps[1].password == "q");
    CHECK(eps[2].user == "w");
    for (const auto& e : eps) CHECK(e.vhost == "/");
  }
  SUBCASE("each node may be amqp or amqps") {
    const auto eps = eventd::parse_amqp_urls("amqps://u:p@mq1/%2f, amqp://u:p@mq2/%2f,amqps://u:p@mq3:5999/%2f");
    REQUIRE(eps.size() == 3);
    CHECK(eps[0].tls);
    CHECK(eps[0].node() == "mq1:5671");
    CHECK_FALSE(eps[1].tls);
    CHECK(eps[1].node() == "mq2:5672");
    CHECK(eps[2].tls);
    CHECK(eps[2].node() == "mq3:5999");
  }
  SUBCASE("a comma inside a password is percent-encoded") {
    const auto eps = eventd::parse_amqp_urls("amqp://u:a%2Cb@mq1/,amqp://u:a%2Cb@mq2/");
    REQUIRE(eps.size() == 2);
    CHECK(eps[1].password == "a,b");
  }
  SUBCASE("errors name the URI by position") {
    CHECK(amqp_list_error("amqp://mq1/,amqp://mq2:abc/") ==
          R"(URI 2 of 2: invalid port "abc" in the AMQP URL; expected 1..65535)");
    CHECK(amqp_list_error("http://mq1/,amqp://mq2/,amqp://mq3/") ==
          R"(URI 1 of 3: unsupported scheme "http" in the AMQP URL; expected amqp:// or amqps://)");
    CHECK(amqp_list_error("amqp://mq1/,amqps://mq2:0/") ==
          R"(URI 2 of 2: invalid port "0" in the AMQP URL; expected 1..65535)");
    CHECK(amqp_list_error("amqp://mq1/, amqp:///") == "URI 2 of 2: missing host in the AMQP URL");
  }
  SUBCASE("an empty element is an error") {
    CHECK(amqp_list_error("amqp://mq1/,,amqp://mq2/") ==
          "URI 2 of 3 is empty (one amqp:// URI per node, separated by commas)");
    CHECK(amqp_list_error("amqp://mq1/,") == "URI 2 of 2 is empty (one amqp:// URI per node, separated by commas)");
    CHECK(amqp_list_error(", amqp://mq1/") == "URI 1 of 2 is empty (one amqp:// URI per node, separated by commas)");
    CHECK(amqp_list_error("  ") == "empty AMQP URL");
  }
  SUBCASE("a comma inside a URI gets a hint, never the password") {
    const std::string e = amqp_list_error("amqp://u:sec,ret@mq1/");
    CHECK(e == "URI 2 of 2: missing scheme in the AMQP URL; expected amqp://host:port/... (percent-encode a comma "
               "inside a URI as %2C)");
    CHECK(e.find("ret") == std::string::npos);
  }
  SUBCASE("every node on the same vhost") {
    CHECK(amqp_list_error("amqp://mq1/prod,amqp://mq2/prod,amqp://mq3/%2f") ==
          R"(URI 3 of 3: vhost "/" differs from URI 1's "prod"; the nodes of one cluster share the vhost)");
    CHECK(amqp_list_error("amqp://mq1,amqp://mq2/staging") ==
          R"(URI 2 of 2: vhost "staging" differs from URI 1's "/"; the nodes of one cluster share the vhost)");
  }
  SUBCASE("a node listed twice") {
    CHECK(amqp_list_error("amqp://mq1/,amqp://mq2/,amqp://u:p@MQ1:5672/") ==
          "URI 3 of 3: names the same node as URI 1 (MQ1:5672)");
    CHECK(eventd::parse_amqp_urls("amqp://mq1:5672/,amqp://mq1:5673/").size() == 2);
  }
}

TEST_CASE("config: amqp.url with several nodes") {
  EnvGuard env;
  SUBCASE("from the file") {
    const Config c = parse(R"({"amqp": {"url": "amqp://a:b@n1:5672/%2f, amqp://a:b@n2:5673/%2f"}})");
    REQUIRE(c.amqp.endpoints.size() == 2);
    CHECK(c.amqp.endpoint().node() == "n1:5672");
    CHECK(c.amqp.endpoints[1].node() == "n2:5673");
    CHECK(c.amqp.management_url == "http://n1:15672");  // from the first node
  }
  SUBCASE("from EVENTD_AMQP_URL") {
    g_env["EVENTD_AMQP_URL"] = "amqp://n1/,amqp://n2/,amqp://n3/";
    const Config c = parse("{}");
    REQUIRE(c.amqp.endpoints.size() == 3);
    CHECK(c.amqp.endpoints[2].host == "n3");
  }
  SUBCASE("errors name the source, the pointer and the position") {
    CHECK(error_of(R"({"amqp": {"url": "amqp://n1/,amqp://n2:0/"}})") ==
          R"(test.jsonc: /amqp/url: URI 2 of 2: invalid port "0" in the AMQP URL; expected 1..65535)");
    g_env["EVENTD_AMQP_URL"] = "amqp://n1/,";
    CHECK(error_of("{}") == "EVENTD_AMQP_URL: URI 2 of 2 is empty (one amqp:// URI per node, separated by commas)");
  }
  SUBCASE("the management URL override still wins") {
    g_env["EVENTD_AMQP_URL"] = "amqp://n1/,amqp://n2/";
    g_env["EVENTD_MANAGEMENT_URL"] = "http://mgmt:8080/";
    CHECK(parse("{}").amqp.management_url == "http://mgmt:8080");
  }
}

TEST_CASE("config: topology.quorumInitialGroupSize") {
  EnvGuard env;
  CHECK_FALSE(parse("{}").topology.quorum_initial_group_size);
  CHECK(parse(R"({"topology": {"quorumInitialGroupSize": 3}})").topology.quorum_initial_group_size == 3u);
  CHECK(error_of(R"({"topology": {"quorumInitialGroupSize": 0}})") ==
        "test.jsonc: /topology/quorumInitialGroupSize: must be >= 1, got 0");
  CHECK(error_of(R"({"topology": {"quorumInitialGroupSize": "3"}})") ==
        "test.jsonc: /topology/quorumInitialGroupSize: expected integer, got string");
}

TEST_CASE("config: parse_redis_url") {
  SUBCASE("defaults") {
    const auto e = eventd::parse_redis_url("redis://cache");
    REQUIRE(e.nodes.size() == 1);
    CHECK(e.nodes[0].host == "cache");
    CHECK(e.nodes[0].port == 6379);
    CHECK(e.db == 0);
    CHECK(e.password.empty());
    CHECK(e.user.empty());
  }
  SUBCASE("password forms") {
    CHECK(eventd::parse_redis_url("redis://secret@cache").password == "secret");
    CHECK(eventd::parse_redis_url("redis://:secret@cache").password == "secret");
    const auto acl = eventd::parse_redis_url("redis://app:p%40ss@cache:7000/12");
    CHECK(acl.user == "app");
    CHECK(acl.password == "p@ss");
    CHECK(acl.nodes.at(0).port == 7000);
    CHECK(acl.db == 12);
  }
  SUBCASE("a unix socket") {
    const auto e = eventd::parse_redis_url("unix:///run/redis/redis.sock?db=3");
    REQUIRE(e.nodes.size() == 1);
    CHECK(e.nodes[0].unix_path == "/run/redis/redis.sock");
    CHECK(e.nodes[0].text() == "unix:/run/redis/redis.sock");
    CHECK(e.db == 3);
    const auto acl = eventd::parse_redis_url("unix://eventd:s%40cret@/var/run/r.sock");
    CHECK(acl.user == "eventd");
    CHECK(acl.password == "s@cret");
    CHECK(acl.db == 0);
    CHECK(redis_error("unix://host/x.sock") ==
          R"(a unix:// Redis URL has no host; expected unix:///path/redis.sock, got "host/x.sock")");
    CHECK(redis_error("unix://") == "missing socket path in the Redis URL; expected unix:///path/redis.sock");
    CHECK(redis_error("unix:///r.sock?foo=1") == R"(unsupported parameter "foo=1" in the Redis URL; only db=N)");
    CHECK(redis_error("unix:///r.sock?db=x") == R"(invalid database "x" in the Redis URL; expected an integer >= 0)");
  }
  SUBCASE("several nodes: the seeds of a Redis Cluster") {
    const auto e = eventd::parse_redis_url("redis://app:pw@10.0.0.1:7000, 10.0.0.2:7001,[::1]:7002,cache/0");
    REQUIRE(e.nodes.size() == 4);
    CHECK(e.nodes[0] == eventd::RedisNodeAddress{"10.0.0.1", 7000});
    CHECK(e.nodes[1] == eventd::RedisNodeAddress{"10.0.0.2", 7001});
    CHECK(e.nodes[2] == eventd::RedisNodeAddress{"::1", 7002});
    CHECK(e.nodes[2].text() == "[::1]:7002");
    CHECK(e.nodes[3] == eventd::RedisNodeAddress{"cache", 6379});
    CHECK(e.user == "app");
    CHECK(e.password == "pw");
    CHECK(eventd::parse_redis_url("redis://a:1,b:2").nodes.size() == 2);
    CHECK(redis_error("redis://a:1,,b:2/0") == "empty host in the Redis URL's node list (node 2)");
    CHECK(redis_error("redis://a:1,b:x/0") == R"(invalid port "x" in the Redis (node 2) URL; expected 1..65535)");
    CHECK(redis_error("redis://a:1,b:2/3") ==
          "several Redis nodes are the seeds of a Redis Cluster, which has only database 0; got /3");
  }
  SUBCASE("any db >= 0") {
    CHECK(eventd::parse_redis_url("redis://cache/0").db == 0);
    CHECK(eventd::parse_redis_url("redis://cache/99").db == 99);
    CHECK(eventd::parse_redis_url("redis://cache/").db == 0);
  }
  SUBCASE("malformed URLs") {
    CHECK(redis_error("rediss://cache").starts_with("rediss:// (TLS) is not supported: Debian 12's hiredis has no TLS; "
                                                   "use a local Redis behind unix:///path/redis.sock"));
    CHECK(redis_error("rediss://cache").find("ACL user") != std::string::npos);
    CHECK(redis_error("http://cache") == R"(unsupported scheme "http" in the Redis URL; expected redis:// or unix://)");
    CHECK(redis_error("redis://cache/-1") == R"(invalid database "-1" in the Redis URL; expected an integer >= 0)");
    CHECK(redis_error("redis://cache/1/2") == R"(invalid database "1/2" in the Redis URL; expected an integer >= 0)");
    CHECK(redis_error("redis://cache:99999") == R"(invalid port "99999" in the Redis URL; expected 1..65535)");
    CHECK(redis_error("redis://:pw@/0") == "missing host in the Redis URL");
  }
}

TEST_CASE("config: load_config on an unreadable file") {
  std::string message;
  try {
    eventd::load_config("/nonexistent/eventd.jsonc");
  } catch (const ConfigError& e) {
    message = e.what();
  }
  CHECK(message == "/nonexistent/eventd.jsonc: cannot read: No such file or directory");

  message.clear();
  try {
    eventd::load_config("/");
  } catch (const ConfigError& e) {
    message = e.what();
  }
  CHECK(message == "/: cannot read: Is a directory");
}

TEST_CASE("config: notify sinks per channel, with their defaults") {
  using eventd::SinkKind;
  SUBCASE("defaults: push to redis, email to a file, discord to a webhook") {
    eventd::Config c = eventd::parse_config("{}", "test.jsonc");
    CHECK(c.notify.push.kind == SinkKind::Redis);
    CHECK(c.notify.email.kind == SinkKind::File);
    CHECK(c.notify.email.path == "/var/lib/eventd/spool/email.jsonl");
    CHECK(c.notify.discord.kind == SinkKind::Webhook);
    CHECK(c.notify.sink_for("push") == &c.notify.push);
    CHECK(c.notify.sink_for("sms") == nullptr);
  }
  SUBCASE("a channel can be moved to another sink") {
    eventd::Config c = eventd::parse_config(
        R"({"notify":{"channels":{"discord":{"sink":"webhook","url":"http://127.0.0.1:1/hook"},
            "push":{"sink":"file","path":"/tmp/p.jsonl"}},"rateLimit":{"perMinute":5,"burst":2}}})",
        "test.jsonc");
    CHECK(c.notify.discord.url == "http://127.0.0.1:1/hook");
    CHECK(c.notify.push.kind == SinkKind::File);
    CHECK(c.notify.push.path == "/tmp/p.jsonl");
    CHECK(c.notify.rate_per_minute == 5);
    CHECK(c.notify.rate_burst == 2);
  }
  SUBCASE("a webhook sink needs a url; a url needs a webhook") {
    CHECK_THROWS_WITH_AS(eventd::parse_config(R"({"notify":{"channels":{"discord":{"sink":"webhook"}}}})", "t"),
                         "t: /notify/channels/discord/url: a webhook sink needs a url", eventd::ConfigError);
    CHECK_THROWS_WITH_AS(
        eventd::parse_config(R"({"notify":{"channels":{"push":{"sink":"redis","url":"http://x/"}}}})", "t"),
        "t: /notify/channels/push/url: only webhook sinks take a url", eventd::ConfigError);
  }
}

TEST_CASE("config: portfolio checks") {
  EnvGuard env;
  const Config c = parse(R"({"portfolio":{"pollMs":50,"leaseMs":2000,"claimBatch":7}})");
  CHECK(c.portfolio.poll_ms == 50);
  CHECK(c.portfolio.lease_ms == 2000);
  CHECK(c.portfolio.claim_batch == 7);
  CHECK(error_of(R"({"portfolio":{"leaseMs":999}})") == "test.jsonc: /portfolio/leaseMs: must be >= 1000, got 999");
  CHECK(error_of(R"({"portfolio":{"claimBatch":0}})") == "test.jsonc: /portfolio/claimBatch: must be >= 1, got 0");
  CHECK(error_of(R"({"portfolio":{"poll":5}})") ==
        "test.jsonc: /portfolio/poll: unknown key; did you mean \"pollMs\"?");
}
