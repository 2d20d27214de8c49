// The stored quote's format (stored_quote.hpp), as C++ reads it and as the functions'
// Lua (run here in Lua 5.1, the interpreter Redis embeds) writes and reads it.
#include <doctest/doctest.h>

#include <array>
#include <optional>
#include <string>

#include "eventd/stored_quote.hpp"
#include "lua_chunk.hpp"

namespace {

// quote_value and quote_fields from the helpers' chunk.
class StoredQuoteLua : public eventd::test::LuaChunk {
 public:
  StoredQuoteLua()
      : LuaChunk(eventd::stored_quote_lua() +
                     "return {quote_value = quote_value, quote_fields = quote_fields, mark_byte = QUOTE_MARK_BYTE}",
                 "stored_quote_lua") {}

  // nullopt for the function's nil.
  std::optional<std::string> value(const char* ts, const char* price, const char* change, bool marked) {
    push("quote_value");
    push_string(ts);
    push_string(price);
    push_string(change);
    lua_pushboolean(L(), marked);
    call(4, 1);
    std::optional<std::string> out;
    if (!lua_isnil(L(), -1)) out = lua_tostring(L(), -1);
    lua_pop(L(), 1);
    return out;
  }

  struct Fields {
    std::optional<std::string> ts, price, change;
    bool marked = false;
  };
  Fields fields(const std::optional<std::string>& value) {
    push("quote_fields");
    if (value) lua_pushlstring(L(), value->data(), value->size());
    else lua_pushboolean(L(), 0);  // Redis hands Lua a missing key as false
    call(1, 4);
    Fields out;
    auto get = [this](int i) {
      return lua_isnil(L(), i) ? std::optional<std::string>() : std::optional<std::string>(lua_tostring(L(), i));
    };
    out.ts = get(-4);
    out.price = get(-3);
    out.change = get(-2);
    out.marked = lua_toboolean(L(), -1) != 0;
    lua_pop(L(), 4);
    return out;
  }

  int mark_byte() {
    push("mark_byte");
    int out = static_cast<int>(lua_tointeger(L(), -1));
    lua_pop(L(), 1);
    return out;
  }

 private:
  void push_string(const char* s) {
    if (s) lua_pushstring(L(), s);
    else lua_pushnil(L());
  }
};

}  // namespace

TEST_CASE("stored quote: C++ reads the quote, the mark and neither") {
  auto q = eventd::parse_stored_quote("1700000000123 187.25 -1.5");
  REQUIRE(q.quote);
  CHECK(q.quote->timestamp_ms == 1700000000123);
  CHECK(q.quote->price == 187.25);
  CHECK(q.quote->change == -1.5);
  CHECK_FALSE(q.has_rules);

  q = eventd::parse_stored_quote("1700000000123 187.25 -1.5 rules");
  REQUIRE(q.quote);
  CHECK(q.quote->price == 187.25);
  CHECK(q.has_rules);

  q = eventd::parse_stored_quote("rules");
  CHECK_FALSE(q.quote);
  CHECK(q.has_rules);

  for (const char* bad : {"", "1700 12", "x 1 2", "1700 abc 2", "1700 1 2x", "1700  1 2"}) {
    CAPTURE(bad);
    CHECK_FALSE(eventd::parse_stored_quote(bad).quote);
    CHECK_FALSE(eventd::parse_stored_quote(bad).has_rules);
  }
}

TEST_CASE("stored quote: what the Lua writes, C++ and the Lua read back") {
  StoredQuoteLua lua;
  for (bool marked : {false, true}) {
    CAPTURE(marked);
    const auto value = lua.value("1700000000123", "187.25", "-1.5", marked);
    REQUIRE(value);
    const auto cpp = eventd::parse_stored_quote(*value);
    REQUIRE(cpp.quote);
    CHECK(cpp.quote->timestamp_ms == 1700000000123);
    CHECK(cpp.quote->price == 187.25);
    CHECK(cpp.quote->change == -1.5);
    CHECK(cpp.has_rules == marked);
    // The hot path's test for the mark: the last byte.
    CHECK((static_cast<unsigned char>(value->back()) == lua.mark_byte()) == marked);

    const auto f = lua.fields(value);
    CHECK(f.ts == "1700000000123");
    CHECK(f.price == "187.25");
    CHECK(f.change == "-1.5");
    CHECK(f.marked == marked);
  }
}

TEST_CASE("stored quote: the mark without a quote, and no value at all") {
  StoredQuoteLua lua;
  const auto mark_only = lua.value(nullptr, nullptr, nullptr, true);
  REQUIRE(mark_only);
  CHECK(eventd::parse_stored_quote(*mark_only).has_rules);
  CHECK_FALSE(eventd::parse_stored_quote(*mark_only).quote);
  CHECK(static_cast<unsigned char>(mark_only->back()) == lua.mark_byte());
  auto f = lua.fields(mark_only);
  CHECK_FALSE(f.ts);
  CHECK(f.marked);

  CHECK_FALSE(lua.value(nullptr, nullptr, nullptr, false));  // nothing to store: the key goes
  f = lua.fields(std::nullopt);
  CHECK_FALSE(f.ts);
  CHECK_FALSE(f.marked);
}

TEST_CASE("stored quote: an older eventd's hash reads as the same quote") {
  using F = std::array<std::optional<std::string_view>, 3>;  // kLegacyQuoteFields: timestamp, price, change
  static_assert(eventd::kLegacyQuoteFields[0] == "timestamp" && eventd::kLegacyQuoteFields[1] == "price");
  auto q = eventd::parse_legacy_quote(F{"1700000000123", "187.25", "-1.5"});
  REQUIRE(q.quote);
  CHECK(q.quote->timestamp_ms == 1700000000123);
  CHECK(q.quote->price == 187.25);
  CHECK(q.quote->change == -1.5);
  q = eventd::parse_legacy_quote(F{"1700000000123", "187.25", std::nullopt});  // no change: 0, as before
  REQUIRE(q.quote);
  CHECK(q.quote->change == 0);
  CHECK_FALSE(eventd::parse_legacy_quote(F{std::nullopt, "187.25", "0"}).quote);
  CHECK_FALSE(eventd::parse_legacy_quote(F{"1700", std::nullopt, "0"}).quote);
  CHECK_FALSE(eventd::parse_legacy_quote(F{"1700", "a b", "0"}).quote);
}
