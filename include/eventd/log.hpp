// JSON-lines logging on stderr: one object a line with ts, level, msg and fields.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <variant>

namespace eventd::log {

enum class Level { Debug = 0, Info = 1, Warn = 2, Error = 3 };

// Returns false for an unknown name; the level is then left as it was.
bool set_level(std::string_view name);
void set_level(Level level);
bool enabled(Level level);

struct Field {
  using Value = std::variant<std::string_view, int64_t, uint64_t, double, bool>;
  Field(std::string_view k, std::string_view v) : key(k), value(v) {}
  Field(std::string_view k, const char* v) : key(k), value(std::string_view(v)) {}
  Field(std::string_view k, const std::string& v) : key(k), value(std::string_view(v)) {}
  Field(std::string_view k, int v) : key(k), value(int64_t{v}) {}
  Field(std::string_view k, long v) : key(k), value(int64_t{v}) {}
  Field(std::string_view k, long long v) : key(k), value(int64_t{v}) {}
  Field(std::string_view k, unsigned v) : key(k), value(uint64_t{v}) {}
  Field(std::string_view k, unsigned long v) : key(k), value(uint64_t{v}) {}
  Field(std::string_view k, unsigned long long v) : key(k), value(uint64_t{v}) {}
  Field(std::string_view k, double v) : key(k), value(v) {}
  Field(std::string_view k, bool v) : key(k), value(v) {}
  std::string_view key;
  Value value;
};

using Fields = std::initializer_list<Field>;

// Formats one line (no trailing newline); exposed for tests.
std::string format(Level level, std::string_view msg, Fields fields, int64_t now_ms);
void write(Level level, std::string_view msg, Fields fields = {});

inline void debug(std::string_view msg, Fields f = {}) { if (enabled(Level::Debug)) write(Level::Debug, msg, f); }
inline void info(std::string_view msg, Fields f = {}) { if (enabled(Level::Info)) write(Level::Info, msg, f); }
inline void warn(std::string_view msg, Fields f = {}) { if (enabled(Level::Warn)) write(Level::Warn, msg, f); }
inline void error(std::string_view msg, Fields f = {}) { write(Level::Error, msg, f); }

}  // namespace eventd::log
