"""W3C trace context across eventd: a quote's traceparent reaches the alert it fires and
the notification the alert derives (same trace id, a new parent at each step), a message
without one starts a trace, and retries and dead letters keep it and name it."""
import json

from harness import history_key, now_ms, redis, wait_until
from test_domain import domain_config, monitor_start, rule, send_quote, settle

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PRODUCER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{PRODUCER_SPAN}-01"


def parse(traceparent):
    version, trace, parent, flags = traceparent.split("-")
    assert version == "00" and len(trace) == 32 and len(parent) == 16 and len(flags) == 2, traceparent
    assert trace != "0" * 32 and parent != "0" * 16, traceparent
    return trace, parent, flags


def tap(fx):
    """A queue of our own that gets a copy of every alert and notification eventd publishes."""
    ch = fx.amqp.channel()
    ch.queue_declare("trace.tap", durable=False, exclusive=False, auto_delete=False)
    for key in ("alert.triggered.#", "notification.#"):
        ch.queue_bind("trace.tap", "events", key)
    return "trace.tap"


def derived(fx, queue):
    msgs = fx.amqp.get_all(queue)
    by_type = {}
    for m in msgs:
        by_type.setdefault(m.props.type, []).append(m)
    return by_type


def fire_alert(fx, user, symbol, headers=None):
    monitor_start(fx, user, {"rules": [rule(1, symbol, "price_above", 100, 0)], "channels": ["push"]})
    send_quote(fx, symbol, 99)
    mid = f"q-{symbol}-cross"
    body = {"type": "quote_update", "timestamp": now_ms(), "symbol": symbol,
            "price": 101, "change": 0}
    fx.amqp.publish("market.quotes", symbol, body, headers=headers, message_id=mid, type="quote_update")
    settle(fx)


def alert_and_notification(fx, user, symbol, headers=None):
    """Fires one alert with a quote carrying `headers`: the alert and notification eventd published."""
    fx.start_daemon(domain_config(fx))
    queue = tap(fx)
    fire_alert(fx, user, symbol, headers)
    wait_until(lambda: fx.amqp.depth(queue) >= 2, 15, what="the alert and its notification")
    got = derived(fx, queue)
    [alert] = got["alert_triggered"]
    [note] = got["notification"]
    return alert, note


def test_trace_id_goes_from_quote_to_alert_to_notification(fx):
    alert, note = alert_and_notification(fx, "tr-a", "TRC",
                                         {"traceparent": TRACEPARENT, "tracestate": "congo=t61rcWkgMzE"})
    a_trace, a_parent, a_flags = parse(alert.headers["traceparent"])
    n_trace, n_parent, _ = parse(note.headers["traceparent"])
    assert a_trace == TRACE and n_trace == TRACE, (alert.headers, note.headers)
    assert a_flags == "01"
    assert a_parent != PRODUCER_SPAN, "the alert's parent must be eventd's span, not the producer's"
    assert n_parent not in (PRODUCER_SPAN, a_parent), "each step is a span of its own"
    assert alert.headers["tracestate"] == "congo=t61rcWkgMzE" and note.headers["tracestate"] == "congo=t61rcWkgMzE"


def test_a_message_without_traceparent_starts_a_trace(fx):
    alert, note = alert_and_notification(fx, "tr-b", "TRS")
    a_trace, _, _ = parse(alert.headers["traceparent"])
    n_trace, _, _ = parse(note.headers["traceparent"])
    assert a_trace == n_trace, "the notification is in the trace its alert started"
    assert "tracestate" not in alert.headers


def test_dead_letters_keep_and_name_the_trace(fx):
    d = fx.start_daemon()
    bad = {"type": "quote_update", "timestamp": now_ms(), "symbol": "DLT",
           "price": -1, "change": 0}
    fx.amqp.publish("market.quotes", "", bad, headers={"traceparent": TRACEPARENT}, message_id="dl-traced")
    fx.amqp.publish("market.quotes", "", bad, message_id="dl-untraced")
    wait_until(lambda: fx.amqp.depth("eventd.quotes.dlq") == 2, 15, what="both dead-lettered")
    dead = {m.props.message_id: m for m in fx.amqp.get_all("eventd.quotes.dlq")}
    traced, untraced = dead["dl-traced"].headers, dead["dl-untraced"].headers
    assert traced["traceparent"] == TRACEPARENT, "the producer's traceparent is kept as it was"
    assert traced["x-trace-id"] == TRACE
    started = untraced["x-trace-id"]
    assert parse(untraced["traceparent"])[0] == started, "a trace eventd started is carried on the dead letter"
    lines = {l["message_id"]: l for l in d.log_lines() if l.get("msg") == "dead-lettering"}
    assert lines["dl-traced"]["trace_id"] == TRACE and lines["dl-untraced"]["trace_id"] == started, lines


def test_retries_keep_the_trace(fx):
    d = fx.start_daemon({"retry": {"maxAttempts": 3}})
    redis("SET", history_key("RTR"), "not a list")  # a retryable failure
    body = {"type": "quote_update", "timestamp": now_ms(), "symbol": "RTR",
            "price": 1, "change": 0}
    fx.amqp.publish("market.quotes", "", body, headers={"traceparent": TRACEPARENT}, message_id="rt-1")
    wait_until(lambda: len([l for l in d.log_lines() if l.get("msg") == "retrying"]) >= 2, 20, what="two retries")
    retries = [l for l in d.log_lines() if l.get("msg") == "retrying"]
    assert all(l["trace_id"] == TRACE for l in retries), retries
    wait_until(lambda: fx.amqp.depth("eventd.quotes.dlq") == 1, 20, what="dead-lettered after its attempts")
    [dead] = fx.amqp.get_all("eventd.quotes.dlq")
    assert dead.headers["traceparent"] == TRACEPARENT and dead.headers["x-trace-id"] == TRACE, dead.headers
    assert json.loads(dead.body)["symbol"] == "RTR"
