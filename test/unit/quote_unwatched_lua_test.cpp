// The cheap quote function (quote_update.cpp) in Lua 5.1, the interpreter Redis embeds,
// against a fake of the five commands it runs: it must leave everything as it was
// whenever it does not store a quote, and answer every message of a batch on its own.
#include <doctest/doctest.h>

#include <optional>
#include <string>
#include <vector>

#include "eventd/handlers/quote_update.hpp"
#include "eventd/keys.hpp"
#include "eventd/redis/call_layout.hpp"
#include "eventd/stored_quote.hpp"
#include "lua_chunk.hpp"

namespace {

// db[key] = {t = 'string' | 'list' | 'hash', v = value}; replies as Redis hands them to
// Lua (nil bulk -> false, errors -> {err = ...}).
constexpr const char* kFakeRedis = R"lua(
local db = {}
local function wrongtype() return {err = 'WRONGTYPE Operation against a key holding the wrong kind of value'} end
redis = {}
function redis.pcall(cmd, key, ...)
  local a, e = {...}, db[key]
  if cmd == 'SET' then
    local nx, get, i = false, false, 2
    while a[i] do
      if a[i] == 'NX' then nx = true elseif a[i] == 'GET' then get = true elseif a[i] == 'EX' then i = i + 1 end
      i = i + 1
    end
    if get and e and e.t ~= 'string' then return wrongtype() end
    local old = (e and e.v) or false
    if nx and e then return old end
    db[key] = {t = 'string', v = a[1]}
    if get then return old end
    return {ok = 'OK'}
  elseif cmd == 'RPUSH' then
    if e and e.t ~= 'list' then return wrongtype() end
    if not e then e = {t = 'list', v = {}}; db[key] = e end
    for _, x in ipairs(a) do e.v[#e.v + 1] = x end
    return #e.v
  elseif cmd == 'LTRIM' then  -- the function's form: LTRIM key -N -1
    local keep = {}
    for j = math.max(#e.v + tonumber(a[1]) + 1, 1), #e.v do keep[#keep + 1] = e.v[j] end
    e.v = keep
    return {ok = 'OK'}
  elseif cmd == 'DEL' then
    db[key] = nil
    return 1
  end
  error('the fake has no ' .. cmd)
end
local function put(t, key, value)
  if t == 'list' then
    local v = {}
    for x in string.gmatch(value, '[^,]+') do v[#v + 1] = x end
    value = v
  end
  db[key] = {t = t, v = value}
end
-- 'none', or the type and the value as text (a list joined by commas).
local function read(key)
  local e = db[key]
  if not e then return 'none' end
  if e.t == 'list' then return 'list ' .. table.concat(e.v, ',') end
  if e.t == 'hash' then return 'hash' end
  return 'string ' .. e.v
end
)lua";

struct Quote {
  std::string symbol, id;
  double price, change;
  int64_t ts;
};

using eventd::keys::history;
using eventd::keys::quote;

// Items as the handler makes them (unwatched_quote_item), with idempotency keys
// shortened to idem:<id>. Shared: ttl 60, history length 3, trimmed once 4 long.
class CheapQuote : public eventd::test::LuaChunk {
 public:
  CheapQuote()
      : LuaChunk(std::string(kFakeRedis) + eventd::stored_quote_lua() + eventd::QuoteUpdateHandler::unwatched_lua() +
                     "return {run = quote_unwatched, put = put, read = read}",
                 "quote_unwatched") {}

  // One result per quote, in the quotes' order: "1", "0", "9", or "error" for an error
  // reply. The call laid out as the Batcher lays it out (call_layout.hpp).
  std::vector<std::string> run(const std::vector<Quote>& quotes) {
    std::vector<eventd::UnwatchedQuoteItem> made;
    for (const Quote& q : quotes) made.push_back(eventd::unwatched_quote_item("idem:" + q.id, q.symbol, q.price, q.change, q.ts));
    std::vector<eventd::redis::CallItem> items;
    for (const auto& m : made) items.push_back({m.keys, m.args, &m.run_args, m.rank});
    const std::vector<std::string> shared{"60", "3", "4"};
    const eventd::redis::CallLayout layout(items, shared, 2);
    push("run");
    for (const auto* list : {&layout.keys(), &layout.args()}) {
      lua_newtable(L());
      int i = 0;
      for (std::string_view v : *list) {
        lua_pushlstring(L(), v.data(), v.size());
        lua_rawseti(L(), -2, ++i);
      }
    }
    call(2, 1);  // a raise fails the test
    std::vector<std::string> out(quotes.size());
    for (std::size_t i = 0; i < quotes.size(); ++i) {
      lua_rawgeti(L(), -1, static_cast<int>(i + 1));
      std::string& result = out[layout.order()[i]];
      if (lua_istable(L(), -1)) {
        lua_getfield(L(), -1, "err");
        result = lua_isstring(L(), -1) ? "error" : "table";
        lua_pop(L(), 1);
      } else {
        result = lua_tostring(L(), -1) ? lua_tostring(L(), -1) : "nil";
      }
      lua_pop(L(), 1);
    }
    lua_pop(L(), 1);
    return out;
  }

  void put(const char* type, const std::string& key, const std::string& value) {
    push("put");
    lua_pushstring(L(), type);
    lua_pushstring(L(), key.c_str());
    lua_pushstring(L(), value.c_str());
    call(3, 0);
  }

  std::string read(const std::string& key) {
    push("read");
    lua_pushstring(L(), key.c_str());
    call(1, 1);
    std::string out = lua_tostring(L(), -1);
    lua_pop(L(), 1);
    return out;
  }

};

}  // namespace

TEST_CASE("cheap quote function: a new quote, its duplicate, a late quote, the trim") {
  CheapQuote f;
  CHECK(f.run({{"A", "m1", 10, 0.5, 1000}}) == std::vector<std::string>{"1"});
  CHECK(f.read("idem:m1") == "string 1");
  CHECK(f.read(quote("A")) == "string 1000 10 0.5");
  CHECK(f.read(history("A")) == "list 10");

  CHECK(f.run({{"A", "m1", 10, 0.5, 1000}}) == std::vector<std::string>{"0"});  // one SET NX, nothing else
  CHECK(f.read(history("A")) == "list 10");

  // Older than the stored one: to the history only, the newer quote stays.
  CHECK(f.run({{"A", "m0", 9, 0.1, 900}}) == std::vector<std::string>{"1"});
  CHECK(f.read(quote("A")) == "string 1000 10 0.5");
  CHECK(f.read(history("A")) == "list 10,9");

  // Trimmed back to the history length once longer than "trim at".
  CHECK(f.run({{"A", "m2", 11, 0, 1100}, {"A", "m3", 12, 0, 1200}, {"A", "m4", 13, 0, 1300}}) ==
        std::vector<std::string>{"1", "1", "1"});
  CHECK(f.read(history("A")) == "list 11,12,13");
  CHECK(f.read(quote("A")) == "string 1300 13 0");
}

TEST_CASE("cheap quote function: a quote it hands on leaves everything as it was") {
  CheapQuote f;
  // The symbol has rules: its quotes are the other function's.
  f.put("string", quote("R"), "1000 10 0.5 rules");
  CHECK(f.run({{"R", "r1", 11, 0, 1100}}) == std::vector<std::string>{"9"});
  CHECK(f.read(quote("R")) == "string 1000 10 0.5 rules");
  CHECK(f.read("idem:r1") == "none");
  CHECK(f.read(history("R")) == "none");
  f.put("string", quote("M"), "rules");  // rules, no quote yet
  CHECK(f.run({{"M", "r2", 11, 0, 1100}}) == std::vector<std::string>{"9"});
  CHECK(f.read(quote("M")) == "string rules");
  CHECK(f.read("idem:r2") == "none");

  // A pending outbox: only the other function publishes it.
  f.put("string", "idem:p1", "pending");
  CHECK(f.run({{"P", "p1", 5, 0, 1000}}) == std::vector<std::string>{"9"});
  CHECK(f.read("idem:p1") == "string pending");
  CHECK(f.read(quote("P")) == "none");

  // An older eventd's quote hash: the other function converts it.
  f.put("hash", quote("H"), "");
  CHECK(f.run({{"H", "h1", 5, 0, 1000}}) == std::vector<std::string>{"9"});
  CHECK(f.read(quote("H")) == "hash");
  CHECK(f.read("idem:h1") == "none");
  CHECK(f.read(history("H")) == "none");
}

TEST_CASE("cheap quote function: a failed push puts the quote back, and fails only its own message") {
  CheapQuote f;
  f.put("string", quote("W"), "1000 10 0.5");
  f.put("string", history("W"), "not a list");
  f.put("string", history("N"), "not a list");
  const auto results = f.run({{"OK", "o1", 1, 0, 1000},
                              {"W", "w1", 11, 0, 1100},
                              {"N", "n1", 7, 0, 1000},
                              {"OK", "o2", 2, 0, 1100}});
  CHECK(results == std::vector<std::string>{"1", "error", "error", "1"});
  CHECK(f.read(quote("W")) == "string 1000 10 0.5");  // as it was
  CHECK(f.read(quote("N")) == "none");                // it had none
  CHECK(f.read("idem:w1") == "none");
  CHECK(f.read("idem:n1") == "none");
  CHECK(f.read(quote("OK")) == "string 1100 2 0");
  CHECK(f.read(history("OK")) == "list 1,2");

  // A stored value that is not a quote is replaced, not a reason to fail.
  f.put("string", quote("G"), "garbage");
  CHECK(f.run({{"G", "g1", 3, 0, 1000}}) == std::vector<std::string>{"1"});
  CHECK(f.read(quote("G")) == "string 1000 3 0");
}

TEST_CASE("cheap quote function: a symbol's quotes in one call are stored as if one after the other") {
  CheapQuote f;
  // Message order into the history; the newest by timestamp (1200, not the last) stored;
  // the same message twice in one call counts once.
  CHECK(f.run({{"A", "m1", 10, 0, 1000},
               {"A", "m2", 11, 0.5, 1200},
               {"B", "b1", 5, 0, 1000},
               {"A", "m3", 12, 0, 1100},
               {"A", "m2", 11, 0.5, 1200}}) == std::vector<std::string>{"1", "1", "1", "1", "0"});
  CHECK(f.read(history("A")) == "list 10,11,12");
  CHECK(f.read(quote("A")) == "string 1200 11 0.5");
  CHECK(f.read(history("B")) == "list 5");
  CHECK(f.read(quote("B")) == "string 1000 5 0");
  for (const char* id : {"m1", "m2", "m3", "b1"}) CHECK(f.read(std::string("idem:") + id) == "string 1");

  // Of equal timestamps the last wins, as when each replaces the one before.
  CHECK(f.run({{"E", "e1", 1, 0, 1000}, {"E", "e2", 2, 0, 1000}}) == std::vector<std::string>{"1", "1"});
  CHECK(f.read(quote("E")) == "string 1000 2 0");

  // The newest of a call that is itself a duplicate: what it stored stays.
  CHECK(f.run({{"A", "d1", 7, 0, 1150}, {"A", "m2", 11, 0.5, 1200}}) == std::vector<std::string>{"1", "0"});
  CHECK(f.read(quote("A")) == "string 1200 11 0.5");
  CHECK(f.read(history("A")) == "list 10,11,12,7");

  // A call whose quotes are all older than the stored one: history only.
  CHECK(f.run({{"A", "l1", 8, 0, 900}, {"A", "l2", 9, 0, 950}}) == std::vector<std::string>{"1", "1"});
  CHECK(f.read(quote("A")) == "string 1200 11 0.5");
  CHECK(f.read(history("A")) == "list 7,8,9");  // 5 long: trimmed back to 3
}

TEST_CASE("cheap quote function: a symbol handed on or failed takes all its quotes of the call, and only them") {
  CheapQuote f;
  f.put("string", quote("R"), "1000 10 0.5 rules");
  f.put("string", quote("W"), "1000 10 0.5");
  f.put("string", history("W"), "not a list");
  const auto results = f.run({{"R", "r1", 11, 0, 1100},
                              {"W", "w1", 12, 0, 1100},
                              {"OK", "o1", 1, 0, 1000},
                              {"R", "r2", 13, 0, 1200},
                              {"W", "w2", 14, 0, 1200}});
  CHECK(results == std::vector<std::string>{"9", "error", "1", "9", "error"});
  CHECK(f.read(quote("R")) == "string 1000 10 0.5 rules");
  CHECK(f.read(quote("W")) == "string 1000 10 0.5");
  CHECK(f.read(history("R")) == "none");
  for (const char* id : {"r1", "r2", "w1", "w2"}) CHECK(f.read(std::string("idem:") + id) == "none");
  CHECK(f.read(quote("OK")) == "string 1000 1 0");
  CHECK(f.read("idem:o1") == "string 1");
}
