// W3C traceparent parsing and the ids eventd makes.
#include <doctest/doctest.h>

#include <set>

#include "eventd/amqp_table.hpp"
#include "eventd/trace_context.hpp"

using namespace eventd;

TEST_CASE("trace context: traceparent as the W3C spec defines it") {
  auto t = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
  REQUIRE(t);
  CHECK(t->trace_id == "4bf92f3577b34da6a3ce929d0e0e4736");
  CHECK(t->parent_id == "00f067aa0ba902b7");
  CHECK(t->flags == "01");
  CHECK(format_traceparent(t->trace_id, t->parent_id, t->flags) ==
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
  // A later version may add fields after a dash; version 00 may not.
  CHECK(parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"));
  CHECK_FALSE(parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"));
  CHECK_FALSE(parse_traceparent("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
  CHECK_FALSE(parse_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01"));  // zero trace id
  CHECK_FALSE(parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"));  // zero parent
  CHECK_FALSE(parse_traceparent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"));  // upper case
  CHECK_FALSE(parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01"));
  CHECK_FALSE(parse_traceparent(""));
  CHECK_FALSE(parse_traceparent(std::string_view("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0\0", 55)));
}

TEST_CASE("trace context: new ids are hex, the right length, and differ") {
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    std::string trace = new_trace_id(), span = new_span_id();
    CHECK(trace.size() == 32);
    CHECK(span.size() == 16);
    CHECK(parse_traceparent(format_traceparent(trace, span, "01")));
    seen.insert(trace);
  }
  CHECK(seen.size() == 100);
}

TEST_CASE("trace context: from a delivery's headers") {
  SUBCASE("a valid traceparent is continued, with a span of eventd's own") {
    FieldTable h;
    h.add("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").add("tracestate", "congo=t61rcWkgMzE");
    amqp_table_t table = h.table();
    TraceContext t = trace_of(&table);
    CHECK_FALSE(t.started());
    CHECK(t.trace_id() == "4bf92f3577b34da6a3ce929d0e0e4736");
    CHECK(t.tracestate() == "congo=t61rcWkgMzE");
    CHECK(t.span_id() != "00f067aa0ba902b7");
    auto child = parse_traceparent(t.child_traceparent());
    REQUIRE(child);
    CHECK(child->trace_id == t.trace_id());
    CHECK(child->parent_id == t.span_id());
  }
  SUBCASE("none, or an invalid one: eventd starts a trace") {
    CHECK(trace_of(nullptr).started());
    FieldTable h;
    h.add("traceparent", "garbage");
    amqp_table_t table = h.table();
    TraceContext t = trace_of(&table);
    CHECK(t.started());
    CHECK(t.trace_id().size() == 32);
  }
  SUBCASE("an oversized tracestate is dropped") {
    FieldTable h;
    h.add("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .add("tracestate", std::string(kMaxTracestateBytes + 1, 'a'));
    amqp_table_t table = h.table();
    CHECK(trace_of(&table).tracestate().empty());
  }
}
