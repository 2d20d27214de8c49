// JSON-lines logger: formats with RapidJSON's writer (correct escaping) and writes
// each line with a single write(2) so lines from one process never interleave.
#include "eventd/log.hpp"
#include "eventd/utf8.hpp"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <ctime>

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

namespace eventd::log {
namespace {

std::atomic<int> g_level{static_cast<int>(Level::Info)};

const char* level_name(Level level) {
  switch (level) {
    case Level::Debug: return "debug";
    case Level::Info: return "info";
    case Level::Warn: return "warn";
    case Level::Error: return "error";
  }
  return "info";
}

// Producers' bytes (message ids, error texts) can be any bytes: keep lines valid JSON.
void put_string(rapidjson::Writer<rapidjson::StringBuffer>& w, std::string_view s) {
  if (valid_utf8(s)) {
    w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
    return;
  }
  std::string clean = sanitize_utf8(s);
  w.String(clean.data(), static_cast<rapidjson::SizeType>(clean.size()));
}

}  // namespace

bool set_level(std::string_view name) {
  for (Level l : {Level::Debug, Level::Info, Level::Warn, Level::Error}) {
    if (name == level_name(l)) {
      set_level(l);
      return true;
    }
  }
  return false;
}

void set_level(Level level) { g_level.store(static_cast<int>(level)); }

bool enabled(Level level) { return static_cast<int>(level) >= g_level.load(std::memory_order_relaxed); }

std::string format(Level level, std::string_view msg, Fields fields, int64_t now_ms) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  std::time_t secs = static_cast<std::time_t>(now_ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char ts[40];
  std::size_t n = std::strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(ts + n, sizeof ts - n, ".%03dZ", static_cast<int>(now_ms % 1000));
  w.StartObject();
  w.Key("ts");
  w.String(ts);
  w.Key("level");
  w.String(level_name(level));
  w.Key("msg");
  put_string(w, msg);
  for (const Field& f : fields) {
    // An empty text field is one that is not known (no message_id, say): leave it out.
    if (const auto* text = std::get_if<std::string_view>(&f.value); text != nullptr && text->empty()) continue;
    put_string(w, f.key);  // keys are literals chosen by us
    std::visit(
        [&w](auto v) {
          using T = decltype(v);
          if constexpr (std::is_same_v<T, std::string_view>) put_string(w, v);
          else if constexpr (std::is_same_v<T, int64_t>) w.Int64(v);
          else if constexpr (std::is_same_v<T, uint64_t>) w.Uint64(v);
          else if constexpr (std::is_same_v<T, double>) w.Double(v);
          else w.Bool(v);
        },
        f.value);
  }
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize());
}

void write(Level level, std::string_view msg, Fields fields) {
  auto now = std::chrono::system_clock::now().time_since_epoch();
  std::string line = format(level, msg, fields,
                            std::chrono::duration_cast<std::chrono::milliseconds>(now).count());
  line.push_back('\n');
  const char* p = line.data();
  std::size_t left = line.size();
  while (left > 0) {
    ssize_t n = ::write(STDERR_FILENO, p, left);
    if (n <= 0) return;  // nowhere left to report a logging failure
    p += n;
    left -= static_cast<std::size_t>(n);
  }
}

}  // namespace eventd::log
