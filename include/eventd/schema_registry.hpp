// JSON Schemas (draft-04, RapidJSON's validator) for every message type, the monitor
// spec and the config, compiled into the binary from schemas/ at build time.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <rapidjson/document.h>
#include <rapidjson/schema.h>

#include "eventd/quick_schema.hpp"

namespace eventd {

namespace detail {
struct PatternFields;  // where a schema has "pattern" (schema_registry.cpp)
}

// The raw text of schemas/<name>.schema.json as embedded at build time, or empty.
std::string_view embedded_schema(std::string_view name);
// Every embedded schema name ("quote_update", ..., "monitor", "config").
std::vector<std::string> embedded_schema_names();

class SchemaRegistry {
 public:
  // Compiles every embedded schema once. Throws std::runtime_error naming the schema
  // if one does not parse (a build defect, never user input).
  SchemaRegistry();

  bool has(std::string_view name) const;

  // std::nullopt when `doc` is valid against schema `name`; otherwise one line naming
  // the field as a JSON pointer and what was expected, e.g.
  //   "/price: must be > 0, got 0"     (exclusiveMinimum)
  //   "/symbol: required field missing"
  //   "/analysisType: must be one of chart, options, full, got \"daily\""
  //   "/alertId: expected integer, got string"
  //   "/rules/0/cooldown: unknown key; did you mean \"cooldownSec\"?"
  // A pointer to the whole document reads "(root)".
  // A string that a "pattern" checks must hold no control character (U+0000-U+001F,
  // U+007F): RapidJSON's regex stops at NUL, so "A\u0000B" would pass "^[A-Z]+$".
  //   "/symbol: must not contain control characters, got \"A\u0000B\""
  // `name` must be known (has(name)). A document the quick check (quick_schema.hpp)
  // accepts is valid without RapidJSON's validator.
  std::optional<std::string> validate(std::string_view name, const rapidjson::Value& doc) const;
  // Whether the quick check serves schema `name` (tests, benchmarks).
  bool has_quick_check(std::string_view name) const;

  // The five message types of DESIGN.md, in a stable order.
  static const std::vector<std::string>& message_types();

 private:
  struct Compiled {
    std::unique_ptr<rapidjson::SchemaDocument> document;
    // Reset for each document instead of built for it (its stacks are allocations a
    // message need not pay). Not for concurrent use: eventd validates on its one loop
    // thread.
    std::unique_ptr<rapidjson::SchemaValidator> validator;
    std::shared_ptr<const detail::PatternFields> patterns;  // the fields a "pattern" checks (none: null)
    std::unique_ptr<QuickSchema> quick;  // valid documents without the validator (null: not compiled)
  };
  std::map<std::string, Compiled, std::less<>> schemas_;
};

}  // namespace eventd
