// Reading members of a parsed (schema-valid) message body.
#pragma once

#include <rapidjson/document.h>

#include <string_view>

namespace eventd {

// The string member `name` of `object`, or "" when it is missing or not a string. A view
// into the document: valid while the document is.
inline std::string_view string_member(const rapidjson::Value& object, const char* name) {
  auto m = object.FindMember(name);
  if (m == object.MemberEnd() || !m->value.IsString()) return {};
  return {m->value.GetString(), m->value.GetStringLength()};
}

}  // namespace eventd
