// Pure decision logic of the handler scripts, in Lua because it must run inside the
// one script a message costs (one Redis round trip). No redis.call in here: the
// unit tests load this very text into Lua 5.1 (Redis's version) and check it.
#pragma once

namespace eventd {

// exact(x): a number as a string that reads back as the same double (score bounds).
// crossed_range(from, to, upward): the ZRANGEBYSCORE bounds of the thresholds that a
//   move from `from` to `to` crossed into, or nil. Edge-triggered: "above T" fires on
//   the move with from <= T < to, never again while the value stays above T; "below T"
//   on to < T <= from.
// change_percent(price, change): the day's change in percent of the previous close,
//   or nil when that close is 0 or the percentage is not finite.
// cooldown_over(last_ms, now_ms, cooldown_sec): may a rule that last fired at last_ms
//   (nil: never) fire again at now_ms?
// portfolio_fires(held_before, holds, last_ms, now_ms, cooldown_sec): does a portfolio
//   rule fire at a check that finds its condition `holds`, when the check before found
//   `held_before` (false as well when there was none)? Edge-triggered like the price
//   rules: only when the condition is newly true, and not within the cooldown.
// bucket_take(tokens, ts, now, per_minute, burst): token bucket refilled continuously
//   at per_minute, holding at most burst, state (tokens, ts) nil when new. Returns the
//   ms to wait (0: a token was taken) and the state to store after taking one.
inline constexpr const char* kRulesLua = R"lua(
local function exact(x) return string.format('%.17g', x) end
local function crossed_range(from, to, upward)
  if upward and to > from then return exact(from), '(' .. exact(to) end
  if not upward and to < from then return '(' .. exact(to), exact(from) end
  return nil
end
local function change_percent(price, change)
  local close = price - change
  if close == 0 then return nil end
  local pct = change / close * 100
  if pct ~= pct or pct == math.huge or pct == -math.huge then return nil end
  return pct
end
local function cooldown_over(last_ms, now_ms, cooldown_sec)
  return last_ms == nil or now_ms - last_ms >= (cooldown_sec or 0) * 1000
end
local function portfolio_fires(held_before, holds, last_ms, now_ms, cooldown_sec)
  return holds and not held_before and cooldown_over(last_ms, now_ms, cooldown_sec)
end
local function bucket_take(tokens, ts, now, per_minute, burst)
  tokens = tokens or burst
  ts = ts or now
  if now > ts then tokens = math.min(burst, tokens + (now - ts) * per_minute / 60000) end
  if tokens < 1 then return math.ceil((1 - tokens) * 60000 / per_minute), tokens, ts end
  return 0, tokens - 1, math.max(now, ts)
end
)lua";

}  // namespace eventd
