// A quick check that a document is valid against one of eventd's JSON Schemas, before
// RapidJSON's validator: that validator took a quarter of eventd's instructions per
// message (a context, a hasher and a regex run per value). The quick check implements
// the draft-04 keywords eventd's schemas use, with RapidJSON's own semantics (its
// number comparisons, code-point lengths), and says only "valid" or "not known":
// whatever it does not accept goes to RapidJSON's validator, which decides and words
// the error. So it can never reject a document, only spare a valid one the full run.
//
// Implemented: type (one name), enum (of strings), required, properties,
// additionalProperties (boolean or schema), minimum, maximum, exclusiveMinimum,
// exclusiveMaximum, minLength, maxLength, pattern of the form ^[class]+$ or ^[class]*$
// (single characters and ranges), items (one schema), minItems, maxItems; title,
// description, $schema and default are ignored. A schema with any other keyword, or a
// form of these it does not know, is not compiled (compile() returns nullptr) and every
// document goes to RapidJSON as before.
#pragma once

#include <memory>

#include <rapidjson/document.h>

namespace eventd {

class QuickSchema {
 public:
  static std::unique_ptr<QuickSchema> compile(const rapidjson::Value& schema);
  ~QuickSchema();
  QuickSchema(const QuickSchema&) = delete;
  QuickSchema& operator=(const QuickSchema&) = delete;

  // true: RapidJSON's validator accepts `doc` too. false: not known (run it).
  bool accepts(const rapidjson::Value& doc) const;

  struct Node;  // one (sub)schema, compiled (quick_schema.cpp)
  explicit QuickSchema(std::unique_ptr<Node> root);  // compile() makes the root

 private:
  std::unique_ptr<Node> root_;
};

}  // namespace eventd
