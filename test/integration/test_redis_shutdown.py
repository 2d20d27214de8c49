"""SIGTERM while Redis hangs: eventd must still exit in bounded time, losing nothing.

CLIENT PAUSE ALL makes Redis accept commands and answer none; it cannot be lifted
early (CLIENT UNPAUSE is paused too), so these tests wait it out before checking.
"""
import time

from harness import finish_and_count, history_len, now_ms, redis, redis_up, wait_until

PAUSE_MS = 20000


def pause_redis(fx, ms):
    redis("CLIENT", "PAUSE", ms, "ALL")
    paused_at = time.monotonic()
    # The pause blocks every client, the harness's too: wait it out before teardown.
    fx.on_teardown(lambda: wait_until(redis_up, ms / 1000 + 10, 0.2, what="Redis answering after the pause"))
    return paused_at


def test_redis_hang_at_sigterm_with_a_message_in_flight(fx):
    # The drain deadline comes before an unanswered PING would be noticed
    # (connectTimeoutMs), so only the stop's own deadline can end the wait.
    d = fx.start_daemon({"redis": {"connectTimeoutMs": 4000}, "shutdown": {"drainTimeoutMs": 2000}})
    paused_at = pause_redis(fx, PAUSE_MS)
    body = {"type": "quote_update", "timestamp": now_ms(), "symbol": "HANGSTOP", "price": 1, "change": 0}
    fx.amqp.publish("market.quotes", "HANGSTOP", body, message_id="hangstop-1", type="quote_update")
    wait_until(lambda: fx.amqp.depth("eventd.quotes") == 0, 5, 0.02, what="the quote delivered to eventd")
    started = time.monotonic()
    rc = d.stop(timeout=PAUSE_MS / 1000 + 10)
    took = time.monotonic() - started
    # Drain deadline (2 s) + Redis close deadline (4 s) + slack, well before the pause ends.
    assert took < 10, f"eventd took {took:.1f} s to stop while Redis hung (pause: {PAUSE_MS / 1000:g} s)"
    assert time.monotonic() - paused_at < PAUSE_MS / 1000 - 5, "the pause ended before eventd stopped"
    assert rc == 0, f"eventd exited {rc}"
    lines = d.log_lines()
    assert lines[-1]["msg"] == "stopped", lines[-1]
    wait_until(redis_up, PAUSE_MS / 1000 + 10, 0.2, what="Redis answering after the pause")
    assert fx.amqp.depth("eventd.quotes.dlq") == 0
    finish_and_count(fx, d, "HANGSTOP", 1)
    assert history_len("HANGSTOP") == 1


test_redis_hang_at_sigterm_with_a_message_in_flight.timeout = 180


def test_redis_hang_at_sigterm_when_idle(fx):
    # Nothing in flight, but a PING is unanswered when SIGTERM comes: the stop must
    # not wait for its reply forever.
    d = fx.start_daemon({"redis": {"connectTimeoutMs": 4000}})
    paused_at = pause_redis(fx, PAUSE_MS)
    time.sleep(1.5)  # the next PING (every second) is sent and stays unanswered
    started = time.monotonic()
    rc = d.stop(timeout=PAUSE_MS / 1000 + 10)
    took = time.monotonic() - started
    assert took < 8, f"eventd took {took:.1f} s to stop while Redis hung (pause: {PAUSE_MS / 1000:g} s)"
    assert time.monotonic() - paused_at < PAUSE_MS / 1000 - 5, "the pause ended before eventd stopped"
    assert rc == 0, f"eventd exited {rc}"
    assert d.log_lines()[-1]["msg"] == "stopped"


test_redis_hang_at_sigterm_when_idle.timeout = 120
