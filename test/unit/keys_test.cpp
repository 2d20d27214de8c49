// The Redis key layout (keys.hpp): every key of a message shares its hash tag, and the
// tag is what Redis Cluster hashes.
#include <doctest/doctest.h>

#include <array>
#include <set>
#include <string>
#include <vector>

#include <rapidjson/document.h>

#include "eventd/keys.hpp"
#include "eventd/redis/slot.hpp"

using namespace eventd;

namespace {

// Redis Cluster's rule, written out independently of redis::hash_tag: the substring
// between the first '{' and the next '}'; the whole key if there is none or it is empty.
std::string redis_hashes(const std::string& key) {
  auto open = key.find('{');
  if (open == std::string::npos) return key;
  auto close = key.find('}', open + 1);
  if (close == std::string::npos || close == open + 1) return key;
  return key.substr(open + 1, close - open - 1);
}

rapidjson::Document parse(const std::string& json) {
  rapidjson::Document d;
  d.Parse(json.c_str(), json.size());
  REQUIRE_FALSE(d.HasParseError());
  return d;
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// The keys eventd uses for one message, the way the handlers and the dispatcher name them.
std::vector<std::string> keys_of(const std::string& type, const std::string& user, const std::string& symbol,
                                 const std::string& message_id) {
  rapidjson::Document body = parse("{\"type\":\"" + type + "\",\"userId\":" + json_string(user) +
                                   ",\"symbol\":" + json_string(symbol) + ",\"channel\":\"push\"}");
  const keys::Tag tag = keys::message_tag(type, body);
  const std::string idem = keys::idempotency(tag, message_id, type, "{}");
  std::vector<std::string> out{idem, keys::outbox(idem)};
  if (type == "quote_update") {
    for (auto k : {keys::quote(symbol), keys::history(symbol), keys::rules(symbol), keys::rule_state(symbol),
                   keys::rule_owners(symbol)}) {
      out.push_back(k);
    }
    for (const auto& k : keys::rule_indexes(symbol)) out.push_back(k);
  } else if (type == "analysis_request") {
    out.push_back(keys::history(symbol));
  } else if (type == "alert_triggered") {
    out.push_back(keys::alerts(user));
    out.push_back(keys::monitor(user));
  } else if (type == "analysis_complete") {
    out.push_back(keys::analysis(user, symbol));
    out.push_back(keys::monitor(user));
  } else if (type == "notification") {
    out.push_back(keys::lease(idem));
    out.push_back(keys::rate_limit(user, "push"));
    out.push_back(keys::notifications(user));
  }
  return out;
}

}  // namespace

TEST_CASE("keys: a tag is never empty and never ambiguous") {
  CHECK(keys::Tag("AAPL").text() == "AAPL");
  CHECK(keys::Tag("BRK.B:x-1_").text() == "BRK.B:x-1_");  // every character a symbol may have, as it is
  CHECK(keys::Tag("a{b}c").text() == "a%7Bb%7Dc");
  CHECK(keys::Tag("50%").text() == "50%25");
  CHECK_FALSE(keys::Tag("").text().empty());
  SUBCASE("distinct values, distinct tags") {
    const std::vector<std::string> values{"", "%", "%25", "{", "%7B", "}", "%7D", "a}b", "a%7Db", "{a}", "a", "A"};
    std::set<std::string> tags;
    for (const auto& v : values) tags.insert(keys::Tag(v).text());
    CHECK(tags.size() == values.size());
  }
  SUBCASE("braces in a user id stay inside the tag") {
    for (const std::string user : {"}alice", "{alice}", "al}ice{", "}", "{}", "%7D"}) {
      const std::string key = keys::monitor(user);
      CHECK(redis_hashes(key) == keys::Tag(user).text());
      CHECK(redis_hashes(key) != key);  // a real tag, not the whole key
    }
  }
}

TEST_CASE("keys: every key of a message shares the message's tag") {
  const std::vector<std::string> users{"alice", "bob:1", "}x{", "{team}", "100%", "a b"};
  const std::vector<std::string> symbols{"AAPL", "BRK.B", "CLN:price_above", "X-1_2"};
  for (const std::string type : {"quote_update", "analysis_request", "alert_triggered", "analysis_complete",
                                 "notification"}) {
    for (const auto& user : users) {
      for (const auto& symbol : symbols) {
        for (const std::string id : {"m-1", "", "q-1:0:2", "{odd}"}) {
          CAPTURE(type);
          CAPTURE(user);
          CAPTURE(symbol);
          CAPTURE(id);
          const bool by_symbol = type == "quote_update" || type == "analysis_request";
          const std::string tag = keys::Tag(by_symbol ? symbol : user).text();
          for (const auto& key : keys_of(type, user, symbol, id)) {
            CAPTURE(key);
            CHECK(redis_hashes(key) == tag);
            CHECK(redis::hash_tag(key) == tag);
          }
        }
      }
    }
  }
}

TEST_CASE("keys: the layout") {
  const keys::Tag aapl("AAPL");
  CHECK(keys::idempotency(aapl, "q-1", "quote_update", "{}") == "eventd:idem:{AAPL}:q-1");
  CHECK(keys::outbox("eventd:idem:{AAPL}:q-1") == "eventd:outbox:{AAPL}:q-1");
  CHECK(keys::lease("eventd:idem:{bob}:n-1") == "eventd:lease:{bob}:n-1");
  CHECK(keys::quote("AAPL") == "eventd:quote:{AAPL}");
  CHECK(keys::history("AAPL") == "eventd:history:{AAPL}");
  CHECK(keys::rules("AAPL") == "eventd:rules:{AAPL}");
  CHECK(keys::rule_index("AAPL", "price_above") == "eventd:ruleidx:{AAPL}:price_above");
  CHECK(keys::rule_indexes("AAPL")[3] == "eventd:ruleidx:{AAPL}:change_pct_below");
  CHECK(keys::rule_state("AAPL") == "eventd:rulestate:{AAPL}");
  CHECK(keys::rule_owners("AAPL") == "eventd:ruleowners:{AAPL}");
  CHECK(keys::monitor("alice") == "eventd:monitor:{alice}");
  CHECK(keys::monitor_symbols("alice") == "eventd:monitorsyms:{alice}");
  CHECK(keys::alerts("alice") == "eventd:alerts:{alice}");
  CHECK(keys::analysis("alice", "AAPL") == "eventd:analysis:{alice}:AAPL");
  CHECK(keys::notifications("bob") == "eventd:notifications:{bob}");
  CHECK(keys::rate_limit("bob", "push") == "eventd:ratelimit:{bob}:push");
  CHECK(keys::monitors() == "eventd:monitors");
  CHECK(keys::portfolio_state("alice") == "eventd:portfoliostate:{alice}");
  CHECK(keys::portfolio_outbox("alice") == "eventd:portfoliooutbox:{alice}");
  CHECK(keys::schedule(0) == "eventd:schedule:{s0}");
  CHECK(keys::schedule(15) == "eventd:schedule:{s15}");
  CHECK(keys::schedule_claims(3) == "eventd:schedclaims:{s3}");
  // Symbols with ':' do not collide with the index of another symbol's condition.
  CHECK(keys::rules("CLN:price_above") != keys::rule_index("CLN", "price_above"));
  CHECK(keys::rule_index("CLN:price_above", "price_above") != keys::rule_index("CLN", "price_above:price_above"));
}

TEST_CASE("keys: message tags by type") {
  auto body = parse(R"({"userId":"alice","symbol":"AAPL"})");
  CHECK(keys::message_tag("quote_update", body).text() == "AAPL");
  CHECK(keys::message_tag("analysis_request", body).text() == "AAPL");
  CHECK(keys::message_tag("alert_triggered", body).text() == "alice");
  CHECK(keys::message_tag("analysis_complete", body).text() == "alice");
  CHECK(keys::message_tag("notification", body).text() == "alice");
  CHECK_FALSE(keys::message_tag("quote_update", parse("{}")).text().empty());
}

TEST_CASE("keys: idempotency keys and the message id they stand for") {
  const keys::Tag tag("alice");
  SUBCASE("with a message id") {
    for (const std::string id : {"abc-1", "q-1:0", "q-1:0:1", "{x}", "a}b", "h:not-a-hash"}) {
      const std::string idem = keys::idempotency(tag, id, "notification", "{}");
      CHECK(keys::message_id(idem) == id);
    }
    CHECK(keys::message_id(keys::idempotency(keys::Tag("}{%"), "m-9", "notification", "{}")) == "m-9");
  }
  SUBCASE("without one the key hashes type and body") {
    std::string a = keys::idempotency(tag, "", "quote_update", R"({"x":1})");
    CHECK(a.rfind("eventd:idem:{alice}:h:", 0) == 0);
    CHECK(a.size() == std::string("eventd:idem:{alice}:h:").size() + 32);
    CHECK(keys::message_id(a).size() == 34);
    CHECK(keys::message_id(a).starts_with("h:"));
    CHECK(a == keys::idempotency(tag, "", "quote_update", R"({"x":1})"));
    CHECK(a != keys::idempotency(tag, "", "quote_update", R"({"x":2})"));
    CHECK(a != keys::idempotency(tag, "", "notification", R"({"x":1})"));
    // The hash is the tag-free one of before: derived ids stay what they were.
    CHECK(keys::message_id(a) == keys::message_id(keys::idempotency(keys::Tag("bob"), "", "quote_update",
                                                                     R"({"x":1})")));
  }
}

TEST_CASE("keys: a user's schedule shard is stable and the shards share the users out") {
  std::array<int, keys::kScheduleShards> users{};
  for (int i = 0; i < 16000; ++i) ++users[keys::schedule_shard("user-" + std::to_string(i))];
  for (int n : users) CHECK(n > 800);  // 1000 each on average
  CHECK(keys::schedule_shard("alice") == keys::schedule_shard(std::string("alice")));
  // xxh3_64("alice") % 16, fixed: eventctl and every eventd must agree, across versions.
  CHECK(keys::schedule_shard("alice") == 0);
  CHECK(keys::schedule_shard("bob") == keys::schedule_shard("bob"));
}
