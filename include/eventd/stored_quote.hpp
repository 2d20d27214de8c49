// A symbol's latest quote as Redis stores it (keys::quote): one string
//   "<timestamp ms> <price> <change>"
// followed by " rules" (keys::kQuoteHasRules) while the symbol has rules, or "rules"
// alone when it has rules and no quote yet. One string, not a hash, because the hot
// path reads and replaces it with one `SET ... GET`. Spelled here in both languages
// that read it: C++ (eventctl, portfolio checks) and the Lua of the functions.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>

#include "eventd/portfolio.hpp"

namespace eventd {

struct StoredQuote {
  std::optional<portfolio::Quote> quote;  // none before the symbol's first quote
  bool has_rules = false;
};

// A value that is not a stored quote reads as no quote.
StoredQuote parse_stored_quote(std::string_view value);

// Before 2026-12 the quote was a hash; eventd converts one at the symbol's next quote.
// Until then readers that meet it (WRONGTYPE to a GET) read it with
// HMGET <key> kLegacyQuoteFields... and parse the three fields (absent: nullopt).
inline constexpr std::array<std::string_view, 3> kLegacyQuoteFields{"timestamp", "price", "change"};
StoredQuote parse_legacy_quote(const std::array<std::optional<std::string_view>, 3>& fields);

// An EVAL script for readers that may write: KEYS[1] a quote key; returns the stored
// value (nil: none), an older eventd's hash converted first.
const std::string& read_quote_script();

// Lua helpers (local functions) for the libraries and scripts that touch the quote:
//   quote_fields(value) -> ts, price, change (strings, or nil), marked (boolean)
//   quote_value(ts, price, change, marked) -> the value (nil: neither quote nor mark)
//   read_quote(key) -> quote_fields of the stored value; a quote hash written by an
//     eventd before 2026-12 is converted to the string first (its only write).
//   quote_marked(value) -> whether the (string) value carries the mark
//   quote_ts(value) -> its timestamp as a number (nil: none)
const std::string& stored_quote_lua();

}  // namespace eventd
