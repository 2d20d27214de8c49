// Where a message of a given type is published: exchange and routing key, from the
// topology config and the message body (DESIGN.md, "Default topology").
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include <rapidjson/document.h>

#include "eventd/config.hpp"

namespace eventd {

struct Route {
  std::string exchange;
  std::string routing_key;
};

// quote_update      -> quotes exchange, routing key = symbol
// analysis_request  -> events, "analysis.request.<symbol>"
// analysis_complete -> events, "analysis.complete.<userId>"
// alert_triggered   -> events, "alert.triggered.<userId>"
// notification      -> events, "notification.<channel>.<kind>" (body "kind", default "general")
// std::nullopt for an unknown type or a body missing the field the key needs.
// The body is camelCase (already normalised).
std::optional<Route> route_for(const TopologyConfig& topology, const std::string& type,
                               const rapidjson::Value& body);

// A derived message (an outbox entry, see handler.hpp) ready to publish: routed by its
// body's type, or, for an entry "@QUEUE\n{json}", to QUEUE through the default
// exchange (request-reply). `body` points into the entry.
struct DerivedRoute {
  Route route;
  std::string type;       // the body's "type"; may be empty for a reply
  std::string_view body;  // the JSON to publish
  bool reply = false;
};
// std::nullopt when the entry cannot be routed (not JSON, no type, no route).
std::optional<DerivedRoute> route_derived(const TopologyConfig& topology, std::string_view entry);

}  // namespace eventd
