// bench-micro: per-message costs of the pieces of eventd's hot path that the
// profiles point at, measured in isolation with the same RapidJSON calls eventd
// makes (it does not link eventd, so it keeps building while src/ changes).
//
//   bench-micro [--schema schemas/quote_update.schema.json] [--iterations 200000] [--in-flight 500]
//
//  - schema validation as SchemaRegistry::validate does it (a SchemaValidator per
//    message, Accept), with the shipped schema (symbol pattern "^[...]+$" plus
//    maxLength 32), with the counted form "^[...]{1,32}$" it replaced (same
//    language; RapidJSON's regex engine expands the count into 32 states), and with
//    no pattern at all;
//  - rapidjson::Document::Parse of a typical quote_update body, and eventd's parse_json
//    of it as the dispatcher calls it (depth bound, UTF-8 check), with and without the
//    duplicate-key check;
//  - heap held per in-flight message by a parsed rapidjson::Document (the dispatcher
//    keeps one per unacked message, so prefetch 500 keeps 500), with the default
//    allocator and with a small-chunk / inline-buffer MemoryPoolAllocator.
// Prints one line per measurement.
#include <malloc.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <rapidjson/document.h>
#include <rapidjson/schema.h>

#include "eventd/json_parse.hpp"

namespace {

using Clock = std::chrono::steady_clock;

const char* kBody =
    R"({"type":"quote_update","timestamp":1795446676451,"symbol":"AAPL","price":187.12,"change":-1.5})";

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "bench-micro: %s\n", what.c_str());
  std::exit(1);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) die("cannot read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::unique_ptr<rapidjson::SchemaDocument> compile(const std::string& text) {
  rapidjson::Document d;
  d.Parse(text.data(), text.size());
  if (d.HasParseError()) die("schema is not valid JSON");
  return std::make_unique<rapidjson::SchemaDocument>(d);
}

template <class F>
double ns_per_op(std::size_t iterations, F&& f) {
  for (std::size_t i = 0; i < iterations / 20 + 1; ++i) f();  // warm-up
  auto t0 = Clock::now();
  for (std::size_t i = 0; i < iterations; ++i) f();
  return std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / static_cast<double>(iterations);
}

double validate_ns(const rapidjson::SchemaDocument& schema, const rapidjson::Document& doc, std::size_t iterations) {
  bool ok = true;
  double ns = ns_per_op(iterations, [&] {
    rapidjson::SchemaValidator validator(schema);  // as SchemaRegistry::validate: one per message
    ok = doc.Accept(validator) && validator.IsValid() && ok;
  });
  if (!ok) die("the sample body does not validate");
  return ns;
}

std::size_t heap_in_use() {
  struct mallinfo2 mi = mallinfo2();
  return mi.uordblks + mi.hblkhd;
}

}  // namespace

int main(int argc, char** argv) {
  std::string schema_path = "schemas/quote_update.schema.json";
  std::size_t iterations = 200000;
  std::size_t in_flight = 500;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) die(a + " needs a value");
      return argv[++i];
    };
    if (a == "--schema") schema_path = value();
    else if (a == "--iterations") iterations = std::strtoull(value().c_str(), nullptr, 10);
    else if (a == "--in-flight") in_flight = std::strtoull(value().c_str(), nullptr, 10);
    else die("unknown argument " + a);
  }

  const std::string shipped = read_file(schema_path);
  const std::string from = "]+$\"";
  std::string counted = shipped;
  std::size_t at = counted.find(from);
  if (at == std::string::npos) die("the schema has no \"^[...]+$\" pattern to compare with");
  counted.replace(at, from.size(), "]{1,32}$\"");
  // The shipped pattern line is followed by minLength/maxLength, so it ends in a
  // comma: dropping the whole line leaves valid JSON.
  std::string no_pattern = shipped;
  std::size_t p = no_pattern.find("\"pattern\"");
  std::size_t eol = no_pattern.find('\n', p);
  no_pattern.erase(p, eol - p + 1);

  rapidjson::Document doc;
  doc.Parse(kBody);
  auto s_shipped = compile(shipped);
  auto s_counted = compile(counted);
  auto s_none = compile(no_pattern);

  std::printf("validate, shipped schema (^[A-Za-z0-9._:-]+$ + maxLength 32):      %8.0f ns/msg\n",
              validate_ns(*s_shipped, doc, iterations));
  std::printf("validate, counted pattern ^[A-Za-z0-9._:-]{1,32}$ (the old form):  %8.0f ns/msg\n",
              validate_ns(*s_counted, doc, iterations));
  std::printf("validate, no pattern (reference):                                  %8.0f ns/msg\n",
              validate_ns(*s_none, doc, iterations));
  std::printf("parse (rapidjson::Document::Parse, %zu-byte body):                 %8.0f ns/msg\n",
              std::string(kBody).size(), ns_per_op(iterations, [&] {
                rapidjson::Document d;
                d.Parse(kBody);
              }));
  const std::string_view body(kBody);
  auto parse_json_ns = [&](auto flags) {
    return ns_per_op(iterations, [&] {
      char buffer[1024];  // as the dispatcher: a 1 KiB inline pool per message
      rapidjson::MemoryPoolAllocator<> pool(buffer, sizeof buffer, 1024);
      rapidjson::Document d(&pool);
      if (eventd::parse_json<decltype(flags)::value>(d, body)) die("the sample body does not parse");
    });
  };
  std::printf("parse_json, UTF-8 check + depth bound (the dispatcher without it):  %8.0f ns/msg\n",
              parse_json_ns(std::integral_constant<unsigned, rapidjson::kParseValidateEncodingFlag>{}));
  std::printf("parse_json, + duplicate-key check (what the dispatcher runs):       %8.0f ns/msg\n",
              parse_json_ns(std::integral_constant<unsigned, rapidjson::kParseValidateEncodingFlag |
                                                                 eventd::kParseUniqueKeysFlag>{}));

  {
    std::size_t before = heap_in_use();
    std::vector<std::unique_ptr<rapidjson::Document>> docs;
    for (std::size_t i = 0; i < in_flight; ++i) {
      docs.push_back(std::make_unique<rapidjson::Document>());
      docs.back()->Parse(kBody);
    }
    std::size_t held = heap_in_use() - before;
    std::printf("heap held by %zu in-flight Documents, default allocator (64 KiB chunk): %7.1f KiB/msg, %6.1f MiB\n",
                in_flight, static_cast<double>(held) / 1024.0 / static_cast<double>(in_flight),
                static_cast<double>(held) / 1048576.0);
  }
  {
    std::size_t before = heap_in_use();
    struct Owned {
      rapidjson::MemoryPoolAllocator<> pool{1024};
      rapidjson::Document doc{&pool};
    };
    std::vector<std::unique_ptr<Owned>> docs;
    for (std::size_t i = 0; i < in_flight; ++i) {
      docs.push_back(std::make_unique<Owned>());
      docs.back()->doc.Parse(kBody);
    }
    std::size_t held = heap_in_use() - before;
    std::printf("heap held by %zu in-flight Documents, MemoryPoolAllocator(1 KiB chunk): %6.1f KiB/msg, %6.1f MiB\n",
                in_flight, static_cast<double>(held) / 1024.0 / static_cast<double>(in_flight),
                static_cast<double>(held) / 1048576.0);
  }
  return 0;
}
