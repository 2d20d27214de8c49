// RetryPolicy: the delayed-retry schedule and the dead-letter decisions.
#include <doctest/doctest.h>

#include "eventd/retry_policy.hpp"

using namespace eventd;

TEST_CASE("retry_policy: delays double from the initial delay and cap at the maximum") {
  RetryConfig c;
  c.initial_delay_ms = 1000;
  c.multiplier = 2;
  c.max_delay_ms = 5000;
  c.max_attempts = 10;
  RetryPolicy p(c);
  CHECK(p.delay_ms(0) == 1000);
  CHECK(p.delay_ms(1) == 2000);
  CHECK(p.delay_ms(2) == 4000);
  CHECK(p.delay_ms(3) == 5000);
  CHECK(p.delay_ms(30) == 5000);  // no overflow far past the cap
  CHECK(p.distinct_delays() == std::vector<uint32_t>{1000, 2000, 4000, 5000});
}

TEST_CASE("retry_policy: default schedule is 1 s, 2 s, 4 s, 8 s for 5 attempts") {
  RetryPolicy p(RetryConfig{});
  CHECK(p.distinct_delays() == std::vector<uint32_t>{1000, 2000, 4000, 8000});
}

TEST_CASE("retry_policy: retryable errors retry until max attempts, then MAX_ATTEMPTS") {
  RetryConfig c;
  c.max_attempts = 3;
  RetryPolicy p(c);
  auto err = ProcessingError::transient(ErrorCode::DownstreamError, "HTTP 503");
  SUBCASE("first failure retries after the first delay") {
    auto d = p.decide(err, 0);
    CHECK(d.retry);
    CHECK(d.delay_ms == 1000);
    CHECK(d.error.code == ErrorCode::DownstreamError);
  }
  SUBCASE("second failure retries after the second delay") {
    auto d = p.decide(err, 1);
    CHECK(d.retry);
    CHECK(d.delay_ms == 2000);
  }
  SUBCASE("third failure (the last attempt) dead-letters with MAX_ATTEMPTS naming the last error") {
    auto d = p.decide(err, 2);
    CHECK_FALSE(d.retry);
    CHECK(d.error.code == ErrorCode::MaxAttempts);
    CHECK(d.error.message == "gave up after 3 attempts; last error DOWNSTREAM_ERROR: HTTP 503");
  }
}

TEST_CASE("retry_policy: non-retryable errors dead-letter at once with their own code") {
  RetryPolicy p(RetryConfig{});
  auto d = p.decide(ProcessingError::permanent(ErrorCode::ValidationError, "/price: must be > 0"), 0);
  CHECK_FALSE(d.retry);
  CHECK(d.error.code == ErrorCode::ValidationError);
  CHECK(d.error.message == "/price: must be > 0");
}

TEST_CASE("retry_policy: max attempts 1 never retries, but deferrals still have a queue to wait in") {
  RetryConfig c;
  c.max_attempts = 1;
  c.initial_delay_ms = 1000;
  RetryPolicy p(c);
  CHECK_FALSE(p.decide(ProcessingError::transient(ErrorCode::DownstreamError, "503"), 0).retry);
  CHECK(p.distinct_delays() == std::vector<uint32_t>{1000});
  CHECK(p.queue_delay_at_least(30000) == 1000);
}

TEST_CASE("retry_policy: expiry is measured from the body timestamp") {
  RetryConfig c;
  c.max_age_ms = 3600000;
  RetryPolicy p(c);
  const int64_t now = 1'800'000'000'000;
  CHECK_FALSE(p.expired(now - 3600000, now));
  CHECK(p.expired(now - 3600001, now));
  CHECK(p.expired(now - 2 * 3600000, now));
  CHECK_FALSE(p.expired(now + 5000, now));  // clock skew ahead is not expiry
}

TEST_CASE("retry_policy: queue names") {
  CHECK(retry_queue_name("eventd.alerts", 4000) == "eventd.alerts.retry.4000ms");
  CHECK(dead_letter_queue_name("eventd.alerts") == "eventd.alerts.dlq");
  CHECK(error_code_name(ErrorCode::ParseError) == "PARSE_ERROR");
  CHECK(error_code_name(ErrorCode::MaxAttempts) == "MAX_ATTEMPTS");
}
