// Small text helpers.
#pragma once

#include <string>
#include <string_view>

namespace eventd {

// `text` with every `from` replaced by `to` (a placeholder spelled into Lua, say);
// replacements are not searched again.
inline std::string replace_all(std::string text, std::string_view from, std::string_view to) {
  for (auto at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

}  // namespace eventd
