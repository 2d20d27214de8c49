// Parsing JSON that comes from outside: message bodies, CLI input, config files,
// Redis values. Like Document::Parse, with a bound on nesting depth.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include <rapidjson/document.h>
#include <rapidjson/encodedstream.h>
#include <rapidjson/error/en.h>
#include <rapidjson/memorystream.h>
#include <rapidjson/reader.h>

namespace eventd {

// RapidJSON's parser recurses once per nesting level, and so does every walk over a
// document (key normalisation, schema validation, Writer, CopyFrom): a body of some
// 50 000 "[" overflows an 8 MiB stack and takes the process down. No document eventd
// reads comes near this depth.
inline constexpr unsigned kMaxJsonDepth = 64;

struct JsonParseError {
  std::size_t offset = 0;  // in bytes from the start of the text
  std::string what;        // RapidJSON's English text, e.g. "The document is empty."
};

namespace detail {

// Forwards the SAX events to the document and stops the parse (before the parser
// recurses any further) when an object or array would open deeper than `max`.
template <typename Document>
class DepthLimitedHandler {
 public:
  using Ch = typename Document::Ch;
  DepthLimitedHandler(Document& doc, unsigned max) : doc_(doc), max_(max) {}

  bool Null() { return doc_.Null(); }
  bool Bool(bool b) { return doc_.Bool(b); }
  bool Int(int i) { return doc_.Int(i); }
  bool Uint(unsigned i) { return doc_.Uint(i); }
  bool Int64(int64_t i) { return doc_.Int64(i); }
  bool Uint64(uint64_t i) { return doc_.Uint64(i); }
  bool Double(double d) { return doc_.Double(d); }
  bool RawNumber(const Ch* s, rapidjson::SizeType n, bool copy) { return doc_.RawNumber(s, n, copy); }
  bool String(const Ch* s, rapidjson::SizeType n, bool copy) { return doc_.String(s, n, copy); }
  bool Key(const Ch* s, rapidjson::SizeType n, bool copy) { return doc_.Key(s, n, copy); }
  bool StartObject() { return enter() && doc_.StartObject(); }
  bool EndObject(rapidjson::SizeType n) {
    --depth_;
    return doc_.EndObject(n);
  }
  bool StartArray() { return enter() && doc_.StartArray(); }
  bool EndArray(rapidjson::SizeType n) {
    --depth_;
    return doc_.EndArray(n);
  }

  bool too_deep() const { return too_deep_; }

 private:
  bool enter() {
    if (depth_ >= max_) {
      too_deep_ = true;
      return false;
    }
    ++depth_;
    return true;
  }

  Document& doc_;
  unsigned max_;
  unsigned depth_ = 0;
  bool too_deep_ = false;
};

}  // namespace detail

// Parses `text` into `doc` with RapidJSON `Flags`; nullopt when it succeeded. On error
// `doc` keeps its previous value, as with Document::Parse. Objects and arrays nested
// more than `max_depth` deep are an error ("Nested deeper than 64 levels.").
template <unsigned Flags = rapidjson::kParseDefaultFlags, typename Document>
std::optional<JsonParseError> parse_json(Document& doc, std::string_view text, unsigned max_depth = kMaxJsonDepth) {
  rapidjson::ParseResult result;
  bool too_deep = false;
  auto generate = [&](Document& target) {
    detail::DepthLimitedHandler<Document> handler(target, max_depth);
    rapidjson::MemoryStream ms(text.data(), text.size());
    rapidjson::EncodedInputStream<rapidjson::UTF8<>, rapidjson::MemoryStream> is(ms);
    rapidjson::GenericReader<rapidjson::UTF8<>, typename Document::EncodingType> reader;
    result = reader.template Parse<Flags>(is, handler);
    too_deep = handler.too_deep();
    return !result.IsError();
  };
  doc.Populate(generate);
  if (!result.IsError()) return std::nullopt;
  if (too_deep) return JsonParseError{result.Offset(), "Nested deeper than " + std::to_string(max_depth) + " levels."};
  return JsonParseError{result.Offset(), rapidjson::GetParseError_En(result.Code())};
}

}  // namespace eventd
