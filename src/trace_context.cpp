// W3C Trace Context (see trace_context.hpp).
#include "eventd/trace_context.hpp"

#include <random>

#include "eventd/amqp_table.hpp"

namespace eventd {
namespace {

bool lower_hex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool all_zero(std::string_view s) { return s.find_first_not_of('0') == std::string_view::npos; }

std::string random_hex(std::size_t n) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(n, '0');
  do {
    for (char& c : out) c = kDigits[rng() & 0xf];
  } while (all_zero(out));
  return out;
}

}  // namespace

std::optional<TraceParent> parse_traceparent(std::string_view text) {
  // version "-" trace-id "-" parent-id "-" flags; a later version may append fields.
  if (text.size() < 55 || text[2] != '-' || text[35] != '-' || text[52] != '-') return std::nullopt;
  const std::string_view version = text.substr(0, 2), trace = text.substr(3, 32), parent = text.substr(36, 16),
                         flags = text.substr(53, 2);
  if (!lower_hex(version) || version == "ff" || !lower_hex(trace) || !lower_hex(parent) || !lower_hex(flags)) {
    return std::nullopt;
  }
  if (version == "00" && text.size() != 55) return std::nullopt;
  if (version != "00" && text.size() > 55 && text[55] != '-') return std::nullopt;
  if (all_zero(trace) || all_zero(parent)) return std::nullopt;
  return TraceParent{std::string(trace), std::string(parent), std::string(flags)};
}

std::string format_traceparent(std::string_view trace_id, std::string_view parent_id, std::string_view flags) {
  std::string out = "00-";
  out.append(trace_id).append("-").append(parent_id).append("-").append(flags);
  return out;
}

std::string new_trace_id() { return random_hex(32); }
std::string new_span_id() { return random_hex(16); }

const std::string& TraceContext::trace_id() const {
  if (trace_id_.empty()) trace_id_ = new_trace_id();
  return trace_id_;
}

const std::string& TraceContext::span_id() const {
  if (span_id_.empty()) span_id_ = new_span_id();
  return span_id_;
}

TraceContext trace_of(const amqp_table_t* headers) {
  TraceContext t;
  std::string text;
  if (headers == nullptr || !table_get_string(headers, kTraceparentHeader, text)) return t;
  if (auto parent = parse_traceparent(text)) {
    t.trace_id_ = std::move(parent->trace_id);
    t.flags_ = std::move(parent->flags);
    t.started_ = false;
    // The spec lets a vendor list grow to 32 members; a longer one is dropped, not
    // carried into every message derived from it.
    if (table_get_string(headers, kTracestateHeader, t.tracestate_) && t.tracestate_.size() > kMaxTracestateBytes) {
      t.tracestate_.clear();
    }
  }
  return t;
}

}  // namespace eventd
