"""Retryable failures: delayed retries through the TTL queues, then MAX_ATTEMPTS.

The quote handler is made to fail for real: the history of BAD holds a string, so
the handler's RPUSH fails with WRONGTYPE (a retryable error).
"""
import datetime
import json

from harness import history, history_key, idem_key, latest_quote, quote, redis, wait_until

BROKEN_KEY = history_key("BAD")


def log_time(line):
    return datetime.datetime.strptime(line["ts"], "%Y-%m-%dT%H:%M:%S.%fZ")


def retries_of(d, message_id):
    return [l for l in d.log_lines(complete_only=True) if l["msg"] == "retrying" and l.get("message_id") == message_id]


def assert_no_leftovers(fx):
    """eventd.quotes, its DLQ and its retry queues are empty."""
    for name in fx.queues():
        if name.startswith("eventd.quotes"):
            assert fx.amqp.depth(name) == 0, f"{name} still holds {fx.amqp.depth(name)} message(s)"


def test_retry_then_success(fx):
    d = fx.start_daemon({"retry": {"initialDelayMs": 200, "maxDelayMs": 1600, "maxAttempts": 8}})
    redis("SET", BROKEN_KEY, "x")
    fx.amqp.publish("market.quotes", "BAD", quote("BAD", 12.5), message_id="bad-1", type="quote_update")
    wait_until(lambda: len(retries_of(d, "bad-1")) >= 2, 15, what="two retries of bad-1")
    redis("DEL", BROKEN_KEY)
    wait_until(lambda: history("BAD"), 15, what="the quote to be applied after the key was fixed")
    retries = retries_of(d, "bad-1")
    assert [r["retry"] for r in retries] == list(range(1, len(retries) + 1)), retries
    expected_delays = [200, 400, 800, 1600, 1600, 1600, 1600][:len(retries)]
    assert [r["delay_ms"] for r in retries] == expected_delays, [r["delay_ms"] for r in retries]
    assert all(r["code"] == "INTERNAL" and "WRONGTYPE" in r["error"] for r in retries), retries[0]
    assert d.stop() == 0
    assert history("BAD") == [12.5], f"history {history('BAD')}: applied more than once"
    assert latest_quote("BAD")["price"] == "12.5"
    assert fx.amqp.depth("eventd.quotes.dlq") == 0, "dead-lettered although it succeeded"
    assert fx.amqp.depth("eventd.quotes") == 0
    assert_no_leftovers(fx)


def test_max_attempts_then_dead_letter(fx):
    d = fx.start_daemon({"retry": {"initialDelayMs": 200, "maxDelayMs": 1600, "maxAttempts": 5}})
    redis("SET", BROKEN_KEY, "x")
    body = json.dumps(quote("BAD", 7.25)).encode()
    # A producer-side x-death must not count as attempts: eventd counts its own.
    fake_death = [{"count": 50, "queue": "eventd.quotes", "reason": "rejected", "exchange": "market.quotes",
                   "routing-keys": ["BAD"]}]
    fx.amqp.publish("market.quotes", "BAD", body, message_id="bad-2", type="quote_update",
                    headers={"x-custom": "keep-me", "x-death": fake_death})
    wait_until(lambda: fx.amqp.depth("eventd.quotes.dlq") == 1, 30, what="the message in eventd.quotes.dlq")
    [dead] = fx.amqp.get_all("eventd.quotes.dlq")
    h = dead.headers
    assert h.get("x-error-code") == "MAX_ATTEMPTS", h
    assert h.get("x-retry-count") == 4, f"x-retry-count {h.get('x-retry-count')!r}, expected maxAttempts-1 = 4"
    assert "WRONGTYPE" in h.get("x-error-message", ""), h.get("x-error-message")
    assert h.get("x-original-exchange") == "market.quotes", h
    assert h.get("x-original-routing-key") == "BAD", h
    assert h.get("x-original-queue") == "eventd.quotes", h
    assert "x-failed-at" in h and h.get("x-custom") == "keep-me", h
    assert dead.body == body and dead.props.message_id == "bad-2"
    retries = retries_of(d, "bad-2")
    assert [r["delay_ms"] for r in retries] == [200, 400, 800, 1600], [r["delay_ms"] for r in retries]
    # The delays are real: the broker held the message in the TTL queues.
    [gave_up] = [l for l in d.logged("dead-lettering") if l.get("message_id") == "bad-2"]
    assert gave_up["code"] == "MAX_ATTEMPTS", gave_up
    waited = (log_time(gave_up) - log_time(retries[0])).total_seconds()
    assert waited >= 0.9 * (0.4 + 0.8 + 1.6), f"only {waited:.2f} s between the first retry and giving up"
    assert redis("TYPE", BROKEN_KEY) == "string" and redis("GET", BROKEN_KEY) == "x", "the broken key changed"
    assert redis("EXISTS", idem_key("BAD", "bad-2")) == 0, "a failed message was recorded as processed"
    assert d.stop() == 0
    assert fx.amqp.depth("eventd.quotes") == 0
    assert_no_leftovers(fx)
