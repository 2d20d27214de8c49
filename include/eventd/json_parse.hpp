// Parsing JSON that comes from outside: message bodies, CLI input, config files,
// Redis values. Like Document::Parse, with a bound on nesting depth and, on request,
// no key twice in one object.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <memory_resource>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <vector>

#include <rapidjson/document.h>
#include <rapidjson/encodedstream.h>
#include <rapidjson/error/en.h>
#include <rapidjson/memorystream.h>
#include <rapidjson/reader.h>

#include "eventd/utf8.hpp"

namespace eventd {

// RapidJSON's parser recurses once per nesting level, and so does every walk over a
// document (key normalisation, schema validation, Writer, CopyFrom): a body of some
// 50 000 "[" overflows an 8 MiB stack and takes the process down. No document eventd
// reads comes near this depth.
inline constexpr unsigned kMaxJsonDepth = 64;

// A parse flag of eventd's own, beside RapidJSON's kParse*Flag bits: a key given twice
// in one object is an error ("Duplicate key \"price\" at /price."). RapidJSON keeps
// both members; FindMember finds the first while the schema validator checks each, so
// `{"price":1,"price":-1}` would be judged by one value and handled by the other.
inline constexpr unsigned kParseUniqueKeysFlag = 1u << 20;

struct JsonParseError {
  std::size_t offset = 0;  // in bytes from the start of the text
  std::string what;        // RapidJSON's English text, e.g. "The document is empty."
};

namespace detail {

// `text` with control characters written \u00XX (and '"', '\\' escaped when quoting),
// so that a key can be shown on one line.
inline std::string printable_json_text(std::string_view text, bool quote) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  if (quote) out += '"';
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      out += "\\u00";
      out += kHex[u >> 4];
      out += kHex[u & 0xf];
    } else if (quote && (c == '"' || c == '\\')) {
      out += '\\';
      out += c;
    } else {
      out += c;
    }
  }
  if (quote) out += '"';
  return out;
}

// The keys of every object open along the path the parser is on, to find a key given
// twice in one object, and enough of the path to name it as a JSON pointer. Keys are
// copied (the reader's buffer for them is reused) into storage that starts on the
// stack, so a typical body costs no allocation; an object with many keys gets a hash
// set, so a body of 100 000 keys costs linear time, not quadratic.
class KeyTracker {
 public:
  KeyTracker() = default;
  KeyTracker(const KeyTracker&) = delete;
  KeyTracker& operator=(const KeyTracker&) = delete;

  void open(bool object) {
    value();
    frames_.push_back(Frame{object, 0, static_cast<uint32_t>(keys_.size()), nullptr});
  }
  void close() {
    const Frame& f = frames_.back();
    if (f.first_key < keys_.size()) {
      arena_.resize(keys_[f.first_key].first);
      keys_.resize(f.first_key);
    }
    frames_.pop_back();
  }
  // A value starts: counts the elements of the innermost array.
  void value() {
    if (!frames_.empty() && !frames_.back().object) ++frames_.back().index;
  }
  // false when `key` is a key of the innermost object already.
  bool add(std::string_view key) {
    Frame& f = frames_.back();
    const std::size_t n = keys_.size() - f.first_key;
    if (f.many) {
      if (!f.many->emplace(key).second) return false;
    } else {
      for (std::size_t i = f.first_key; i < keys_.size(); ++i)
        if (key_at(i) == key) return false;
      if (n + 1 > kLinear) {
        f.many = std::make_unique<std::unordered_set<std::string>>();
        for (std::size_t i = f.first_key; i < keys_.size(); ++i) f.many->emplace(key_at(i));
        f.many->emplace(key);
      }
    }
    keys_.emplace_back(static_cast<uint32_t>(arena_.size()), static_cast<uint32_t>(key.size()));
    arena_.append(key);
    return true;
  }
  // The JSON pointer (RFC 6901) of `key` in the innermost object.
  std::string pointer(std::string_view key) const {
    std::string out;
    for (std::size_t i = 0; i < frames_.size(); ++i) {
      out += '/';
      if (!frames_[i].object) {
        out += std::to_string(frames_[i].index - 1);
        continue;
      }
      const std::string_view token = i + 1 < frames_.size() ? key_at(frames_[i + 1].first_key - 1) : key;
      for (const char c : token) {
        if (c == '~') out += "~0";
        else if (c == '/') out += "~1";
        else out += c;
      }
    }
    return out;
  }

 private:
  static constexpr std::size_t kLinear = 16;
  struct Frame {
    bool object;
    uint32_t index;      // arrays: elements begun so far
    uint32_t first_key;  // objects: its first entry in keys_
    std::unique_ptr<std::unordered_set<std::string>> many;
  };
  std::string_view key_at(std::size_t i) const { return std::string_view(arena_).substr(keys_[i].first, keys_[i].second); }

  alignas(std::max_align_t) char inline_[1024];
  std::pmr::monotonic_buffer_resource memory_{inline_, sizeof inline_};
  std::pmr::vector<Frame> frames_{&memory_};
  std::pmr::string arena_{&memory_};
  std::pmr::vector<std::pair<uint32_t, uint32_t>> keys_{&memory_};  // offset in arena_, length
};

struct NoKeyTracker {
  void open(bool) {}
  void close() {}
  void value() {}
};

// Forwards the SAX events to the document and stops the parse (before the parser
// recurses any further) when an object or array would open deeper than `max`, or,
// with a KeyTracker, at the second occurrence of a key in one object.
template <typename Document, typename Keys = NoKeyTracker>
class DepthLimitedHandler {
 public:
  using Ch = typename Document::Ch;
  DepthLimitedHandler(Document& doc, unsigned max) : doc_(doc), max_(max) {}

  bool Null() { return keys_.value(), doc_.Null(); }
  bool Bool(bool b) { return keys_.value(), doc_.Bool(b); }
  bool Int(int i) { return keys_.value(), doc_.Int(i); }
  bool Uint(unsigned i) { return keys_.value(), doc_.Uint(i); }
  bool Int64(int64_t i) { return keys_.value(), doc_.Int64(i); }
  bool Uint64(uint64_t i) { return keys_.value(), doc_.Uint64(i); }
  bool Double(double d) { return keys_.value(), doc_.Double(d); }
  bool RawNumber(const Ch* s, rapidjson::SizeType n, bool copy) { return keys_.value(), doc_.RawNumber(s, n, copy); }
  bool String(const Ch* s, rapidjson::SizeType n, bool copy) { return keys_.value(), doc_.String(s, n, copy); }
  bool Key(const Ch* s, rapidjson::SizeType n, bool copy) {
    if constexpr (!std::is_same_v<Keys, NoKeyTracker>) {
      const std::string_view key(s, n);
      if (!keys_.add(key)) {
        duplicate_ = "Duplicate key " + printable_json_text(key, true) + " at " +
                     printable_json_text(keys_.pointer(key), false) + ".";
        return false;
      }
    }
    return doc_.Key(s, n, copy);
  }
  bool StartObject() { return enter(true) && doc_.StartObject(); }
  bool EndObject(rapidjson::SizeType n) {
    leave();
    return doc_.EndObject(n);
  }
  bool StartArray() { return enter(false) && doc_.StartArray(); }
  bool EndArray(rapidjson::SizeType n) {
    leave();
    return doc_.EndArray(n);
  }

  bool too_deep() const { return too_deep_; }
  // Set when the parse stopped at a duplicate key: the error text.
  const std::string& duplicate() const { return duplicate_; }

 private:
  bool enter(bool object) {
    if (depth_ >= max_) {
      too_deep_ = true;
      return false;
    }
    ++depth_;
    keys_.open(object);
    return true;
  }
  void leave() {
    --depth_;
    keys_.close();
  }

  Document& doc_;
  unsigned max_;
  unsigned depth_ = 0;
  bool too_deep_ = false;
  Keys keys_;
  std::string duplicate_;
};

}  // namespace detail

// Parses `text` into `doc` with RapidJSON `Flags` (and kParseUniqueKeysFlag); nullopt
// when it succeeded. On error `doc` keeps its previous value, as with Document::Parse.
// Objects and arrays nested more than `max_depth` deep are an error ("Nested deeper
// than 64 levels."); with kParseUniqueKeysFlag so is a key given twice in one object
// ("Duplicate key \"price\" at /price.", the offset just after the second one).
namespace detail {

// One parse of `is` into `doc` with the reader flags `ReaderFlags`, the depth bound and,
// when asked, the duplicate-key check; nullopt when it succeeded.
template <unsigned ReaderFlags, bool kUniqueKeys, typename Document, typename Stream>
std::optional<JsonParseError> parse_stream(Document& doc, Stream& is, unsigned max_depth) {
  using Handler = DepthLimitedHandler<Document, std::conditional_t<kUniqueKeys, KeyTracker, NoKeyTracker>>;
  rapidjson::ParseResult result;
  bool too_deep = false;
  std::string duplicate;
  auto generate = [&](Document& target) {
    Handler handler(target, max_depth);
    // One reader per thread and instantiation: its stack (the text of the string being
    // read) keeps its memory from one parse to the next; a reader per parse mallocs it
    // and frees it again each time. Parse() starts from a clean state, even after an error.
    thread_local rapidjson::GenericReader<rapidjson::UTF8<>, typename Document::EncodingType> reader;
    result = reader.template Parse<ReaderFlags>(is, handler);
    too_deep = handler.too_deep();
    if (result.IsError()) duplicate = handler.duplicate();
    return !result.IsError();
  };
  doc.Populate(generate);
  if (!result.IsError()) return std::nullopt;
  if (too_deep) return JsonParseError{result.Offset(), "Nested deeper than " + std::to_string(max_depth) + " levels."};
  if (!duplicate.empty()) return JsonParseError{result.Offset(), std::move(duplicate)};
  return JsonParseError{result.Offset(), rapidjson::GetParseError_En(result.Code())};
}

}  // namespace detail

template <unsigned Flags = rapidjson::kParseDefaultFlags, typename Document>
std::optional<JsonParseError> parse_json(Document& doc, std::string_view text, unsigned max_depth = kMaxJsonDepth) {
  static_assert((Flags & rapidjson::kParseInsituFlag) == 0, "in place: parse_json_in_place");
  if constexpr ((Flags & rapidjson::kParseValidateEncodingFlag) != 0) {
    // RapidJSON checks each character of each string, a third of a parse; the whole
    // text checked at once is far cheaper, and valid text cannot fail that check. Only
    // text with an invalid sequence is parsed with it, for RapidJSON's own error.
    if (valid_utf8(text)) return parse_json<(Flags & ~rapidjson::kParseValidateEncodingFlag)>(doc, text, max_depth);
  }
  rapidjson::MemoryStream ms(text.data(), text.size());
  rapidjson::EncodedInputStream<rapidjson::UTF8<>, rapidjson::MemoryStream> is(ms);
  return detail::parse_stream<(Flags & ~kParseUniqueKeysFlag), (Flags & kParseUniqueKeysFlag) != 0>(doc, is,
                                                                                                 max_depth);
}

// parse_json(doc, text), parsed in place (RapidJSON's kParseInsituFlag) in `scratch`,
// which it fills with a copy of `text`: the document's strings then point into
// `scratch` instead of being copied out of the parser one character at a time, so
// `scratch` must outlive the document, unchanged. The same document or error as
// parse_json: a text this cannot take (a NUL byte ends an in-place parse; invalid
// UTF-8) and any text that fails goes to parse_json, which also words the error.
// (On error `doc` keeps its previous value, but that value's strings may have been in
// `scratch`: give each document its own, or parse into a fresh one, as the dispatcher does.)
template <unsigned Flags = rapidjson::kParseDefaultFlags, typename Document>
std::optional<JsonParseError> parse_json_in_place(Document& doc, std::string_view text, std::string& scratch,
                                                  unsigned max_depth = kMaxJsonDepth) {
  static_assert((Flags & rapidjson::kParseInsituFlag) == 0);
  constexpr bool kCheckUtf8 = (Flags & rapidjson::kParseValidateEncodingFlag) != 0;
  if (std::memchr(text.data(), '\0', text.size()) == nullptr && (!kCheckUtf8 || valid_utf8(text))) {
    scratch.assign(text);
    rapidjson::InsituStringStream is(scratch.data());
    constexpr unsigned kReaderFlags =
        (Flags & ~(kParseUniqueKeysFlag | rapidjson::kParseValidateEncodingFlag)) | rapidjson::kParseInsituFlag;
    if (!detail::parse_stream<kReaderFlags, (Flags & kParseUniqueKeysFlag) != 0>(doc, is, max_depth)) {
      return std::nullopt;
    }
  }
  return parse_json<Flags>(doc, text, max_depth);
}

}  // namespace eventd
