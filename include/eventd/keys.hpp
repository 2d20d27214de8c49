// The Redis key layout: every key eventd and eventctl read or write, with its hash
// tag (README, "Redis key layout"). Nothing else in src/ spells a key; the integration
// tests' harness.py mirrors this file.
//
// Redis Cluster hashes only the part of a key between its first '{' and the next '}'
// (the hash tag), so keys with one tag live in one slot and one script may use them
// all. Every key of a message carries the message's tag: {<symbol>} for quote_update
// and analysis_request, {<userId>} for alert_triggered, analysis_complete and
// notification. State read per quote but owned per user (rules, cooldowns) lives
// under the symbol's tag, so the quote script stays in one slot.
#pragma once

#include <array>
#include <string>
#include <string_view>

#include <rapidjson/document.h>

namespace eventd::keys {

// A hash tag, as it appears between the braces. Symbols cannot hold braces (their
// schema pattern), user ids can: '%', '{' and '}' are percent-encoded (%25, %7B, %7D),
// so a tag is exactly what Redis hashes and two values never share a tag. The empty
// value, which validation never lets through, gets "%", which no other value gets.
class Tag {
 public:
  explicit Tag(std::string_view value);
  const std::string& text() const { return text_; }
  bool operator==(const Tag&) const = default;

 private:
  std::string text_;
};


// The tag of a schema-valid message (camelCase body): its symbol for quote_update
// and analysis_request, its userId for the other types.
Tag message_tag(std::string_view type, const rapidjson::Value& body);

// --- per message, under its tag --------------------------------------------------

// eventd:idem:{<tag>}:<message_id>, or for a message without one
// eventd:idem:{<tag>}:h:<xxh128 of type and body>.
std::string idempotency(const Tag& tag, std::string_view message_id, std::string_view type, std::string_view body);
// What an idempotency key stands for, without its tag: the message id, or h:<hash>.
// Messages derived from it are numbered from this ("<id>:<n>").
std::string_view message_id(std::string_view idempotency_key);
// eventd:outbox:{<tag>}:<id>: the derived messages not yet confirmed.
std::string outbox(std::string_view idempotency_key);
// eventd:lease:{<userId>}:<id>: a notification delivery in progress.
std::string lease(std::string_view idempotency_key);

// --- per symbol, tag {<SYMBOL>} ----------------------------------------------------

// The rule conditions, in the order of the rule index keys the scripts take.
inline constexpr std::array<std::string_view, 4> kConditions{"price_above", "price_below", "change_pct_above",
                                                             "change_pct_below"};

std::string quote(std::string_view symbol);    // eventd:quote:{SYM}, format: stored_quote.hpp
// The stored quote's mark that says the symbol has rules (eventctl keeps it with the rule
// specs): a quote of a symbol without it is stored by the cheap function, which reads
// no rule key, and one with it goes to the function that evaluates the rules.
inline constexpr std::string_view kQuoteHasRules = "rules";
std::string history(std::string_view symbol);  // eventd:history:{SYM}
std::string rules(std::string_view symbol);    // eventd:rules:{SYM}
// eventd:ruleidx:{SYM}:<condition>
std::string rule_index(std::string_view symbol, std::string_view condition);
std::array<std::string, kConditions.size()> rule_indexes(std::string_view symbol);  // in kConditions order
std::string rule_state(std::string_view symbol);   // eventd:rulestate:{SYM}
std::string rule_owners(std::string_view symbol);  // eventd:ruleowners:{SYM}

// --- per user, tag {<userId>} ------------------------------------------------------

std::string monitor(std::string_view user);          // eventd:monitor:{user}
std::string monitor_symbols(std::string_view user);  // eventd:monitorsyms:{user}
std::string alerts(std::string_view user);           // eventd:alerts:{user}
std::string analysis(std::string_view user, std::string_view symbol);  // eventd:analysis:{user}:<SYMBOL>
std::string notifications(std::string_view user);                      // eventd:notifications:{user}
std::string rate_limit(std::string_view user, std::string_view channel);  // eventd:ratelimit:{user}:<channel>
// eventd:portfoliostate:{user}: the portfolio rules' edge and cooldown state, and the
// last check applied (portfolio_checks.hpp).
std::string portfolio_state(std::string_view user);
// eventd:portfoliooutbox:{user}: alerts of portfolio checks not yet confirmed by the
// broker (not under eventd:outbox:, where a message id could name the same key).
std::string portfolio_outbox(std::string_view user);

// --- the portfolio check schedule, tag {s<N>} --------------------------------------

// The schedule is spread over this many shards, each a sorted set of its own hash tag,
// so that a Redis Cluster spreads it over its masters. A user's shard never changes.
inline constexpr std::size_t kScheduleShards = 16;
std::size_t schedule_shard(std::string_view user);  // xxh3 of the userId, mod kScheduleShards
std::string schedule(std::size_t shard);           // eventd:schedule:{s<N>}
std::string schedule_claims(std::size_t shard);    // eventd:schedclaims:{s<N>}

// --- global ------------------------------------------------------------------------

// eventd:monitors: every user with a monitor; no tag, a slot of its own.
std::string monitors();

}  // namespace eventd::keys
