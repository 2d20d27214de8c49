// Portfolio valuation, conditions and alerts (see portfolio.hpp).
#include "eventd/portfolio.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <utility>

namespace eventd::portfolio {
namespace {

std::optional<double> finite(double x) {
  if (!std::isfinite(x)) return std::nullopt;
  return x;
}

std::optional<double> ratio_pct(double numerator, double denominator) {
  if (denominator == 0) return std::nullopt;
  return finite(numerator / denominator * 100);
}

constexpr std::array<std::pair<std::string_view, Condition>, 5> kNames{{
    {"portfolio_value_below", Condition::ValueBelow},
    {"portfolio_value_above", Condition::ValueAbove},
    {"portfolio_change_pct_below", Condition::ChangePctBelow},
    {"position_pnl_pct_below", Condition::PositionPnlPctBelow},
    {"quote_stale", Condition::QuoteStale},
}};

constexpr std::array<std::string_view, 4> kPriceConditions{"price_above", "price_below", "change_pct_above",
                                                           "change_pct_below"};

const PositionValue* find_position(const Valuation& v, std::string_view symbol) {
  for (const auto& p : v.positions) {
    if (p.position.symbol == symbol) return &p;
  }
  return nullptr;
}

std::string unquoted_list(const Valuation& v) {
  std::string out;
  for (const auto& s : v.unquoted) out += (out.empty() ? "" : ", ") + s;
  return out;
}

Finding unknown(std::string why) { return Finding{std::nullopt, 0, std::move(why)}; }
Finding known(bool holds, double value) { return Finding{holds, value, {}}; }

std::string_view str(const rapidjson::Value& v) { return {v.GetString(), v.GetStringLength()}; }

// The shortest text that reads back as the same double ("0.1", "200").
std::string number(double x) {
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, x);
  if (ec != std::errc()) return "0";
  return std::string(buf, end);
}

}  // namespace

Valuation value(std::span<const Position> positions, const Quotes& quotes) {
  Valuation v;
  double value = 0, change = 0, close = 0, pnl = 0, cost = 0;
  bool complete = true, pnl_complete = true, any_cost = false;
  for (const Position& p : positions) {
    PositionValue pv;
    pv.position = p;
    if (auto q = quotes.find(p.symbol); q != quotes.end()) {
      pv.quote = q->second;
      pv.market_value = finite(p.quantity * q->second.price);
      pv.day_change = finite(p.quantity * q->second.change);
      if (p.cost_basis) {
        pv.pnl = finite(p.quantity * (q->second.price - *p.cost_basis));
        if (pv.pnl && p.quantity != 0) pv.pnl_pct = ratio_pct(*pv.pnl, std::abs(p.quantity) * *p.cost_basis);
      }
      value += p.quantity * q->second.price;
      change += p.quantity * q->second.change;
      close += p.quantity * (q->second.price - q->second.change);
    } else {
      complete = false;
      v.unquoted.push_back(p.symbol);
    }
    if (p.cost_basis) {
      any_cost = true;
      if (pv.quote) {
        pnl += p.quantity * (pv.quote->price - *p.cost_basis);
        cost += std::abs(p.quantity) * *p.cost_basis;
      } else {
        pnl_complete = false;
      }
    }
    v.positions.push_back(std::move(pv));
  }
  if (complete) {
    v.market_value = finite(value);
    v.day_change = finite(change);
    if (v.day_change) v.day_change_pct = ratio_pct(change, close);
  }
  if (any_cost && pnl_complete) {
    v.pnl = finite(pnl);
    if (v.pnl) v.pnl_pct = ratio_pct(pnl, cost);
  }
  return v;
}

std::optional<Condition> parse_condition(std::string_view name) {
  for (const auto& [n, c] : kNames) {
    if (n == name) return c;
  }
  return std::nullopt;
}

std::string_view condition_name(Condition condition) {
  for (const auto& [n, c] : kNames) {
    if (c == condition) return n;
  }
  return "?";
}

bool names_symbol(Condition condition) {
  return condition == Condition::PositionPnlPctBelow || condition == Condition::QuoteStale;
}

Finding evaluate(const Rule& rule, const Valuation& v, const Quotes& quotes, int64_t now_ms, int64_t started_ms) {
  switch (rule.condition) {
    case Condition::ValueBelow:
    case Condition::ValueAbove:
      if (!v.market_value) {
        return unknown(v.unquoted.empty() ? "the portfolio value is out of range"
                                          : "no quote yet for " + unquoted_list(v));
      }
      return known(rule.condition == Condition::ValueBelow ? *v.market_value < rule.threshold
                                                            : *v.market_value > rule.threshold,
                   *v.market_value);
    case Condition::ChangePctBelow:
      if (!v.unquoted.empty()) return unknown("no quote yet for " + unquoted_list(v));
      if (!v.day_change_pct) return unknown("the portfolio's value at the previous close is 0");
      return known(*v.day_change_pct < rule.threshold, *v.day_change_pct);
    case Condition::PositionPnlPctBelow: {
      const PositionValue* p = find_position(v, rule.symbol);
      if (p == nullptr) return unknown("no position in " + rule.symbol);
      if (!p->position.cost_basis) return unknown("the position in " + rule.symbol + " has no costBasis");
      if (!p->quote) return unknown("no quote yet for " + rule.symbol);
      if (!p->pnl_pct) return unknown("the position in " + rule.symbol + " has quantity 0");
      return known(*p->pnl_pct < rule.threshold, *p->pnl_pct);
    }
    case Condition::QuoteStale: {
      auto q = quotes.find(rule.symbol);
      const int64_t since = q != quotes.end() ? q->second.timestamp_ms : started_ms;
      const double age = static_cast<double>(std::max<int64_t>(now_ms - since, 0)) / 1000.0;
      return known(age > rule.threshold, age);
    }
  }
  return unknown("unknown condition");
}

std::optional<std::string> parse_spec(const rapidjson::Value& spec, Spec& out) {
  Spec s;
  if (auto i = spec.FindMember("checkIntervalMs"); i != spec.MemberEnd() && i->value.IsInt64()) {
    s.check_interval_ms = i->value.GetInt64();
  }
  std::map<std::string, std::size_t, std::less<>> position_at;
  if (auto ps = spec.FindMember("positions"); ps != spec.MemberEnd() && ps->value.IsArray()) {
    for (rapidjson::SizeType i = 0; i < ps->value.Size(); ++i) {
      const auto& p = ps->value[i];
      Position pos;
      pos.symbol = std::string(str(p["symbol"]));
      pos.quantity = p["quantity"].GetDouble();
      if (auto c = p.FindMember("costBasis"); c != p.MemberEnd()) pos.cost_basis = c->value.GetDouble();
      if (auto seen = position_at.find(pos.symbol); seen != position_at.end()) {
        return "/positions/" + std::to_string(i) + "/symbol: " + pos.symbol + " is listed already at /positions/" +
               std::to_string(seen->second) + "; one position per symbol (merge the lots)";
      }
      position_at.emplace(pos.symbol, i);
      s.symbols.push_back(pos.symbol);
      s.positions.push_back(std::move(pos));
    }
  }
  const auto& rules = spec["rules"];
  std::vector<std::string_view> watched;
  for (const auto& r : rules.GetArray()) {
    if (auto sym = r.FindMember("symbol"); sym != r.MemberEnd() && !parse_condition(str(r["condition"]))) {
      watched.push_back(str(sym->value));
    }
  }
  for (rapidjson::SizeType i = 0; i < rules.Size(); ++i) {
    const auto& r = rules[i];
    const std::string at = "/rules/" + std::to_string(i) + "/";
    const std::string_view name = str(r["condition"]);
    const std::optional<Condition> c = parse_condition(name);
    const bool has_symbol = r.HasMember("symbol"), has_threshold = r.HasMember("threshold"),
               has_seconds = r.HasMember("thresholdSec");
    const std::string cond(name);
    if (!c) {  // a price rule
      if (!has_symbol) return at + "symbol: required field missing (" + cond + " watches one symbol)";
      if (!has_threshold) return at + "threshold: required field missing (" + cond + " needs one)";
      if (has_seconds) return at + "thresholdSec: only quote_stale takes thresholdSec";
      continue;
    }
    Rule rule;
    rule.alert_id = r["alertId"].GetInt64();
    rule.condition = *c;
    if (auto cd = r.FindMember("cooldownSec"); cd != r.MemberEnd()) rule.cooldown_sec = cd->value.GetInt64();
    if (!names_symbol(*c) && has_symbol) {
      return at + "symbol: " + cond + " is about the whole portfolio and takes no symbol";
    }
    if (names_symbol(*c) && !has_symbol) return at + "symbol: required field missing (" + cond + " needs one)";
    if (has_symbol) rule.symbol = std::string(str(r["symbol"]));
    if (*c == Condition::QuoteStale) {
      if (has_threshold) return at + "threshold: quote_stale takes thresholdSec (seconds), not threshold";
      if (!has_seconds) return at + "thresholdSec: required field missing (quote_stale needs one)";
      rule.threshold = static_cast<double>(r["thresholdSec"].GetInt64());
      const bool held = position_at.count(rule.symbol) > 0;
      if (!held && std::find(watched.begin(), watched.end(), rule.symbol) == watched.end()) {
        return at + "symbol: " + rule.symbol + " is neither a position nor watched by a price rule of this monitor";
      }
      if (!held && std::find(s.symbols.begin(), s.symbols.end(), rule.symbol) == s.symbols.end()) {
        s.symbols.push_back(rule.symbol);
      }
    } else {
      if (has_seconds) return at + "thresholdSec: only quote_stale takes thresholdSec";
      if (!has_threshold) return at + "threshold: required field missing (" + cond + " needs one)";
      rule.threshold = r["threshold"].GetDouble();
    }
    if (*c == Condition::PositionPnlPctBelow) {
      auto p = position_at.find(rule.symbol);
      if (p == position_at.end() || !s.positions[p->second].cost_basis) {
        return at + "symbol: position_pnl_pct_below needs a position in " + rule.symbol + " with a costBasis";
      }
    }
    s.rules.push_back(std::move(rule));
  }
  out = std::move(s);
  return std::nullopt;
}

std::string alert_body(std::string_view user, const Rule& rule, const Finding& finding, const Valuation& v,
                       const Quotes& quotes, int64_t now_ms) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  auto key = [&w](const char* k) { w.Key(k); };
  auto text = [&w](std::string_view s) { w.String(s.data(), static_cast<rapidjson::SizeType>(s.size())); };
  auto num = [&w](double x) {
    const std::string s = number(x);
    w.RawValue(s.data(), s.size(), rapidjson::kNumberType);
  };
  auto opt = [&](const char* k, const std::optional<double>& x) {
    if (!x) return;
    key(k);
    num(*x);
  };
  w.StartObject();
  key("type");
  text("alert_triggered");
  key("timestamp");
  w.Int64(now_ms);
  key("userId");
  text(user);
  key("alertId");
  w.Int64(rule.alert_id);
  key("symbol");
  text(names_symbol(rule.condition) ? std::string_view(rule.symbol) : kPortfolioSymbol);
  key("condition");
  text(condition_name(rule.condition));
  key("threshold");
  num(rule.threshold);
  key("currentValue");
  num(finding.current_value);
  switch (rule.condition) {
    case Condition::ValueBelow:
    case Condition::ValueAbove:
    case Condition::ChangePctBelow:
      opt("portfolioValue", v.market_value);
      opt("dayChange", v.day_change);
      opt("dayChangePct", v.day_change_pct);
      opt("unrealizedPnl", v.pnl);
      opt("unrealizedPnlPct", v.pnl_pct);
      break;
    case Condition::PositionPnlPctBelow:
      if (const PositionValue* p = find_position(v, rule.symbol)) {
        opt("quantity", p->position.quantity);
        opt("costBasis", p->position.cost_basis);
        if (p->quote) opt("price", p->quote->price);
        opt("marketValue", p->market_value);
        opt("positionPnl", p->pnl);
        opt("positionPnlPct", p->pnl_pct);
      }
      break;
    case Condition::QuoteStale:
      if (auto q = quotes.find(rule.symbol); q != quotes.end()) {
        key("lastQuoteAt");
        w.Int64(q->second.timestamp_ms);
      }
      opt("lastQuoteAgeSec", finding.current_value);
      break;
  }
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize());
}

}  // namespace eventd::portfolio
