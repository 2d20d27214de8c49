// Redis Cluster routing: key slots (values from the Redis docs), the slot map, redirects.
#include <doctest/doctest.h>

#include <hiredis/hiredis.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#include "eventd/redis/cluster_map.hpp"
#include "eventd/redis/slot.hpp"

using eventd::redis::NodeAddress;

TEST_CASE("redis slot: CRC16 and key slots as the Redis docs give them") {
  // The cluster spec's test vector for its CRC16 (XMODEM).
  CHECK(eventd::redis::crc16("123456789") == 0x31C3);
  // CLUSTER KEYSLOT's documented examples.
  CHECK(eventd::redis::key_slot("somekey") == 11058);
  CHECK(eventd::redis::key_slot("foo{hash_tag}") == 2515);
  CHECK(eventd::redis::key_slot("hash_tag") == 2515);
}

TEST_CASE("redis slot: hash tags as the cluster spec defines them") {
  using eventd::redis::hash_tag;
  CHECK(hash_tag("{user1000}.following") == "user1000");
  CHECK(hash_tag("{user1000}.followers") == "user1000");
  CHECK(hash_tag("foo{}{bar}") == "foo{}{bar}");  // empty first tag: the whole key
  CHECK(hash_tag("foo{{bar}}zap") == "{bar");
  CHECK(hash_tag("foo{bar}{zap}") == "bar");
  CHECK(hash_tag("no tag") == "no tag");
  CHECK(hash_tag("open{only") == "open{only");
  CHECK(eventd::redis::key_slot("eventd:idem:{AAPL}:m1") == eventd::redis::key_slot("eventd:history:{AAPL}"));
  CHECK(eventd::redis::key_slot("") == 0);
}

namespace {

// A hand-built CLUSTER SLOTS reply; hiredis frees the tree.
struct ReplyBuilder {
  static redisReply* integer(long long v) {
    auto* r = static_cast<redisReply*>(std::calloc(1, sizeof(redisReply)));
    r->type = REDIS_REPLY_INTEGER;
    r->integer = v;
    return r;
  }
  static redisReply* string(const char* s) {
    auto* r = static_cast<redisReply*>(std::calloc(1, sizeof(redisReply)));
    r->type = REDIS_REPLY_STRING;
    r->len = std::strlen(s);
    r->str = static_cast<char*>(std::malloc(r->len + 1));
    std::memcpy(r->str, s, r->len + 1);
    return r;
  }
  static redisReply* array(std::vector<redisReply*> items) {
    auto* r = static_cast<redisReply*>(std::calloc(1, sizeof(redisReply)));
    r->type = REDIS_REPLY_ARRAY;
    r->elements = items.size();
    r->element = static_cast<redisReply**>(std::calloc(items.size() + 1, sizeof(redisReply*)));
    for (std::size_t i = 0; i < items.size(); ++i) r->element[i] = items[i];
    return r;
  }
  static redisReply* node(const char* host, long long port) {
    return array({string(host), integer(port), string("0123456789abcdef")});
  }
};

struct Owned {
  redisReply* r;
  ~Owned() { freeReplyObject(r); }
};

}  // namespace

TEST_CASE("redis slot map: loaded from CLUSTER SLOTS, patched by MOVED") {
  using B = ReplyBuilder;
  Owned reply{B::array({
      B::array({B::integer(0), B::integer(5460), B::node("127.0.0.1", 7000), B::node("127.0.0.1", 7003)}),
      B::array({B::integer(5461), B::integer(10922), B::node("", 7001)}),  // "" = the address asked
      B::array({B::integer(10923), B::integer(16383), B::node("127.0.0.1", 7002)}),
  })};
  eventd::redis::SlotMap map;
  CHECK(map.empty());
  CHECK(map.master_of(0) == nullptr);
  REQUIRE(map.load(reply.r, NodeAddress{"10.1.1.1", 7001}));
  CHECK(map.masters().size() == 3);
  CHECK(map.unserved() == 0);
  CHECK(*map.master_of(0) == NodeAddress{"127.0.0.1", 7000});
  CHECK(*map.master_of(5460) == NodeAddress{"127.0.0.1", 7000});
  CHECK(*map.master_of(5461) == NodeAddress{"10.1.1.1", 7001});
  CHECK(*map.master_of(16383) == NodeAddress{"127.0.0.1", 7002});
  map.assign(42, NodeAddress{"127.0.0.1", 7002});
  CHECK(*map.master_of(42) == NodeAddress{"127.0.0.1", 7002});
  CHECK(*map.master_of(43) == NodeAddress{"127.0.0.1", 7000});

  SUBCASE("a malformed reply leaves the map as it was") {
    Owned bad{B::array({B::array({B::integer(10), B::integer(5)})})};
    CHECK_FALSE(map.load(bad.r, NodeAddress{"x", 1}));
    Owned reversed{B::array({B::array({B::integer(10), B::integer(5), B::node("h", 1)})})};
    CHECK_FALSE(map.load(reversed.r, NodeAddress{"x", 1}));
    CHECK(map.masters().size() == 3);
  }
  SUBCASE("a partial map leaves slots unserved") {
    Owned partial{B::array({B::array({B::integer(0), B::integer(99), B::node("h", 1)})})};
    REQUIRE(map.load(partial.r, NodeAddress{"x", 1}));
    CHECK(map.unserved() == 16384 - 100);
    CHECK(map.master_of(100) == nullptr);
  }
}

TEST_CASE("redis redirects: MOVED and ASK parsed, other errors not") {
  auto moved = eventd::redis::parse_redirect("MOVED 3999 127.0.0.1:6381");
  REQUIRE(moved);
  CHECK(moved->kind == eventd::redis::Redirect::Kind::Moved);
  CHECK(moved->slot == 3999);
  CHECK(moved->node == NodeAddress{"127.0.0.1", 6381});
  auto ask = eventd::redis::parse_redirect("ASK 12182 [::1]:7000");
  REQUIRE(ask);
  CHECK(ask->kind == eventd::redis::Redirect::Kind::Ask);
  CHECK(ask->node == NodeAddress{"::1", 7000});
  CHECK_FALSE(eventd::redis::parse_redirect("ERR unknown command"));
  CHECK_FALSE(eventd::redis::parse_redirect("MOVED 99999 h:1"));
  CHECK_FALSE(eventd::redis::parse_redirect("MOVED 1 nohost"));
  CHECK_FALSE(eventd::redis::parse_redirect("MOVED 1 h:0"));
  CHECK(eventd::redis::info_says_cluster("# Cluster\r\ncluster_enabled:1\r\n"));
  CHECK_FALSE(eventd::redis::info_says_cluster("# Cluster\r\ncluster_enabled:0\r\n"));
}
