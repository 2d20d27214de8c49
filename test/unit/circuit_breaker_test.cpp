// Tests for src/circuit_breaker.cpp.
#include <doctest/doctest.h>

#include "eventd/circuit_breaker.hpp"

namespace {

using eventd::CircuitBreaker;
using eventd::CircuitState;

CircuitBreaker make(uint32_t threshold = 3, int64_t timeout_ms = 1000, uint32_t trials = 1) {
  return CircuitBreaker(eventd::CircuitBreakerConfig{threshold, timeout_ms, trials});
}

// Opens `cb` at `now` with threshold failures.
void open_at(CircuitBreaker& cb, int64_t now) {
  for (uint32_t i = 0; i < cb.config().failure_threshold; ++i) {
    REQUIRE(cb.allow(now));
    cb.record_failure(now);
  }
  REQUIRE(cb.state(now) == CircuitState::Open);
}

}  // namespace

TEST_CASE("circuit_breaker: closed allows and counts consecutive failures") {
  auto cb = make(3);
  CHECK(cb.state(0) == CircuitState::Closed);
  CHECK(cb.allow(0));
  CHECK(cb.retry_after_ms(0) == 0);

  SUBCASE("below the threshold it stays closed") {
    cb.record_failure(10);
    cb.record_failure(20);
    CHECK(cb.consecutive_failures() == 2);
    CHECK(cb.state(20) == CircuitState::Closed);
    CHECK(cb.allow(20));
  }
  SUBCASE("a success resets the count, so failures must be consecutive") {
    cb.record_failure(10);
    cb.record_failure(20);
    cb.record_success(30);
    CHECK(cb.consecutive_failures() == 0);
    cb.record_failure(40);
    cb.record_failure(50);
    CHECK(cb.state(50) == CircuitState::Closed);
    cb.record_failure(60);
    CHECK(cb.state(60) == CircuitState::Open);
  }
  SUBCASE("the threshold-th failure opens it") {
    cb.record_failure(10);
    cb.record_failure(20);
    cb.record_failure(30);
    CHECK(cb.state(30) == CircuitState::Open);
    CHECK_FALSE(cb.allow(30));
  }
}

TEST_CASE("circuit_breaker: open refuses until the timeout, then half-opens") {
  auto cb = make(2, 1000);
  open_at(cb, 5000);

  SUBCASE("refused, with the rest of the timeout as retry-after") {
    CHECK_FALSE(cb.allow(5000));
    CHECK(cb.retry_after_ms(5000) == 1000);
    CHECK_FALSE(cb.allow(5999));
    CHECK(cb.retry_after_ms(5999) == 1);
    CHECK(cb.state(5999) == CircuitState::Open);
  }
  SUBCASE("refusals do not extend the timeout") {
    for (int64_t t = 5000; t < 6000; t += 100) CHECK_FALSE(cb.allow(t));
    CHECK(cb.allow(6000));
  }
  SUBCASE("at the timeout it reports half-open and admits a trial") {
    CHECK(cb.state(6000) == CircuitState::HalfOpen);
    CHECK(cb.retry_after_ms(6000) == 0);
    CHECK(cb.allow(6000));
    CHECK(cb.state(6000) == CircuitState::HalfOpen);
  }
  SUBCASE("late results from calls admitted before it opened change nothing") {
    cb.record_success(5500);
    CHECK(cb.state(5500) == CircuitState::Open);
    cb.record_failure(5900);
    CHECK(cb.state(6000) == CircuitState::HalfOpen);  // the timeout was not restarted
  }
}

TEST_CASE("circuit_breaker: half-open admits limited trials") {
  SUBCASE("one trial at a time by default") {
    auto cb = CircuitBreaker(eventd::CircuitBreakerConfig{2, 1000});
    CHECK(cb.config().half_open_max_calls == 1);
    open_at(cb, 0);
    CHECK(cb.allow(1000));
    CHECK_FALSE(cb.allow(1001));
    CHECK(cb.retry_after_ms(1001) == 999);  // until the trial is presumed lost
  }
  SUBCASE("half_open_max_calls trials at once") {
    auto cb = make(1, 1000, 3);
    open_at(cb, 0);
    CHECK(cb.allow(1000));
    CHECK(cb.allow(1000));
    CHECK(cb.allow(1000));
    CHECK_FALSE(cb.allow(1000));
    CHECK(cb.state(1000) == CircuitState::HalfOpen);
  }
  SUBCASE("a trial that never reports frees its slot after the timeout") {
    auto cb = make(1, 1000);
    open_at(cb, 0);
    CHECK(cb.allow(1500));
    CHECK_FALSE(cb.allow(2499));
    CHECK(cb.retry_after_ms(2499) == 1);
    CHECK(cb.allow(2500));
    CHECK(cb.state(2500) == CircuitState::HalfOpen);
  }
}

TEST_CASE("circuit_breaker: a half-open success closes") {
  auto cb = make(2, 1000);
  open_at(cb, 0);
  REQUIRE(cb.allow(1000));
  cb.record_success(1200);
  CHECK(cb.state(1200) == CircuitState::Closed);
  CHECK(cb.consecutive_failures() == 0);
  CHECK(cb.retry_after_ms(1200) == 0);
  CHECK(cb.allow(1200));
  CHECK(cb.allow(1200));
  // The count starts afresh: it takes the full threshold to open again.
  cb.record_failure(1300);
  CHECK(cb.state(1300) == CircuitState::Closed);
  cb.record_failure(1400);
  CHECK(cb.state(1400) == CircuitState::Open);
}

TEST_CASE("circuit_breaker: a half-open failure reopens with a fresh timeout") {
  auto cb = make(2, 1000);
  open_at(cb, 0);
  REQUIRE(cb.allow(1000));
  cb.record_failure(1300);
  CHECK(cb.state(1300) == CircuitState::Open);
  CHECK_FALSE(cb.allow(1300));
  CHECK(cb.retry_after_ms(1300) == 1000);
  CHECK(cb.state(2299) == CircuitState::Open);
  CHECK(cb.state(2300) == CircuitState::HalfOpen);
  CHECK(cb.allow(2300));
  cb.record_success(2400);
  CHECK(cb.state(2400) == CircuitState::Closed);
}

TEST_CASE("circuit_breaker: results reported after the timeout without allow()") {
  // The lazy transition applies to record_* too, matching what state() reports.
  SUBCASE("success closes") {
    auto cb = make(1, 1000);
    open_at(cb, 0);
    cb.record_success(1000);
    CHECK(cb.state(1000) == CircuitState::Closed);
  }
  SUBCASE("failure reopens from now") {
    auto cb = make(1, 1000);
    open_at(cb, 0);
    cb.record_failure(1500);
    CHECK(cb.state(1500) == CircuitState::Open);
    CHECK(cb.retry_after_ms(1500) == 1000);
  }
}

TEST_CASE("circuit_breaker: config is sanitised and states have names") {
  auto cb = CircuitBreaker(eventd::CircuitBreakerConfig{0, -5, 0});
  CHECK(cb.config().failure_threshold == 1);
  CHECK(cb.config().open_timeout_ms == 0);
  CHECK(cb.config().half_open_max_calls == 1);
  cb.record_failure(10);
  // A zero timeout half-opens at once.
  CHECK(cb.state(10) == CircuitState::HalfOpen);
  CHECK(cb.allow(10));

  CHECK(eventd::circuit_state_name(CircuitState::Closed) == "closed");
  CHECK(eventd::circuit_state_name(CircuitState::Open) == "open");
  CHECK(eventd::circuit_state_name(CircuitState::HalfOpen) == "half_open");
}

TEST_CASE("circuit_breaker: retry_after_ms only looks; the half-open trial is taken by allow()") {
  auto cb = make(1, 1000, 1);
  open_at(cb, 0);
  CHECK(cb.retry_after_ms(500) == 500);
  // Half-open: asking (as the notification handler does before its lease script)
  // leaves the trial slot for the call that really goes to the sink.
  CHECK(cb.retry_after_ms(1000) == 0);
  CHECK(cb.retry_after_ms(1000) == 0);
  CHECK(cb.state(1000) == CircuitState::HalfOpen);
  CHECK(cb.allow(1001));
  CHECK(cb.retry_after_ms(1001) > 0);
  CHECK_FALSE(cb.allow(1001));
  cb.record_success(1002);
  CHECK(cb.state(1002) == CircuitState::Closed);
}
