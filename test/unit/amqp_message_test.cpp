// Tests for src/amqp_message.cpp: how received properties are copied, and the bound on
// header nesting.
#include <doctest/doctest.h>

#include <string>
#include <utility>
#include <vector>

#include "eventd/amqp_message.hpp"
#include "eventd/amqp_table.hpp"

namespace {

using eventd::FieldTable;

// A table nesting `levels` tables ({"n":{"n":...{"leaf":"x"}}}).
FieldTable nested(int levels) {
  FieldTable t;
  t.add("leaf", "x");
  for (int i = 1; i < levels; ++i) {
    FieldTable outer;
    outer.add_table("n", std::move(t));
    t = std::move(outer);
  }
  return t;
}

amqp_field_value_t table_value(FieldTable& t) {
  amqp_field_value_t v{};
  v.kind = AMQP_FIELD_KIND_TABLE;
  v.value.table = t.table();
  return v;
}

}  // namespace

TEST_CASE("amqp_message: header_depth counts tables and arrays, and stops past the limit") {
  amqp_field_value_t text{};
  text.kind = AMQP_FIELD_KIND_UTF8;
  CHECK(eventd::header_depth(text) == 0);
  FieldTable one = nested(1), seven = nested(7), deep = nested(5000);
  CHECK(eventd::header_depth(table_value(one)) == 1);
  CHECK(eventd::header_depth(table_value(seven)) == 7);
  // 5000 levels: the walk goes no further than the limit + 1.
  CHECK(eventd::header_depth(table_value(deep)) == eventd::kMaxHeaderDepth + 1);
  CHECK(eventd::header_depth(table_value(deep), 3) == 4);

  amqp_field_value_t inner[1] = {table_value(seven)};
  amqp_field_value_t array{};
  array.kind = AMQP_FIELD_KIND_ARRAY;
  array.value.array.num_entries = 1;
  array.value.array.entries = inner;
  CHECK(eventd::header_depth(array) == 8);
}

TEST_CASE("amqp_message: a header nested deeper than kMaxHeaderDepth is not copied") {
  // The headers table is level 1: a value of 7 nested tables reaches level 8.
  FieldTable headers;
  headers.add("x-custom", "keep-me")
      .add_table("x-at-limit", nested(static_cast<int>(eventd::kMaxHeaderDepth) - 1))
      .add_table("x-deep", nested(100))
      .add_int("x-num", 7)
      .add_table("x-one-too-deep", nested(static_cast<int>(eventd::kMaxHeaderDepth)));
  amqp_basic_properties_t props{};
  props._flags = AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG;
  props.message_id = eventd::as_bytes("m-1");
  props.headers = headers.table();

  eventd::OwnedProperties owned(props);
  CHECK(owned.dropped_headers() == std::vector<std::string>{"x-deep", "x-one-too-deep"});
  CHECK(owned.message_id() == "m-1");
  const amqp_table_t* h = owned.headers();
  REQUIRE(h != nullptr);
  REQUIRE(h->num_entries == 3);
  CHECK(eventd::as_view(h->entries[0].key) == "x-custom");
  CHECK(eventd::as_view(h->entries[1].key) == "x-at-limit");
  CHECK(eventd::as_view(h->entries[2].key) == "x-num");
  std::string value;
  CHECK(eventd::table_get_string(h, "x-custom", value));
  CHECK(value == "keep-me");

  SUBCASE("a move keeps the list") {
    eventd::OwnedProperties moved(std::move(owned));
    CHECK(moved.dropped_headers().size() == 2);
  }
}

TEST_CASE("amqp_message: headers within the bound are copied whole") {
  FieldTable headers;
  headers.add("a", "1").add_table("b", nested(3));
  amqp_basic_properties_t props{};
  props._flags = AMQP_BASIC_HEADERS_FLAG;
  props.headers = headers.table();
  const eventd::OwnedProperties owned(props);
  CHECK(owned.dropped_headers().empty());
  REQUIRE(owned.headers() != nullptr);
  CHECK(owned.headers()->num_entries == 2);
  CHECK(eventd::table_to_json(owned.headers()) == R"({"a":"1","b":{"n":{"n":{"leaf":"x"}}}})");
}

TEST_CASE("amqp_message: properties without headers are copied, and stay valid through moves") {
  std::string id = "4f7c2a10-0000-4000-8000-000000000001", type = "quote_update", corr = "c-1", reply = "r.q";
  std::string content_type = "application/json";
  amqp_basic_properties_t source{};
  source._flags = AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_TYPE_FLAG | AMQP_BASIC_CORRELATION_ID_FLAG |
                  AMQP_BASIC_REPLY_TO_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_APP_ID_FLAG |
                  AMQP_BASIC_DELIVERY_MODE_FLAG;
  source.message_id = amqp_bytes_t{id.size(), id.data()};
  source.type = amqp_bytes_t{type.size(), type.data()};
  source.correlation_id = amqp_bytes_t{corr.size(), corr.data()};
  source.reply_to = amqp_bytes_t{reply.size(), reply.data()};
  source.content_type = amqp_bytes_t{content_type.size(), content_type.data()};
  source.app_id = amqp_bytes_t{0, nullptr};  // present and empty
  source.delivery_mode = 2;
  eventd::OwnedProperties owned(source);
  // The frame's buffers are reused for the next frame: the copy must not follow them.
  for (std::string* s : {&id, &type, &corr, &reply, &content_type}) std::fill(s->begin(), s->end(), 'x');
  auto check = [](const eventd::OwnedProperties& p) {
    CHECK(p.message_id() == "4f7c2a10-0000-4000-8000-000000000001");
    CHECK(p.type() == "quote_update");
    CHECK(p.correlation_id() == "c-1");
    CHECK(p.reply_to() == "r.q");
    CHECK(std::string_view(static_cast<const char*>(p.get().content_type.bytes), p.get().content_type.len) ==
          "application/json");
    CHECK(p.get().app_id.len == 0);
    CHECK(p.get().delivery_mode == 2);
    CHECK(p.headers() == nullptr);
  };
  check(owned);
  eventd::OwnedProperties moved(std::move(owned));
  check(moved);
  eventd::OwnedProperties assigned;
  assigned = std::move(moved);
  check(assigned);
  assigned = eventd::OwnedProperties(source);  // replaced: the old copy's memory goes
  CHECK(assigned.message_id() == std::string(id.size(), 'x'));
}
