// The stored quote's format (see stored_quote.hpp).
#include "eventd/stored_quote.hpp"

#include <charconv>
#include <cstdlib>

#include "eventd/keys.hpp"
#include "eventd/text.hpp"

namespace eventd {
namespace {

// Lua 5.1 in Redis: a missing key or field reads as false, not nil.
constexpr const char* kStoredQuoteLua = R"lua(
local QUOTE_MARK = '@rules'
-- Numbers end in a digit, the mark in a letter: its last byte (a library's top level
-- cannot call string.byte).
local QUOTE_MARK_BYTE = @mark_byte
local function quote_fields(value)
  if not value then return nil, nil, nil, false end
  local ts, price, change, rest = string.match(value, '^(%S+) (%S+) (%S+)(.*)$')
  if not ts then return nil, nil, nil, value == QUOTE_MARK end
  return ts, price, change, rest == ' ' .. QUOTE_MARK
end
-- Cheaper than quote_fields where only these are wanted (the hot path):
local function quote_marked(value) return string.byte(value, -1) == QUOTE_MARK_BYTE end
local function quote_ts(value) return tonumber(string.match(value, '^%S+')) end
local function quote_value(ts, price, change, marked)
  if not ts then
    if marked then return QUOTE_MARK end
    return nil
  end
  local value = ts .. ' ' .. price .. ' ' .. change
  if marked then return value .. ' ' .. QUOTE_MARK end
  return value
end
local function read_quote(key)
  local value = redis.pcall('GET', key)
  if type(value) == 'table' then
    -- WRONGTYPE: a hash (price, change, timestamp, rules) of an older eventd. Anything
    -- else fails the HMGET, before any write.
    local h = redis.call('HMGET', key, 'timestamp', 'price', 'change', QUOTE_MARK)
    value = quote_value(h[1], h[2], h[3] or '0', h[4] ~= false)
    redis.call('DEL', key)
    if value then redis.call('SET', key, value) end
  end
  return quote_fields(value)
end
)lua";

// All of `text` as a number.
template <typename Number>
bool parse_whole(std::string_view text, Number& out) {
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size();
}

// The next space-separated word of `rest`, taken off it.
std::string_view next_word(std::string_view& rest) {
  const std::size_t space = rest.find(' ');
  std::string_view word = rest.substr(0, space);
  rest = space == std::string_view::npos ? std::string_view() : rest.substr(space + 1);
  return word;
}

}  // namespace

StoredQuote parse_stored_quote(std::string_view value) {
  StoredQuote out;
  if (value == keys::kQuoteHasRules) {
    out.has_rules = true;
    return out;
  }
  std::string_view rest = value;
  portfolio::Quote q;
  if (!parse_whole(next_word(rest), q.timestamp_ms) || !parse_whole(next_word(rest), q.price) ||
      !parse_whole(next_word(rest), q.change)) {
    return out;
  }
  out.quote = q;
  out.has_rules = rest == keys::kQuoteHasRules;  // as quote_fields: anything else after it is ignored
  return out;
}

StoredQuote parse_legacy_quote(const std::array<std::optional<std::string_view>, 3>& fields) {
  if (!fields[0] || !fields[1]) return {};
  std::string value(*fields[0]);
  value += ' ';
  value += *fields[1];
  value += ' ';
  value += fields[2] ? *fields[2] : "0";
  return parse_stored_quote(value);
}

const std::string& read_quote_script() {
  static const std::string script = stored_quote_lua() + "read_quote(KEYS[1])\nreturn redis.call('GET', KEYS[1])\n";
  return script;
}

const std::string& stored_quote_lua() {
  static const std::string lua =
      replace_all(replace_all(kStoredQuoteLua, "@rules", keys::kQuoteHasRules), "@mark_byte",
                  std::to_string(static_cast<unsigned char>(keys::kQuoteHasRules.back())));
  return lua;
}

}  // namespace eventd
