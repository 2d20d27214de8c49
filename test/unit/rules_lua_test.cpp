// The rule logic the handler scripts run inside Redis (rules_lua.hpp), loaded into
// Lua 5.1, the interpreter Redis embeds: edge-triggering, cooldown, token bucket.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "eventd/handlers/rules_lua.hpp"
#include "lua_chunk.hpp"

namespace {

// The library's functions, called by name from the table the chunk returns.
class RulesLua : public eventd::test::LuaChunk {
 public:
  RulesLua()
      : LuaChunk(std::string(eventd::kRulesLua) +
                     "return {exact = exact, crossed_range = crossed_range, change_percent = change_percent,"
                     " cooldown_over = cooldown_over, bucket_take = bucket_take, portfolio_fires = portfolio_fires}",
                 "rules_lua") {}

  // Score bounds in ZRANGEBYSCORE syntax, or nullopt for "no rule can have crossed".
  std::optional<std::pair<std::string, std::string>> crossed_range(double from, double to, bool upward) {
    push("crossed_range");
    lua_pushnumber(L(), from);
    lua_pushnumber(L(), to);
    lua_pushboolean(L(), upward);
    call(3, 2);
    std::optional<std::pair<std::string, std::string>> out;
    if (!lua_isnil(L(), -2)) out.emplace(lua_tostring(L(), -2), lua_tostring(L(), -1));
    lua_pop(L(), 2);
    return out;
  }

  std::optional<double> change_percent(double price, double change) {
    push("change_percent");
    lua_pushnumber(L(), price);
    lua_pushnumber(L(), change);
    call(2, 1);
    std::optional<double> out;
    if (!lua_isnil(L(), -1)) out = lua_tonumber(L(), -1);
    lua_pop(L(), 1);
    return out;
  }

  bool cooldown_over(std::optional<double> last_ms, double now_ms, std::optional<double> cooldown_sec) {
    push("cooldown_over");
    push_optional(last_ms);
    lua_pushnumber(L(), now_ms);
    push_optional(cooldown_sec);
    call(3, 1);
    bool out = lua_toboolean(L(), -1) != 0;
    lua_pop(L(), 1);
    return out;
  }

  bool portfolio_fires(bool held_before, bool holds, std::optional<double> last_ms, double now_ms,
                       std::optional<double> cooldown_sec) {
    push("portfolio_fires");
    lua_pushboolean(L(), held_before);
    lua_pushboolean(L(), holds);
    push_optional(last_ms);
    lua_pushnumber(L(), now_ms);
    push_optional(cooldown_sec);
    call(5, 1);
    bool out = lua_toboolean(L(), -1) != 0;
    lua_pop(L(), 1);
    return out;
  }

  struct Bucket {
    std::optional<double> tokens;
    std::optional<double> ts;
  };
  // Takes a token: the wait in ms (0 = taken), and `bucket` updated as the script
  // stores it (only when a token was taken).
  double take(Bucket& bucket, double now, double per_minute, double burst) {
    push("bucket_take");
    push_optional(bucket.tokens);
    push_optional(bucket.ts);
    lua_pushnumber(L(), now);
    lua_pushnumber(L(), per_minute);
    lua_pushnumber(L(), burst);
    call(5, 3);
    double wait = lua_tonumber(L(), -3);
    if (wait == 0) bucket = {lua_tonumber(L(), -2), lua_tonumber(L(), -1)};
    lua_pop(L(), 3);
    return wait;
  }

  std::string exact(double x) {
    push("exact");
    lua_pushnumber(L(), x);
    call(1, 1);
    std::string out = lua_tostring(L(), -1);
    lua_pop(L(), 1);
    return out;
  }

 private:
  void push_optional(std::optional<double> v) {
    if (v) lua_pushnumber(L(), *v);
    else lua_pushnil(L());
  }
};

// Does a score fall inside ZRANGEBYSCORE bounds ("(" = exclusive)?
bool in_bounds(double score, const std::pair<std::string, std::string>& bounds) {
  auto parse = [](const std::string& b) {
    bool open = !b.empty() && b[0] == '(';
    return std::pair{std::stod(open ? b.substr(1) : b), open};
  };
  auto [min, min_open] = parse(bounds.first);
  auto [max, max_open] = parse(bounds.second);
  bool above_min = min_open ? score > min : score >= min;
  bool below_max = max_open ? score < max : score <= max;
  return above_min && below_max;
}

// The indices of the moves in `prices` (i: prices[i-1] -> prices[i]) that select a
// rule with `threshold` as the quote script does: one range query per condition.
std::vector<size_t> firing_moves(RulesLua& lua, const std::vector<double>& prices, double threshold, bool upward) {
  std::vector<size_t> fired;
  for (size_t i = 1; i < prices.size(); ++i) {
    auto bounds = lua.crossed_range(prices[i - 1], prices[i], upward);
    if (bounds && in_bounds(threshold, *bounds)) fired.push_back(i);
  }
  return fired;
}

}  // namespace

TEST_CASE("edge-triggering: price_above fires on the move that crosses above, not on every tick beyond") {
  RulesLua lua;
  //                      0    1      2      3      4     5      6      7
  std::vector<double> p{99.0, 100.0, 101.0, 102.0, 103.0, 99.5, 100.5, 100.5};
  // 99 -> 100 is not above 100; 100 -> 101 crosses; 101..103 stay above; back under at
  // 5; 99.5 -> 100.5 crosses again; an unchanged price crosses nothing.
  CHECK(firing_moves(lua, p, 100.0, true) == std::vector<size_t>{2, 6});
  // A jump over several thresholds selects each of them once.
  for (double t : {100.0, 150.0, 199.99}) CHECK(firing_moves(lua, {100.0, 200.0}, t, true) == std::vector<size_t>{1});
  CHECK(firing_moves(lua, {100.0, 200.0}, 200.0, true).empty());  // 200 is not above 200
  CHECK(firing_moves(lua, {100.0, 200.0}, 99.99, true).empty());  // was above already
}

TEST_CASE("edge-triggering: price_below fires on the move that crosses below") {
  RulesLua lua;
  std::vector<double> p{101.0, 100.0, 99.0, 98.0, 100.0, 99.99};
  // 101 -> 100 is not below 100; 100 -> 99 crosses; 99 -> 98 stays below; back up to 100
  // (not below), then 100 -> 99.99 crosses again.
  CHECK(firing_moves(lua, p, 100.0, false) == std::vector<size_t>{2, 5});
  CHECK(firing_moves(lua, {100.0, 100.0}, 100.0, false).empty());
  CHECK(!lua.crossed_range(50.0, 50.0, false));
  CHECK(!lua.crossed_range(50.0, 60.0, false));  // a rise crosses nothing downward
  CHECK(!lua.crossed_range(60.0, 50.0, true));   // a fall crosses nothing upward
}

TEST_CASE("edge-triggering: bounds are exact for thresholds that are not short decimals") {
  RulesLua lua;
  const double t = 0.1 + 0.2;  // 0.30000000000000004
  CHECK(std::stod(lua.exact(t)) == t);
  CHECK(firing_moves(lua, {0.3, t}, t, true).empty());              // reaching T is not above T
  CHECK(firing_moves(lua, {0.3, std::nextafter(t, 1.0)}, t, true) == std::vector<size_t>{1});
  CHECK(firing_moves(lua, {0.3, std::nextafter(t, 1.0)}, 0.3, true) == std::vector<size_t>{1});
}

TEST_CASE("change percent is relative to the previous close") {
  RulesLua lua;
  CHECK(*lua.change_percent(110.0, 10.0) == doctest::Approx(10.0));  // close 100
  CHECK(*lua.change_percent(95.0, -5.0) == doctest::Approx(-5.0));
  CHECK(!lua.change_percent(10.0, 10.0));  // close 0: no percentage, no change_pct rule fires
  const double inf = std::numeric_limits<double>::infinity();
  CHECK(!lua.change_percent(inf, inf));  // not finite: nothing to compare, nothing to encode
}

TEST_CASE("cooldown: a rule that fired stays quiet for cooldownSec of quote time") {
  RulesLua lua;
  const double fired_at = 1'700'000'000'000.0;
  CHECK(lua.cooldown_over(std::nullopt, fired_at, 60.0));              // never fired
  CHECK_FALSE(lua.cooldown_over(fired_at, fired_at + 59'999, 60.0));   // within the minute
  CHECK(lua.cooldown_over(fired_at, fired_at + 60'000, 60.0));         // exactly after it
  CHECK(lua.cooldown_over(fired_at, fired_at, std::nullopt));          // no cooldown
  CHECK(lua.cooldown_over(fired_at, fired_at + 1, 0.0));
}

TEST_CASE("edge-triggering with cooldown: crossings inside the cooldown are swallowed") {
  // The script's loop for one price_above 100 rule with a 60 s cooldown.
  RulesLua lua;
  struct Quote {
    double ts_ms, price;
  };
  std::vector<Quote> quotes{{0, 99}, {1000, 101}, {2000, 99}, {3000, 101}, {61'000, 99}, {62'000, 101}};
  std::optional<double> last_fired;
  std::vector<double> fired_at;
  for (size_t i = 1; i < quotes.size(); ++i) {
    auto bounds = lua.crossed_range(quotes[i - 1].price, quotes[i].price, true);
    if (!bounds || !in_bounds(100.0, *bounds)) continue;
    if (!lua.cooldown_over(last_fired, quotes[i].ts_ms, 60.0)) continue;
    last_fired = quotes[i].ts_ms;
    fired_at.push_back(quotes[i].ts_ms);
  }
  // The second crossing (3 s) is inside the cooldown; the third (62 s) is after it.
  CHECK(fired_at == std::vector<double>{1000, 62'000});
}

TEST_CASE("portfolio rules: fire when a check finds the condition newly true, not while it holds") {
  RulesLua lua;
  CHECK(lua.portfolio_fires(false, true, std::nullopt, 1000, 0.0));   // newly true (or the first check)
  CHECK_FALSE(lua.portfolio_fires(true, true, 1000.0, 2000, 0.0));    // still true
  CHECK_FALSE(lua.portfolio_fires(false, false, std::nullopt, 3000, 0.0));
  CHECK_FALSE(lua.portfolio_fires(true, false, 1000.0, 3000, 0.0));   // back to false
  CHECK(lua.portfolio_fires(false, true, 1000.0, 4000, std::nullopt));  // true again, no cooldown
}

TEST_CASE("portfolio rules: the check loop with a cooldown swallows a flip inside it") {
  // What the check function does for one rule with a 60 s cooldown, check after check.
  RulesLua lua;
  struct Check {
    double now_ms;
    bool holds;
  };
  std::vector<Check> checks{{0, true}, {1000, true}, {2000, false}, {3000, true}, {61'000, true},
                            {62'000, false}, {63'000, true}};
  bool held = false;
  std::optional<double> last_fired;
  std::vector<double> fired_at;
  for (const Check& c : checks) {
    if (lua.portfolio_fires(held, c.holds, last_fired, c.now_ms, 60.0)) {
      last_fired = c.now_ms;
      fired_at.push_back(c.now_ms);
    }
    held = c.holds;
  }
  // 3 s: newly true but inside the cooldown; 61 s: still true; 63 s: newly true after it.
  CHECK(fired_at == std::vector<double>{0, 63'000});
}

TEST_CASE("rate limit: token bucket with burst, continuous refill, and the wait it asks for") {
  RulesLua lua;
  RulesLua::Bucket b;  // new user/channel: a full bucket
  const double per_minute = 60, burst = 3;
  for (int i = 0; i < 3; ++i) CHECK(lua.take(b, 0, per_minute, burst) == 0);
  CHECK(*b.tokens == doctest::Approx(0.0));
  CHECK(lua.take(b, 0, per_minute, burst) == 1000);    // one token a second
  CHECK(lua.take(b, 500, per_minute, burst) == 500);   // refilled half a token so far
  CHECK(lua.take(b, 1000, per_minute, burst) == 0);    // refilled one
  CHECK(*b.ts == 1000);
  // After a long idle the bucket holds burst, not more.
  for (int i = 0; i < 3; ++i) CHECK(lua.take(b, 3'600'000, per_minute, burst) == 0);
  CHECK(lua.take(b, 3'600'000, per_minute, burst) > 0);
}

TEST_CASE("rate limit: instances with clocks slightly behind never mint tokens") {
  RulesLua lua;
  RulesLua::Bucket b;
  CHECK(lua.take(b, 10'000, 60, 1) == 0);
  // Another instance's clock is 500 ms behind: no refill for negative time, ts kept.
  CHECK(lua.take(b, 9'500, 60, 1) == 1000);
  CHECK(lua.take(b, 10'500, 60, 1) == 500);
  CHECK(lua.take(b, 11'000, 60, 1) == 0);
  CHECK(*b.ts == 11'000);
}
