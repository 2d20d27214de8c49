// snake_case -> camelCase key normalisation of incoming message bodies.
#include "eventd/json_case.hpp"

#include <string>
#include <unordered_set>
#include <utility>

namespace eventd {

std::string snake_to_camel(std::string_view key) {
  // Leading and trailing underscores are kept as they are; only inner runs of
  // underscores are separators.
  const auto first = key.find_first_not_of('_');
  if (first == std::string_view::npos) return std::string(key);
  const auto last = key.find_last_not_of('_');

  std::string out(key.substr(0, first));
  bool upper_next = false;
  for (auto i = first; i <= last; ++i) {
    const char c = key[i];
    if (c == '_') {
      upper_next = true;
      continue;
    }
    if (upper_next && c >= 'a' && c <= 'z')
      out += static_cast<char>(c - 'a' + 'A');
    else
      out += c;
    upper_next = false;
  }
  out.append(key.substr(last + 1));
  return out;
}

namespace {

bool has_inner_underscore(std::string_view key) {
  const auto first = key.find_first_not_of('_');
  if (first == std::string_view::npos) return false;
  const auto last = key.find_last_not_of('_');
  return key.substr(first, last - first + 1).find('_') != std::string_view::npos;
}

}  // namespace

void normalise_keys(rapidjson::Value& obj, rapidjson::Document::AllocatorType& alloc) {
  if (obj.IsArray()) {
    for (auto& v : obj.GetArray()) normalise_keys(v, alloc);
    return;
  }
  if (!obj.IsObject()) return;

  // The common case, no snake_case key here: nothing to rename, no set to build.
  bool renames = false;
  for (const auto& m : obj.GetObject()) {
    if (has_inner_underscore({m.name.GetString(), m.name.GetStringLength()})) {
      renames = true;
      break;
    }
  }
  if (!renames) {
    for (auto& m : obj.GetObject()) normalise_keys(m.value, alloc);
    return;
  }

  // Keys present before renaming: a camelCase key given by the producer wins over
  // the snake_case spelling of the same field, wherever either appears.
  std::unordered_set<std::string> taken;
  for (const auto& m : obj.GetObject())
    taken.emplace(m.name.GetString(), m.name.GetStringLength());

  for (auto it = obj.MemberBegin(); it != obj.MemberEnd();) {
    const std::string_view key(it->name.GetString(), it->name.GetStringLength());
    if (has_inner_underscore(key)) {
      std::string camel = snake_to_camel(key);
      if (!taken.insert(camel).second) {
        it = obj.EraseMember(it);  // keeps member order
        continue;
      }
      it->name.SetString(camel.data(), static_cast<rapidjson::SizeType>(camel.size()), alloc);
    }
    normalise_keys(it->value, alloc);
    ++it;
  }
}

}  // namespace eventd
