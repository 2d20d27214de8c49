// Compiled JSON Schemas and the one-line messages for documents that fail them.
#include "eventd/schema_registry.hpp"

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <rapidjson/error/en.h>
#include <rapidjson/pointer.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "eventd/json_pointer.hpp"

namespace eventd {

namespace {

using rapidjson::Value;

constexpr std::size_t kMaxShownValue = 64;

std::string pointer_text(const rapidjson::Pointer& p) {
  rapidjson::StringBuffer sb;
  p.Stringify(sb);
  return {sb.GetString(), sb.GetSize()};
}

// A JSON pointer as shown in messages; the whole document is "(root)".
std::string shown(const std::string& pointer) { return pointer.empty() ? "(root)" : pointer; }

// Compact JSON text of `v`, cut to a readable length (JSON escaping keeps it one line).
std::string json_text(const Value& v) {
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> writer(sb);
  v.Accept(writer);
  std::string s(sb.GetString(), sb.GetSize());
  if (s.size() > kMaxShownValue) {
    std::size_t cut = kMaxShownValue;
    while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;  // whole UTF-8 sequences
    s = s.substr(0, cut) + "...";
  }
  return s;
}

const char* type_name(const Value& v) {
  switch (v.GetType()) {
    case rapidjson::kNullType: return "null";
    case rapidjson::kFalseType:
    case rapidjson::kTrueType: return "boolean";
    case rapidjson::kObjectType: return "object";
    case rapidjson::kArrayType: return "array";
    case rapidjson::kStringType: return "string";
    case rapidjson::kNumberType: return (v.IsInt64() || v.IsUint64()) ? "integer" : "number";
  }
  return "unknown";
}

// "a, b, c" (strings unquoted) or, with `sep`, e.g. "string or null".
std::string join_values(const Value& arr, const char* sep = ", ") {
  std::string out;
  for (const auto& v : arr.GetArray()) {
    if (!out.empty()) out += sep;
    out += v.IsString() ? std::string(v.GetString(), v.GetStringLength()) : json_text(v);
  }
  return out;
}

const Value* member(const Value* obj, const char* key) {
  if (!obj || !obj->IsObject()) return nullptr;
  const auto it = obj->FindMember(key);
  return it == obj->MemberEnd() ? nullptr : &it->value;
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      const auto ca = static_cast<char>(std::tolower(static_cast<unsigned char>(a[i - 1])));
      const auto cb = static_cast<char>(std::tolower(static_cast<unsigned char>(b[j - 1])));
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (ca == cb ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string describe_unknown_key(std::string_view key, const Value* schema) {
  std::vector<std::string> allowed;
  if (const Value* props = member(schema, "properties"); props && props->IsObject())
    for (const auto& m : props->GetObject())
      if (m.name.GetStringLength() > 0 && m.name.GetString()[0] != '$')
        allowed.emplace_back(m.name.GetString(), m.name.GetStringLength());
  if (allowed.empty()) return "unknown key; this object takes no keys";

  // Ignoring case and underscores, a close spelling is most likely what was meant.
  const std::string* best = nullptr;
  std::size_t best_distance = 0;
  std::string bare;
  for (const char c : key)
    if (c != '_') bare += c;
  for (const auto& a : allowed) {
    const std::size_t d = std::min(edit_distance(key, a), edit_distance(bare, a));
    if (!best || d < best_distance) {
      best = &a;
      best_distance = d;
    }
  }
  if (best && best_distance <= std::max<std::size_t>(1, std::min<std::size_t>(3, best->size() / 3)))
    return "unknown key; did you mean \"" + *best + "\"?";

  std::string list;
  for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
  return "unknown key; expected one of " + list;
}

std::string describe(std::string_view name, const rapidjson::SchemaValidator& validator,
                     const Value& doc) {
  // The compiled schema keeps no source, so the schema text is parsed again here;
  // this runs only for invalid documents.
  const std::string_view text = embedded_schema(name);
  rapidjson::Document schema_doc;
  schema_doc.Parse(text.data(), text.size());

  const std::string keyword = validator.GetInvalidSchemaKeyword() ? validator.GetInvalidSchemaKeyword() : "";
  const rapidjson::Pointer doc_pointer = validator.GetInvalidDocumentPointer();
  const std::string where = pointer_text(doc_pointer);
  const Value* schema = schema_doc.HasParseError() ? nullptr : validator.GetInvalidSchemaPointer().Get(schema_doc);
  const Value* value = doc_pointer.Get(doc);

  const auto at = [&](const std::string& what) { return shown(where) + ": " + what; };
  const auto got = [&] { return value ? ", got " + json_text(*value) : std::string(); };

  if (keyword == "required") {
    const Value* required = member(schema, "required");
    if (required && required->IsArray() && value && value->IsObject())
      for (const auto& r : required->GetArray())
        if (r.IsString() && !value->HasMember(r))
          return where + "/" + json_pointer_token({r.GetString(), r.GetStringLength()}) +
                 ": required field missing";
    return at("required field missing");
  }
  if (keyword == "additionalProperties") {
    const auto& tokens = doc_pointer;
    const std::size_t n = tokens.GetTokenCount();
    const std::string_view key =
        n ? std::string_view(tokens.GetTokens()[n - 1].name, tokens.GetTokens()[n - 1].length) : "";
    return at(describe_unknown_key(key, schema));
  }
  if (keyword == "type") {
    const Value* type = member(schema, "type");
    std::string expected = !type                ? std::string("another type")
                           : type->IsArray()    ? join_values(*type, " or ")
                           : type->IsString()   ? std::string(type->GetString())
                                                : json_text(*type);
    return at("expected " + expected + ", got " + (value ? type_name(*value) : "nothing"));
  }
  if (keyword == "enum") {
    const Value* values = member(schema, "enum");
    if (values && values->IsArray() && values->Size() == 1)
      return at("must be " + json_text((*values)[0]) + got());
    if (values && values->IsArray()) return at("must be one of " + join_values(*values) + got());
    return at("value not allowed" + got());
  }
  if (keyword == "minimum" || keyword == "maximum") {
    const bool min = keyword == "minimum";
    const Value* bound = member(schema, min ? "minimum" : "maximum");
    const Value* exclusive = member(schema, min ? "exclusiveMinimum" : "exclusiveMaximum");
    const bool strict = exclusive && exclusive->IsBool() && exclusive->GetBool();
    const std::string op = min ? (strict ? "> " : ">= ") : (strict ? "< " : "<= ");
    return at("must be " + op + (bound ? json_text(*bound) : "?") + got());
  }
  if (keyword == "minLength") {
    const Value* n = member(schema, "minLength");
    if (n && n->IsUint() && n->GetUint() == 1) return at("must not be empty");
    return at("must be at least " + (n ? json_text(*n) : "?") + " characters long" + got());
  }
  if (keyword == "maxLength") {
    const Value* n = member(schema, "maxLength");
    return at("must be at most " + (n ? json_text(*n) : "?") + " characters long");
  }
  if (keyword == "pattern") {
    const Value* p = member(schema, "pattern");
    return at("must match " + (p && p->IsString() ? std::string(p->GetString()) : "the pattern") + got());
  }
  if (keyword == "uniqueItems") return at("duplicate item " + (value ? json_text(*value) : "") +
                                          "; items must be unique");
  if (keyword == "minItems" || keyword == "maxItems") {
    const Value* n = member(schema, keyword.c_str());
    return at(std::string("must have ") + (keyword == "minItems" ? "at least " : "at most ") +
              (n ? json_text(*n) : "?") + " item" + (n && n->IsUint() && n->GetUint() == 1 ? "" : "s"));
  }
  if (keyword == "minProperties" || keyword == "maxProperties") {
    const Value* n = member(schema, keyword.c_str());
    return at(std::string("must have ") + (keyword == "minProperties" ? "at least " : "at most ") +
              (n ? json_text(*n) : "?") + " keys");
  }
  if (keyword == "multipleOf") {
    const Value* n = member(schema, "multipleOf");
    return at("must be a multiple of " + (n ? json_text(*n) : "?") + got());
  }
  return at("does not match the schema (" + (keyword.empty() ? std::string("unknown keyword") : keyword) + ")");
}

}  // namespace

namespace detail {

// The branches of a schema that lead to a "pattern": only those are walked per message.
struct PatternFields {
  bool pattern = false;
  std::vector<std::pair<std::string, std::shared_ptr<const PatternFields>>> properties;
  std::shared_ptr<const PatternFields> additional;  // an "additionalProperties" schema
  std::shared_ptr<const PatternFields> items;       // an "items" schema (one for all)
};

}  // namespace detail

namespace {

using detail::PatternFields;

std::shared_ptr<const PatternFields> pattern_fields(const Value& schema) {
  if (!schema.IsObject()) return nullptr;
  auto out = std::make_shared<PatternFields>();
  out->pattern = schema.HasMember("pattern");
  bool any = out->pattern;
  if (const Value* props = member(&schema, "properties"); props && props->IsObject()) {
    for (const auto& m : props->GetObject()) {
      if (auto child = pattern_fields(m.value)) {
        out->properties.emplace_back(std::string(m.name.GetString(), m.name.GetStringLength()), std::move(child));
        any = true;
      }
    }
  }
  if (const Value* extra = member(&schema, "additionalProperties")) {
    out->additional = pattern_fields(*extra);
    any = any || out->additional;
  }
  if (const Value* items = member(&schema, "items")) {
    out->items = pattern_fields(*items);
    any = any || out->items;
  }
  return any ? out : nullptr;
}

bool has_control_character(const Value& s) {
  const char* p = s.GetString();
  for (rapidjson::SizeType i = 0; i < s.GetStringLength(); ++i) {
    const auto c = static_cast<unsigned char>(p[i]);
    if (c < 0x20 || c == 0x7f) return true;
  }
  return false;
}

// The first string under `fields` with a control character, as an error line.
std::optional<std::string> find_control_character(const PatternFields& fields, const Value& v,
                                                  const std::string& pointer) {
  if (fields.pattern && v.IsString() && has_control_character(v))
    return shown(pointer) + ": must not contain control characters, got " + json_text(v);
  if (v.IsObject()) {
    for (const auto& [name, child] : fields.properties) {
      const auto it = v.FindMember(rapidjson::StringRef(name.data(), static_cast<rapidjson::SizeType>(name.size())));
      if (it == v.MemberEnd()) continue;
      if (auto problem = find_control_character(*child, it->value, pointer + "/" + json_pointer_token(name))) return problem;
    }
    if (fields.additional) {
      for (const auto& m : v.GetObject()) {
        const std::string_view key(m.name.GetString(), m.name.GetStringLength());
        const bool listed = std::any_of(fields.properties.begin(), fields.properties.end(),
                                        [&](const auto& p) { return p.first == key; });
        if (listed) continue;
        if (auto problem = find_control_character(*fields.additional, m.value, pointer + "/" + json_pointer_token(key)))
          return problem;
      }
    }
  }
  if (v.IsArray() && fields.items) {
    for (rapidjson::SizeType i = 0; i < v.Size(); ++i)
      if (auto problem = find_control_character(*fields.items, v[i], pointer + "/" + std::to_string(i))) return problem;
  }
  return std::nullopt;
}

}  // namespace

SchemaRegistry::SchemaRegistry() {
  for (const auto& name : embedded_schema_names()) {
    const std::string_view text = embedded_schema(name);
    rapidjson::Document doc;
    doc.Parse(text.data(), text.size());
    if (doc.HasParseError())
      throw std::runtime_error("schema " + name + ": invalid JSON at offset " +
                               std::to_string(doc.GetErrorOffset()) + ": " +
                               rapidjson::GetParseError_En(doc.GetParseError()));
    if (!doc.IsObject()) throw std::runtime_error("schema " + name + ": not a JSON object");
    // The compiled schema copies what it needs; `doc` may go.
    Compiled compiled{std::make_unique<rapidjson::SchemaDocument>(doc), nullptr, pattern_fields(doc),
                      QuickSchema::compile(doc)};
    compiled.validator = std::make_unique<rapidjson::SchemaValidator>(*compiled.document);
    schemas_.emplace(name, std::move(compiled));
  }
}

bool SchemaRegistry::has(std::string_view name) const { return schemas_.find(name) != schemas_.end(); }

bool SchemaRegistry::has_quick_check(std::string_view name) const {
  const auto it = schemas_.find(name);
  return it != schemas_.end() && it->second.quick != nullptr;
}

std::optional<std::string> SchemaRegistry::validate(std::string_view name, const Value& doc) const {
  const auto it = schemas_.find(name);
  if (it == schemas_.end()) return "no schema named \"" + std::string(name) + "\"";
  // First, so that any control character reads the same: RapidJSON's regex engine
  // reads a string only up to its first NUL.
  if (it->second.patterns) {
    if (auto problem = find_control_character(*it->second.patterns, doc, "")) return problem;
  }
  if (it->second.quick && it->second.quick->accepts(doc)) return std::nullopt;
  rapidjson::SchemaValidator& validator = *it->second.validator;
  validator.Reset();  // whatever an earlier document left, valid or not
  if (doc.Accept(validator) && validator.IsValid()) return std::nullopt;
  return describe(name, validator, doc);
}

const std::vector<std::string>& SchemaRegistry::message_types() {
  static const std::vector<std::string> types{"quote_update", "analysis_request", "analysis_complete",
                                              "alert_triggered", "notification"};
  return types;
}

}  // namespace eventd
