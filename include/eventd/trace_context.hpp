// W3C Trace Context (https://www.w3.org/TR/trace-context/) carried in AMQP headers:
// `traceparent` ("00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>") and
// `tracestate`. eventd keeps a message's trace: every message it derives carries the
// source's trace id with eventd's own span as the parent, and a source without a
// (valid) traceparent starts a trace. Pure: parsing, formatting, new ids.
#pragma once

#include <amqp.h>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace eventd {

inline constexpr std::string_view kTraceparentHeader = "traceparent";
inline constexpr std::string_view kTracestateHeader = "tracestate";
// Dead letters and retries name the trace plainly, too.
inline constexpr std::string_view kTraceIdHeader = "x-trace-id";
inline constexpr std::size_t kMaxTracestateBytes = 512;

struct TraceParent {
  std::string trace_id;   // 32 lower-case hex, not all zero
  std::string parent_id;  // 16 lower-case hex, not all zero
  std::string flags;      // 2 hex
};

// nullopt unless `text` is a valid traceparent (version 00, or a later version whose
// first four fields parse, as the spec asks of a reader).
std::optional<TraceParent> parse_traceparent(std::string_view text);
std::string format_traceparent(std::string_view trace_id, std::string_view parent_id, std::string_view flags);

// Random ids (never all zero).
std::string new_trace_id();
std::string new_span_id();

// A message's trace as eventd handles it: its trace id (the producer's, or a new one),
// eventd's span for this delivery (the parent of whatever it derives), the flags and
// the producer's tracestate. New ids are made on first use: most messages derive
// nothing and are never logged, and the hot path should not pay for random ids.
class TraceContext {
 public:
  const std::string& trace_id() const;
  const std::string& span_id() const;
  const std::string& flags() const { return flags_; }
  const std::string& tracestate() const { return tracestate_; }
  bool started() const { return started_; }  // no valid traceparent came: eventd began the trace

  // The traceparent of a message eventd derives from this one.
  std::string child_traceparent() const { return format_traceparent(trace_id(), span_id(), flags_); }

 private:
  friend TraceContext trace_of(const amqp_table_t* headers);
  mutable std::string trace_id_;  // empty until first use when started_
  mutable std::string span_id_;   // empty until first use
  std::string flags_ = "01";
  std::string tracestate_;
  bool started_ = true;
};

// From a delivery's headers (nullptr: none).
TraceContext trace_of(const amqp_table_t* headers);

}  // namespace eventd
