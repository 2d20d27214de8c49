// The Redis key layout (see keys.hpp).
#include "eventd/keys.hpp"

#include <xxhash.h>

#include <cstdio>

#include "eventd/json_member.hpp"

namespace eventd::keys {
namespace {

constexpr std::string_view kIdem = "eventd:idem:";

// "<prefix>{<tag>}" and, when given, ":<rest>".
std::string tagged(std::string_view prefix, const Tag& tag, std::string_view rest = {}) {
  std::string key;
  key.reserve(prefix.size() + tag.text().size() + rest.size() + 3);
  key.append(prefix).append("{").append(tag.text()).append("}");
  if (!rest.empty()) key.append(":").append(rest);
  return key;
}

// The part of an idempotency key after "eventd:idem:": "{<tag>}:<id>".
std::string_view after_idem(std::string_view idempotency_key) {
  if (idempotency_key.starts_with(kIdem)) idempotency_key.remove_prefix(kIdem.size());
  return idempotency_key;
}

}  // namespace

Tag::Tag(std::string_view value) {
  if (value.empty()) {
    text_ = "%";
    return;
  }
  text_.reserve(value.size());
  for (char c : value) {
    if (c == '%') text_ += "%25";
    else if (c == '{') text_ += "%7B";
    else if (c == '}') text_ += "%7D";
    else text_ += c;
  }
}

Tag message_tag(std::string_view type, const rapidjson::Value& body) {
  if (!body.IsObject()) return Tag(std::string_view());
  if (type == "quote_update" || type == "analysis_request") return Tag(string_member(body, "symbol"));
  return Tag(string_member(body, "userId"));
}

std::string idempotency(const Tag& tag, std::string_view message_id, std::string_view type, std::string_view body) {
  if (!message_id.empty()) return tagged(kIdem, tag, message_id);
  XXH3_state_t* state = XXH3_createState();
  XXH3_128bits_reset(state);
  XXH3_128bits_update(state, type.data(), type.size());
  XXH3_128bits_update(state, "\0", 1);
  XXH3_128bits_update(state, body.data(), body.size());
  XXH128_hash_t h = XXH3_128bits_digest(state);
  XXH3_freeState(state);
  char hex[35];
  std::snprintf(hex, sizeof hex, "h:%016llx%016llx", static_cast<unsigned long long>(h.high64),
                static_cast<unsigned long long>(h.low64));
  return tagged(kIdem, tag, hex);
}

std::string_view message_id(std::string_view idempotency_key) {
  std::string_view rest = after_idem(idempotency_key);
  // A tag holds no '}' (Tag encodes it), so the first one closes it.
  if (!rest.starts_with('{')) return rest;
  const std::size_t close = rest.find('}');
  if (close == std::string_view::npos || rest.substr(close + 1, 1) != ":") return rest;
  return rest.substr(close + 2);
}

std::string outbox(std::string_view idempotency_key) {
  return "eventd:outbox:" + std::string(after_idem(idempotency_key));
}

std::string lease(std::string_view idempotency_key) {
  return "eventd:lease:" + std::string(after_idem(idempotency_key));
}

std::string quote(std::string_view symbol) { return tagged("eventd:quote:", Tag(symbol)); }
std::string history(std::string_view symbol) { return tagged("eventd:history:", Tag(symbol)); }
std::string rules(std::string_view symbol) { return tagged("eventd:rules:", Tag(symbol)); }

std::string rule_index(std::string_view symbol, std::string_view condition) {
  return tagged("eventd:ruleidx:", Tag(symbol), condition);
}

std::array<std::string, kConditions.size()> rule_indexes(std::string_view symbol) {
  std::array<std::string, kConditions.size()> out;
  for (std::size_t i = 0; i < kConditions.size(); ++i) out[i] = rule_index(symbol, kConditions[i]);
  return out;
}

std::string rule_state(std::string_view symbol) { return tagged("eventd:rulestate:", Tag(symbol)); }
std::string rule_owners(std::string_view symbol) { return tagged("eventd:ruleowners:", Tag(symbol)); }

std::string monitor(std::string_view user) { return tagged("eventd:monitor:", Tag(user)); }
std::string monitor_symbols(std::string_view user) { return tagged("eventd:monitorsyms:", Tag(user)); }
std::string alerts(std::string_view user) { return tagged("eventd:alerts:", Tag(user)); }
std::string analysis(std::string_view user, std::string_view symbol) {
  return tagged("eventd:analysis:", Tag(user), symbol);
}
std::string notifications(std::string_view user) { return tagged("eventd:notifications:", Tag(user)); }
std::string rate_limit(std::string_view user, std::string_view channel) {
  return tagged("eventd:ratelimit:", Tag(user), channel);
}

std::string portfolio_state(std::string_view user) { return tagged("eventd:portfoliostate:", Tag(user)); }
std::string portfolio_outbox(std::string_view user) { return tagged("eventd:portfoliooutbox:", Tag(user)); }

std::size_t schedule_shard(std::string_view user) {
  return static_cast<std::size_t>(XXH3_64bits(user.data(), user.size()) % kScheduleShards);
}
std::string schedule(std::size_t shard) { return "eventd:schedule:{s" + std::to_string(shard) + "}"; }
std::string schedule_claims(std::size_t shard) { return "eventd:schedclaims:{s" + std::to_string(shard) + "}"; }

std::string monitors() { return "eventd:monitors"; }

}  // namespace eventd::keys
