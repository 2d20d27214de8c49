// Exchange and routing key of each message type (DESIGN.md, "Default topology").
#include "eventd/routing.hpp"

#include <string_view>

#include "eventd/json_parse.hpp"

namespace eventd {

namespace {

// AMQP routing keys are short strings.
constexpr std::size_t kMaxRoutingKey = 255;

// The non-empty string member `key` of `body`, or nullptr.
const rapidjson::Value* string_field(const rapidjson::Value& body, const char* key) {
  const auto it = body.FindMember(key);
  if (it == body.MemberEnd() || !it->value.IsString() || it->value.GetStringLength() == 0)
    return nullptr;
  return &it->value;
}

std::string_view view(const rapidjson::Value& v) {
  return {v.GetString(), v.GetStringLength()};
}

std::optional<Route> make(const std::string& exchange, std::string key) {
  if (key.size() > kMaxRoutingKey) return std::nullopt;
  return Route{exchange, std::move(key)};
}

}  // namespace

std::optional<Route> route_for(const TopologyConfig& topology, const std::string& type,
                               const rapidjson::Value& body) {
  if (!body.IsObject()) return std::nullopt;
  const std::string& events = topology.events_exchange.name;

  if (type == "quote_update") {
    const auto* symbol = string_field(body, "symbol");
    if (!symbol) return std::nullopt;
    return make(topology.quotes_exchange.name, std::string(view(*symbol)));
  }
  if (type == "analysis_request") {
    const auto* symbol = string_field(body, "symbol");
    if (!symbol) return std::nullopt;
    return make(events, "analysis.request." + std::string(view(*symbol)));
  }
  if (type == "analysis_complete") {
    const auto* user = string_field(body, "userId");
    if (!user) return std::nullopt;
    return make(events, "analysis.complete." + std::string(view(*user)));
  }
  if (type == "alert_triggered") {
    const auto* user = string_field(body, "userId");
    if (!user) return std::nullopt;
    return make(events, "alert.triggered." + std::string(view(*user)));
  }
  if (type == "notification") {
    const auto* channel = string_field(body, "channel");
    if (!channel) return std::nullopt;
    std::string kind = "general";
    if (body.HasMember("kind")) {
      const auto* k = string_field(body, "kind");
      if (!k) return std::nullopt;  // present but not a usable string
      kind = view(*k);
    }
    return make(events, "notification." + std::string(view(*channel)) + "." + kind);
  }
  return std::nullopt;
}

std::optional<DerivedRoute> route_derived(const TopologyConfig& topology, std::string_view entry) {
  DerivedRoute out;
  if (entry.starts_with('@')) {  // "@QUEUE\n{json}": straight to a reply queue
    const std::size_t nl = entry.find('\n');
    out.route = Route{"", std::string(entry.substr(1, nl - 1))};
    entry = nl == std::string_view::npos ? std::string_view() : entry.substr(nl + 1);
    out.reply = true;
  }
  out.body = entry;
  // eventd's own text (it may nest a received body a level or two deeper); only the
  // top level is read here, the bound is for the stack.
  rapidjson::Document body;
  const bool parsed = !parse_json(body, entry, 4 * kMaxJsonDepth);
  if (parsed && body.IsObject() && body.HasMember("type") && body["type"].IsString()) {
    out.type = body["type"].GetString();
  }
  if (out.reply) return out;
  auto r = out.type.empty() ? std::nullopt : route_for(topology, out.type, body);
  if (!r) return std::nullopt;
  out.route = std::move(*r);
  return out;
}

}  // namespace eventd
