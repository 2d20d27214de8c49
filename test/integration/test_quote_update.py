"""quote_update: what lands in Redis, and duplicates applied once."""
import json

from harness import history, history_len, idem_key, latest_quote, now_ms, quote, redis, wait_until


def wait_applied(symbol, n, timeout=15):
    return wait_until(lambda: history_len(symbol) >= n, timeout, what=f"{n} quote(s) of {symbol} applied")


def drained(fx, d, queue="eventd.quotes"):
    """Stops the daemon (exit 0) and checks nothing is left: unacked messages would be back in the queue."""
    assert d.stop() == 0, "eventd did not exit 0"
    assert fx.amqp.depth(queue) == 0, f"{queue} still holds {fx.amqp.depth(queue)} message(s): not all were acked"
    assert fx.amqp.depth(queue + ".dlq") == 0, f"{queue}.dlq holds {fx.amqp.depth(queue + '.dlq')} message(s)"


def test_quote_is_stored(fx):
    d = fx.start_daemon()
    ts = now_ms()
    fx.amqp.publish("market.quotes", "AAPL", quote("AAPL", 187.25, -1.5, ts), message_id="q-1", type="quote_update")
    wait_applied("AAPL", 1)
    assert latest_quote("AAPL") == {"price": "187.25", "change": "-1.5", "timestamp": str(ts)}, latest_quote("AAPL")
    assert history("AAPL") == [187.25]
    assert redis("TYPE", idem_key("AAPL", "q-1")) == "string", "no idempotency key for the message id"
    ttl = redis("TTL", idem_key("AAPL", "q-1"))
    assert 0 < ttl <= 86400, f"idempotency key TTL {ttl}"
    drained(fx, d)


def test_eventctl_quote_reaches_redis(fx):
    d = fx.start_daemon()
    rc, out, err = d.eventctl("publish", "quote_update", '{"symbol":"CTL","price":42.5,"change":0.5}')
    assert rc == 0, err
    wait_applied("CTL", 1)
    assert latest_quote("CTL")["price"] == "42.5"
    drained(fx, d)


def test_history_is_capped(fx):
    d = fx.start_daemon({"quotes": {"historyLength": 50}})
    for i in range(1, 61):
        fx.amqp.publish("market.quotes", "", quote("CAP", float(i)), message_id=f"cap-{i}")
    wait_until(lambda: latest_quote("CAP").get("price") == "60", 20, what="the 60th quote")
    wait_until(lambda: redis("EXISTS", idem_key("CAP", "cap-60")) == 1, 10, what="the 60th quote recorded")
    h = history("CAP")
    # Trimmed back to 50 once it reaches 50 + 50/16: no LTRIM on every push.
    assert 50 <= len(h) <= 53, f"history holds {len(h)} prices, expected 50 to 53"
    assert h[-50:] == [float(i) for i in range(11, 61)], f"history does not end with the last 50 prices: {h[-3:]}"
    assert h == [float(i) for i in range(61 - len(h), 61)], f"history is not the newest prices in order: {h[:3]}"
    drained(fx, d)


def test_newer_quote_wins_over_late_older_one(fx):
    d = fx.start_daemon()
    t = now_ms()
    fx.amqp.publish("market.quotes", "", quote("ORD", 2.0, 0.2, t), message_id="new")
    wait_applied("ORD", 1)
    fx.amqp.publish("market.quotes", "", quote("ORD", 1.0, 0.1, t - 5000), message_id="old")
    wait_applied("ORD", 2)
    assert latest_quote("ORD") == {"price": "2", "change": "0.2", "timestamp": str(t)}, latest_quote("ORD")
    assert history("ORD") == [2.0, 1.0], "the late quote still belongs in the history"
    fx.amqp.publish("market.quotes", "", quote("ORD", 3.0, 0.3, t + 1000), message_id="newest")
    wait_applied("ORD", 3)
    assert latest_quote("ORD")["price"] == "3"
    drained(fx, d)


def test_same_message_id_applied_once(fx):
    d = fx.start_daemon({"log": {"level": "debug"}})
    body = json.dumps(quote("DUP", 9.5)).encode()
    for _ in range(5):
        fx.amqp.publish("market.quotes", "", body, message_id="dup-1", type="quote_update")
    d.wait_log("duplicate acked", count=4, timeout=15, message_id="dup-1")
    assert history("DUP") == [9.5], f"history {history('DUP')}: a duplicate was applied"
    # And via eventctl: --message-id fixes the id of every copy.
    rc, out, err = d.eventctl("publish", "quote_update", '{"symbol":"DUP2","price":1,"change":0}',
                              "--message-id", "dup-2", "--count", "5")
    assert rc == 0, err
    d.wait_log("duplicate acked", count=4, timeout=15, message_id="dup-2")
    assert history("DUP2") == [1.0], f"history {history('DUP2')}"
    drained(fx, d)


def test_message_without_id_is_deduplicated_by_content(fx):
    d = fx.start_daemon({"log": {"level": "debug"}})
    body = json.dumps(quote("NOID", 5.0)).encode()
    for _ in range(3):
        fx.amqp.publish("market.quotes", "", body)
    d.wait_log("duplicate acked", count=2, timeout=15)
    fx.amqp.publish("market.quotes", "", json.dumps(quote("NOID", 6.0)).encode())
    wait_applied("NOID", 2)
    assert history("NOID") == [5.0, 6.0], history("NOID")
    drained(fx, d)


def test_snake_case_keys_are_normalised(fx):
    d = fx.start_daemon()
    raw = {"type": "quote_update", "timestamp": now_ms(), "symbol": "SNK", "price": 3.5, "change": -0.5,
           "correlation_id": "corr-1"}
    fx.amqp.publish("market.quotes", "", raw, message_id="snake-1")
    wait_applied("SNK", 1)
    assert latest_quote("SNK")["price"] == "3.5"
    # The daemon validates the normalised body: a snake_case key with a wrong value
    # is reported under its camelCase name.
    bad = dict(raw, correlation_id=12345)
    fx.amqp.publish("market.quotes", "", bad, message_id="snake-2")
    wait_until(lambda: fx.amqp.depth("eventd.quotes.dlq") == 1, 10, what="the bad message dead-lettered")
    [dead] = fx.amqp.get_all("eventd.quotes.dlq")
    assert dead.headers.get("x-error-code") == "VALIDATION_ERROR", dead.headers
    assert "/correlationId" in dead.headers.get("x-error-message", ""), dead.headers
    assert history("SNK") == [3.5]
    drained(fx, d)


def test_function_flush_is_survived(fx):
    # A Redis restart without persistence, or an operator, may drop eventd's function
    # libraries: eventd reconnects, loads them again, and runs the message again.
    d = fx.start_daemon()
    fx.amqp.publish("market.quotes", "", quote("SCR", 1.0), message_id="scr-1")
    wait_applied("SCR", 1)
    redis("FUNCTION", "FLUSH")
    fx.amqp.publish("market.quotes", "", quote("SCR", 2.0), message_id="scr-2")
    wait_applied("SCR", 2)
    assert history("SCR") == [1.0, 2.0]
    drained(fx, d)
