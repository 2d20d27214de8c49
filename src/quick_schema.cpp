// The quick schema check (see quick_schema.hpp). Each rule mirrors RapidJSON 1.1's
// internal::Schema (schema.h): its type bits, its number comparisons per value kind, its
// code-point lengths, its treatment of required names as properties.
#include "eventd/quick_schema.hpp"

#include <algorithm>
#include <bitset>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace eventd {

namespace {

using rapidjson::Value;

enum TypeBit : unsigned {
  kNull = 1u << 0,
  kBoolean = 1u << 1,
  kObject = 1u << 2,
  kArray = 1u << 3,
  kString = 1u << 4,
  kNumber = 1u << 5,
  kInteger = 1u << 6,
  kAnyType = (1u << 7) - 1,
};

std::string_view view(const Value& v) { return {v.GetString(), v.GetStringLength()}; }

// A bound (minimum or maximum) as RapidJSON keeps it: the schema's number, asked
// IsInt64 / IsUint64 / GetDouble in that order.
struct Bound {
  bool present = false;
  bool is_int64 = false, is_uint64 = false;
  int64_t i = 0;
  uint64_t u = 0;
  double d = 0;
  bool exclusive = false;
};

std::optional<Bound> read_bound(const Value& schema, const char* name, const char* exclusive_name) {
  Bound b;
  auto m = schema.FindMember(name);
  if (m != schema.MemberEnd()) {
    if (!m->value.IsNumber()) return std::nullopt;
    b.present = true;
    b.is_int64 = m->value.IsInt64();
    b.is_uint64 = m->value.IsUint64();
    if (b.is_int64) b.i = m->value.GetInt64();
    if (b.is_uint64) b.u = m->value.GetUint64();
    b.d = m->value.GetDouble();
  }
  auto e = schema.FindMember(exclusive_name);
  if (e != schema.MemberEnd()) {
    if (!e->value.IsBool()) return std::nullopt;
    b.exclusive = e->value.GetBool();
  }
  return b;
}

std::optional<uint64_t> read_count(const Value& schema, const char* name, uint64_t otherwise) {
  auto m = schema.FindMember(name);
  if (m == schema.MemberEnd()) return otherwise;
  if (!m->value.IsUint64() || m->value.GetUint64() > UINT32_MAX) return std::nullopt;  // RapidJSON's SizeType
  return m->value.GetUint64();
}

// ^[...]+$ or ^[...]*$ with single characters and ranges (no escapes, no negation).
struct CharacterClass {
  std::bitset<256> bytes;
  bool at_least_one = true;
};

std::optional<CharacterClass> read_pattern(std::string_view p) {
  if (p.size() < 5 || p.substr(0, 2) != "^[" || p.back() != '$') return std::nullopt;
  const std::size_t close = p.find(']', 2);
  if (close == std::string_view::npos || close == 2 || close + 3 != p.size()) return std::nullopt;
  CharacterClass c;
  if (p[close + 1] == '*') c.at_least_one = false;
  else if (p[close + 1] != '+') return std::nullopt;
  const std::string_view set = p.substr(2, close - 2);
  if (set.front() == '^') return std::nullopt;
  for (std::size_t i = 0; i < set.size(); ++i) {
    const auto ch = static_cast<unsigned char>(set[i]);
    if (ch == '\\' || ch == '[' || ch >= 0x80) return std::nullopt;
    // A '-' between two characters is a range; first or last it is itself.
    if (i + 2 < set.size() && set[i + 1] == '-') {
      const auto to = static_cast<unsigned char>(set[i + 2]);
      if (to < ch || to == '\\' || to == '[' || to >= 0x80) return std::nullopt;
      for (unsigned x = ch; x <= to; ++x) c.bytes.set(x);
      i += 2;
    } else {
      c.bytes.set(ch);
    }
  }
  return c;
}

std::size_t code_points(std::string_view s) {  // s is valid UTF-8 (parse_json checked it)
  std::size_t n = 0;
  for (const char ch : s) n += (static_cast<unsigned char>(ch) & 0xC0) != 0x80;
  return n;
}

}  // namespace

struct QuickSchema::Node {
  static constexpr std::size_t kMaxProperties = 64;
  unsigned types = kAnyType;
  std::vector<std::string> enum_strings;  // empty: no enum
  struct Property {
    std::string name;
    std::unique_ptr<Node> schema;  // null: any value (a required name without a schema)
    bool required = false;
  };
  std::vector<Property> properties;
  bool additional_allowed = true;
  std::unique_ptr<Node> additional;  // additionalProperties as a schema
  std::unique_ptr<Node> items;
  uint64_t min_items = 0, max_items = UINT32_MAX;
  uint64_t min_length = 0, max_length = UINT32_MAX;
  std::optional<CharacterClass> pattern;
  Bound minimum, maximum;

  static std::unique_ptr<Node> compile(const Value& schema);
  bool accepts(const Value& v) const;
  bool number_accepted(const Value& v) const;
};

std::unique_ptr<QuickSchema::Node> QuickSchema::Node::compile(const Value& schema) {
  if (!schema.IsObject()) return nullptr;
  auto node = std::make_unique<Node>();
  for (const auto& m : schema.GetObject()) {
    const std::string_view key = view(m.name);
    const Value& v = m.value;
    if (key == "$schema" || key == "title" || key == "description" || key == "default") continue;
    if (key == "type") {
      if (!v.IsString()) return nullptr;
      const std::string_view t = view(v);
      if (t == "null") node->types = kNull;
      else if (t == "boolean") node->types = kBoolean;
      else if (t == "object") node->types = kObject;
      else if (t == "array") node->types = kArray;
      else if (t == "string") node->types = kString;
      else if (t == "integer") node->types = kInteger;
      else if (t == "number") node->types = kNumber | kInteger;
      else return nullptr;
    } else if (key == "enum") {
      if (!v.IsArray() || v.Empty()) return nullptr;
      for (const auto& e : v.GetArray()) {
        if (!e.IsString()) return nullptr;
        node->enum_strings.emplace_back(view(e));
      }
    } else if (key == "properties") {
      if (!v.IsObject()) return nullptr;
      for (const auto& p : v.GetObject()) {
        auto child = compile(p.value);
        if (!child) return nullptr;
        node->properties.push_back({std::string(view(p.name)), std::move(child), false});
      }
    } else if (key == "required") {
      if (!v.IsArray()) return nullptr;
      for (const auto& r : v.GetArray())
        if (!r.IsString()) return nullptr;
    } else if (key == "additionalProperties") {
      if (v.IsBool()) {
        node->additional_allowed = v.GetBool();
      } else {
        node->additional = compile(v);
        if (!node->additional) return nullptr;
      }
    } else if (key == "items") {
      node->items = compile(v);  // an array of schemas (tuples) is not compiled
      if (!node->items) return nullptr;
    } else if (key == "pattern") {
      if (!v.IsString()) return nullptr;
      node->pattern = read_pattern(view(v));
      if (!node->pattern) return nullptr;
    } else if (key != "minimum" && key != "maximum" && key != "exclusiveMinimum" && key != "exclusiveMaximum" &&
               key != "minLength" && key != "maxLength" && key != "minItems" && key != "maxItems") {
      return nullptr;  // a keyword this check does not implement
    }
  }
  // Required names are properties too (RapidJSON adds the missing ones, typeless), so
  // additionalProperties false does not refuse them.
  if (auto r = schema.FindMember("required"); r != schema.MemberEnd()) {
    for (const auto& name : r->value.GetArray()) {
      auto it = std::find_if(node->properties.begin(), node->properties.end(),
                             [&](const Property& p) { return p.name == view(name); });
      if (it == node->properties.end()) {
        node->properties.push_back({std::string(view(name)), nullptr, true});
      } else {
        it->required = true;
      }
    }
  }
  auto minimum = read_bound(schema, "minimum", "exclusiveMinimum");
  auto maximum = read_bound(schema, "maximum", "exclusiveMaximum");
  auto min_length = read_count(schema, "minLength", 0), max_length = read_count(schema, "maxLength", UINT32_MAX);
  auto min_items = read_count(schema, "minItems", 0), max_items = read_count(schema, "maxItems", UINT32_MAX);
  if (!minimum || !maximum || !min_length || !max_length || !min_items || !max_items) return nullptr;
  node->minimum = *minimum;
  node->maximum = *maximum;
  node->min_length = *min_length;
  node->max_length = *max_length;
  node->min_items = *min_items;
  node->max_items = *max_items;
  return node;
}

// RapidJSON's CheckInt / CheckUint / Double, by the kind Value::Accept reports.
bool QuickSchema::Node::number_accepted(const Value& v) const {
  const Bound& lo = minimum;
  const Bound& hi = maximum;
  if (v.IsDouble()) {
    if (!(types & kNumber)) return false;
    const double d = v.GetDouble();
    if (lo.present && (lo.exclusive ? d <= lo.d : d < lo.d)) return false;
    if (hi.present && (hi.exclusive ? d >= hi.d : d > hi.d)) return false;
    return true;
  }
  if (!(types & (kInteger | kNumber))) return false;
  const bool as_int = v.IsInt() || (!v.IsUint() && v.IsInt64());  // Accept's order: Int, Uint, Int64, Uint64
  if (as_int) {
    const int64_t i = v.GetInt64();
    if (lo.present) {
      if (lo.is_int64) {
        if (lo.exclusive ? i <= lo.i : i < lo.i) return false;
      } else if (lo.is_uint64) {
        return false;
      } else if (lo.exclusive ? static_cast<double>(i) <= lo.d : static_cast<double>(i) < lo.d) {
        return false;
      }
    }
    if (hi.present) {
      if (hi.is_int64) {
        if (hi.exclusive ? i >= hi.i : i > hi.i) return false;
      } else if (!hi.is_uint64 && (hi.exclusive ? static_cast<double>(i) >= hi.d : static_cast<double>(i) > hi.d)) {
        return false;
      }
    }
    return true;
  }
  const uint64_t u = v.GetUint64();
  if (lo.present) {
    if (lo.is_uint64) {
      if (lo.exclusive ? u <= lo.u : u < lo.u) return false;
    } else if (!lo.is_int64 && (lo.exclusive ? static_cast<double>(u) <= lo.d : static_cast<double>(u) < lo.d)) {
      return false;
    }
  }
  if (hi.present) {
    if (hi.is_uint64) {
      if (hi.exclusive ? u >= hi.u : u > hi.u) return false;
    } else if (hi.is_int64) {
      return false;
    } else if (hi.exclusive ? static_cast<double>(u) >= hi.d : static_cast<double>(u) > hi.d) {
      return false;
    }
  }
  return true;
}

bool QuickSchema::Node::accepts(const Value& v) const {
  switch (v.GetType()) {
    case rapidjson::kNullType:
      if (!(types & kNull)) return false;
      break;
    case rapidjson::kFalseType:
    case rapidjson::kTrueType:
      if (!(types & kBoolean)) return false;
      break;
    case rapidjson::kNumberType:
      if (!number_accepted(v)) return false;
      break;
    case rapidjson::kStringType: {
      if (!(types & kString)) return false;
      const std::string_view s = view(v);
      if (min_length != 0 || max_length != UINT32_MAX) {
        const std::size_t n = code_points(s);
        if (n < min_length || n > max_length) return false;
      }
      if (pattern) {
        if (pattern->at_least_one && s.empty()) return false;
        for (const char ch : s)
          if (!pattern->bytes.test(static_cast<unsigned char>(ch))) return false;
      }
      break;
    }
    case rapidjson::kArrayType:
      if (!(types & kArray)) return false;
      if (v.Size() < min_items || v.Size() > max_items) return false;
      if (items) {
        for (const auto& e : v.GetArray())
          if (!items->accepts(e)) return false;
      }
      break;
    case rapidjson::kObjectType: {
      if (!(types & kObject)) return false;
      if (properties.size() > kMaxProperties) return false;  // not known
      std::bitset<kMaxProperties> seen;  // per property: a key may come twice in documents not from parse_json
      for (const auto& m : v.GetObject()) {
        const std::string_view key = view(m.name);
        const Property* p = nullptr;
        for (std::size_t i = 0; i < properties.size(); ++i) {
          if (properties[i].name == key) {
            p = &properties[i];
            seen.set(i);
            break;
          }
        }
        if (p != nullptr) {
          if (p->schema && !p->schema->accepts(m.value)) return false;
        } else if (additional) {
          if (!additional->accepts(m.value)) return false;
        } else if (!additional_allowed) {
          return false;
        }
      }
      for (std::size_t i = 0; i < properties.size(); ++i)
        if (properties[i].required && !seen.test(i)) return false;
      break;
    }
  }
  if (!enum_strings.empty()) {
    if (!v.IsString()) return false;
    const std::string_view s = view(v);
    bool listed = false;
    for (const std::string& e : enum_strings) listed = listed || e == s;
    if (!listed) return false;
  }
  return true;
}

QuickSchema::QuickSchema(std::unique_ptr<Node> root) : root_(std::move(root)) {}
QuickSchema::~QuickSchema() = default;

std::unique_ptr<QuickSchema> QuickSchema::compile(const Value& schema) {
  auto root = Node::compile(schema);
  if (!root) return nullptr;
  return std::make_unique<QuickSchema>(std::move(root));
}

bool QuickSchema::accepts(const Value& doc) const { return root_->accepts(doc); }

}  // namespace eventd
