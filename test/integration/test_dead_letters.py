"""Messages eventd cannot process end in Q.dlq, unchanged, with headers that explain why."""
import datetime
import json
import re

from harness import MGMT_PORT, history, history_len, now_ms, quote, run, wait_until

ERROR_HEADERS = ("x-error-code", "x-error-message", "x-retry-count", "x-original-exchange",
                 "x-original-routing-key", "x-original-queue", "x-failed-at")


def publish_poison(fx, body, message_id, routing_key="rk-poison", **props):
    props.setdefault("correlation_id", f"corr-{message_id}")
    props.setdefault("timestamp", 1700000000)
    fx.amqp.publish("market.quotes", routing_key, body, headers={"x-custom": "keep-me", "x-num": 7},
                    message_id=message_id, **props)


def wait_dead_letters(fx, n, queue="eventd.quotes.dlq", timeout=15):
    wait_until(lambda: (fx.amqp.depth(queue) or 0) >= n, timeout, what=f"{n} message(s) in {queue}")
    msgs = fx.amqp.get_all(queue)
    assert len(msgs) == n, f"expected {n} dead letters, found {len(msgs)}"
    return {m.props.message_id: m for m in msgs}


def assert_dead_letter(msg, body, code, message_id, routing_key="rk-poison", retry_count=0, error_contains=None,
                       original_queue="eventd.quotes"):
    h = msg.headers
    missing = [k for k in ERROR_HEADERS if k not in h]
    assert not missing, f"{message_id}: dead letter lacks {missing}; headers {h}"
    assert h["x-error-code"] == code, f"{message_id}: x-error-code {h['x-error-code']!r}, expected {code}"
    assert isinstance(h["x-error-message"], str) and h["x-error-message"], h["x-error-message"]
    if error_contains:
        assert error_contains in h["x-error-message"], f"{message_id}: x-error-message {h['x-error-message']!r}"
    assert h["x-retry-count"] == retry_count, f"{message_id}: x-retry-count {h['x-retry-count']!r}"
    assert h["x-original-exchange"] == "market.quotes", h["x-original-exchange"]
    assert h["x-original-routing-key"] == routing_key, h["x-original-routing-key"]
    assert h["x-original-queue"] == original_queue, h["x-original-queue"]
    failed_at = h["x-failed-at"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", failed_at), f"x-failed-at {failed_at!r}"
    when = datetime.datetime.strptime(failed_at[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    age = abs(datetime.datetime.now(datetime.timezone.utc) - when).total_seconds()
    assert age < 120, f"x-failed-at {failed_at} is {age:.0f} s from now"
    # The original, byte for byte, with its properties.
    assert msg.body == body, f"{message_id}: body changed: {msg.body[:200]!r} != {body[:200]!r}"
    p = msg.props
    assert p.message_id == message_id
    assert p.correlation_id == f"corr-{message_id}", p.correlation_id
    assert p.content_type == "application/json", p.content_type
    assert p.timestamp == 1700000000, p.timestamp
    assert p.delivery_mode == 2, p.delivery_mode
    assert h.get("x-custom") == "keep-me" and h.get("x-num") == 7, f"custom headers lost: {h}"


def test_poison_messages_are_dead_lettered(fx):
    d = fx.start_daemon()
    cases = {
        "parse": (b'{"type":"quote_update", "symbol": "P", "price": ', "PARSE_ERROR", None),
        "empty": (b"", "PARSE_ERROR", None),
        # Deep nesting overflowed the parser's stack: eventd died (SIGSEGV) on it.
        "deep": (b"[" * 100000 + b"]" * 100000, "PARSE_ERROR", "Nested deeper than 64 levels"),
        "deep-field": (('{"type":"quote_update","timestamp":%d,"symbol":"DEEP","price":1,"change":0,"x":' % now_ms())
                       .encode() + b"{\"a\":" * 100000 + b"1" + b"}" * 100001, "PARSE_ERROR", "Nested deeper"),
        "schema": (json.dumps(quote("S", -1.0)).encode(), "VALIDATION_ERROR", "/price"),
        "missing": (b'{"type":"quote_update","timestamp":%d,"symbol":"M","price":1}' % now_ms(),
                    "VALIDATION_ERROR", "change"),
        "unknown": (json.dumps({"type": "bogus_event", "timestamp": now_ms()}).encode(), "UNKNOWN_TYPE", "bogus_event"),
        "expired": (('{ "type" : "quote_update", "timestamp": %d, "symbol":"EXP", "price": 1.50, "change": 0,'
                     ' "note": "caf\u00e9" }' % (now_ms() - 2 * 3600 * 1000)).encode(), "EXPIRED", None),
    }
    for mid, (body, _, _) in cases.items():
        publish_poison(fx, body, mid)
    dead = wait_dead_letters(fx, len(cases))
    assert set(dead) == set(cases), sorted(dead)
    for mid, (body, code, contains) in cases.items():
        assert_dead_letter(dead[mid], body, code, mid, error_contains=contains)
    assert history_len("S") == 0 and history_len("EXP") == 0 and history_len("M") == 0 and history_len("DEEP") == 0, \
        "a poison message was applied"
    assert fx.amqp.depth("eventd.quotes") == 0
    assert d.running(), "eventd died"
    assert d.logged("dead-lettering"), "no 'dead-lettering' log line"


def test_type_property_must_match_body(fx):
    d = fx.start_daemon()
    body = json.dumps(quote("TP", 1.0)).encode()
    publish_poison(fx, body, "tp-1", type="analysis_request")
    dead = wait_dead_letters(fx, 1)
    assert_dead_letter(dead["tp-1"], body, "VALIDATION_ERROR", "tp-1", error_contains="analysis_request")
    assert history_len("TP") == 0 and d.running()


def test_error_message_is_capped(fx):
    # A 200 KB symbol (several AMQP frames) in multi-byte characters: the error quotes
    # it, but x-error-message stays at most 1 KiB of valid UTF-8, and the body survives.
    d = fx.start_daemon()
    body = json.dumps(quote("\u00e9" * 100_000, 1.0), ensure_ascii=False).encode()
    publish_poison(fx, body, "big-1")
    dead = wait_dead_letters(fx, 1)
    msg = dead["big-1"]
    assert_dead_letter(msg, body, "VALIDATION_ERROR", "big-1", error_contains="/symbol")
    text = msg.headers["x-error-message"]
    assert isinstance(text, str), "x-error-message is not valid UTF-8 (a character was cut in half)"
    assert len(text.encode()) <= 1024, f"x-error-message is {len(text.encode())} bytes"
    assert d.running()


def test_operator_sees_error_headers_with_rabbitmqadmin(fx):
    fx.start_daemon()
    body = json.dumps(quote("ADM", 0)).encode()
    publish_poison(fx, body, "adm-1")
    wait_until(lambda: fx.amqp.depth("eventd.quotes.dlq") == 1, 15, what="a dead letter")
    p = run(["rabbitmqadmin", "-H", "127.0.0.1", "-P", str(MGMT_PORT), "-u", "guest", "-p", "guest",
             "-V", fx.vhost, "-f", "raw_json", "get", "queue=eventd.quotes.dlq", "count=5",
             "ackmode=ack_requeue_true"], timeout=60)
    msgs = json.loads(p.stdout)
    assert len(msgs) == 1, p.stdout[:500]
    props = msgs[0]["properties"]
    headers = props.get("headers", {})
    for key in ERROR_HEADERS:
        assert key in headers, f"rabbitmqadmin does not show {key}: {headers}"
    assert headers["x-error-code"] == "VALIDATION_ERROR" and "/price" in headers["x-error-message"], headers
    assert headers["x-original-queue"] == "eventd.quotes", headers
    assert props.get("message_id") == "adm-1" and msgs[0]["payload"] == body.decode(), msgs[0]
    # What an operator reads (rabbitmqadmin's table formats omit properties; the JSON ones show them).
    p = run(["rabbitmqadmin", "-H", "127.0.0.1", "-P", str(MGMT_PORT), "-u", "guest", "-p", "guest",
             "-V", fx.vhost, "-f", "pretty_json", "get", "queue=eventd.quotes.dlq", "ackmode=ack_requeue_true"],
            timeout=60)
    for text in ('"x-error-code": "VALIDATION_ERROR"', '"x-original-queue": "eventd.quotes"', "/price"):
        assert text in p.stdout, f"{text!r} not in rabbitmqadmin output: {p.stdout[:1000]}"
    # The management plugin requeues asynchronously (a quorum queue returns through Raft).
    wait_until(lambda: fx.amqp.depth("eventd.quotes.dlq") == 1, 5,
               what="rabbitmqadmin get leaving the dead letter in place")


def test_huge_timestamp_does_not_crash_the_daemon(fx):
    # 2^64-1 is an "integer >= 0" as the schema says, but not an int64. eventd must
    # dead-letter (or otherwise settle) it and keep running, not abort on it.
    d = fx.start_daemon()
    body = b'{"type":"quote_update","timestamp":18446744073709551615,"symbol":"HUGE","price":1,"change":0}'
    publish_poison(fx, body, "huge-ts")
    fx.amqp.publish("market.quotes", "", quote("AFTER", 2.0), message_id="after-huge")
    wait_until(lambda: history("AFTER") == [2.0] or not d.running(), 15, what="the next quote to be applied")
    assert d.running(), f"eventd died on a quote with timestamp 2^64-1 (exit code {d.proc.returncode})"
    dead = wait_dead_letters(fx, 1)
    assert dead["huge-ts"].body == body
    assert dead["huge-ts"].headers.get("x-error-code") in ("VALIDATION_ERROR", "EXPIRED"), dead["huge-ts"].headers
    assert history_len("HUGE") == 0
    assert d.stop() == 0


def test_dead_letter_does_not_inherit_message_ttl(fx):
    # A producer's per-message TTL (the expiration property) must not follow the
    # message into the DLQ, or the broker silently drops the dead letter there
    # (RabbitMQ's own dead-lettering removes it for that reason).
    fx.start_daemon()
    body = b'{"type":"quote_update", broken'
    publish_poison(fx, body, "ttl-1", expiration="60000")
    dead = wait_dead_letters(fx, 1)
    msg = dead["ttl-1"]
    assert msg.headers.get("x-error-code") == "PARSE_ERROR"
    assert msg.props.expiration is None, \
        f"dead letter keeps expiration={msg.props.expiration!r}: the broker will drop it from the DLQ"
