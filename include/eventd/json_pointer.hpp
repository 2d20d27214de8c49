// JSON pointers (RFC 6901) as eventd writes them in messages: "/rules/0/cooldownSec".
#pragma once

#include <string>
#include <string_view>

namespace eventd {

// One reference token escaped: "~" as "~0", "/" as "~1".
inline std::string json_pointer_token(std::string_view token) {
  std::string out;
  out.reserve(token.size());
  for (const char c : token) {
    if (c == '~')
      out += "~0";
    else if (c == '/')
      out += "~1";
    else
      out += c;
  }
  return out;
}

}  // namespace eventd
