"""Hostile input (DESIGN.md, "Security": input limits): a NUL in a pattern-checked field,
a duplicate key, a body over limits.maxMessageBytes, header tables nested too deep. eventd
dead-letters each at once and keeps running; eventctl refuses each with one line, exit 2."""
import json
import os

from harness import history, history_len, monitor_key, now_ms, quote, redis, rules_key, wait_until
from test_dead_letters import assert_dead_letter, publish_poison, wait_dead_letters

MIB = 1048576


def nested_table(levels):
    """A header value of `levels` nested tables: {"n": {"n": ... {"leaf": "x"}}}."""
    value = {"leaf": "x"}
    for _ in range(levels - 1):
        value = {"n": value}
    return value


def padded_quote(symbol, size):
    """A valid quote_update body of exactly `size` bytes (an extra field pads it)."""
    head = '{"type":"quote_update","timestamp":%d,"symbol":"%s","price":1,"change":0,"pad":"' % (now_ms(), symbol)
    body = head + "x" * (size - len(head) - 2) + '"}'
    assert len(body) == size
    return body.encode()


def one_line(rc, err, word, what):
    lines = err.splitlines()
    assert rc == 2, f"{what}: exited {rc} (stderr {err!r})"
    assert len(lines) == 1, f"{what}: expected one stderr line, got {lines!r}"
    assert word in lines[0], f"{what}: stderr does not say {word!r}: {lines[0]!r}"
    return lines[0]


def test_hostile_bodies_are_dead_lettered_and_eventd_keeps_running(fx):
    d = fx.start_daemon()
    ts = now_ms()
    cases = {
        # RapidJSON's regex stopped at the NUL: "A" matched the symbol pattern.
        "nul": (b'{"type":"quote_update","timestamp":%d,"symbol":"A\\u0000B","price":1,"change":0}' % ts,
                "VALIDATION_ERROR", '/symbol: must not contain control characters, got "A\\u0000B"'),
        "ctl": (b'{"type":"quote_update","timestamp":%d,"symbol":"CTL\\u001f","price":1,"change":0}' % ts,
                "VALIDATION_ERROR", "/symbol: must not contain control characters"),
        # Validated by one "price", handled by the other.
        "dup": (b'{"type":"quote_update","timestamp":%d,"symbol":"DUP","price":1,"price":-1,"change":0}' % ts,
                "PARSE_ERROR", 'Duplicate key "price" at /price'),
        "dup-nested": (b'{"type":"notification","timestamp":%d,"userId":"u","channel":"push","title":"t",'
                       b'"body":"b","data":{"a":1,"a":2}}' % ts, "PARSE_ERROR", 'Duplicate key "a" at /data/a'),
        "big": (padded_quote("BIG", MIB + 1), "VALIDATION_ERROR",
                "message body is 1048577 bytes; limits.maxMessageBytes is 1048576 (not parsed)"),
    }
    for mid, (body, _, _) in cases.items():
        publish_poison(fx, body, mid)
    # Exactly at the limit is fine.
    fx.amqp.publish("market.quotes", "", padded_quote("EDGE", MIB), message_id="edge")
    dead = wait_dead_letters(fx, len(cases))
    assert set(dead) == set(cases), sorted(dead)
    for mid, (body, code, contains) in cases.items():
        assert_dead_letter(dead[mid], body, code, mid, error_contains=contains)
    wait_until(lambda: history("EDGE") == [1.0], 15, what="the 1 MiB quote to be applied")
    for symbol in ("A", "AB", "DUP", "BIG", "CTL"):
        assert history_len(symbol) == 0, f"{symbol}: a hostile message was applied"
    fx.amqp.publish("market.quotes", "", quote("AFTER", 2.0), message_id="after")
    wait_until(lambda: history("AFTER") == [2.0], 15, what="the next quote to be applied")
    assert d.running(), "eventd died"
    assert d.stop() == 0


def test_header_table_nested_too_deep_is_dead_lettered_without_it(fx):
    # A 100-level table in the headers: eventd neither walks nor forwards it. The dead
    # letter keeps the body, the properties and every other header; the deep one is
    # named in x-error-message and left out.
    d = fx.start_daemon()
    body = json.dumps(quote("DEEPH", 1.0)).encode()
    fx.amqp.publish("market.quotes", "rk-poison", body, message_id="deep-h", correlation_id="corr-deep-h",
                    timestamp=1700000000,
                    headers={"x-custom": "keep-me", "x-num": 7, "x-deep": nested_table(100),
                             "x-at-limit": nested_table(7)})
    dead = wait_dead_letters(fx, 1)
    msg = dead["deep-h"]
    assert_dead_letter(msg, body, "VALIDATION_ERROR", "deep-h",
                       error_contains="AMQP header 'x-deep' nests tables deeper than 8 levels")
    assert "x-deep" not in msg.headers, f"the dead letter carries the deep header: {sorted(msg.headers)}"
    assert msg.headers.get("x-at-limit") == nested_table(7), "a header within the bound was lost"
    assert history_len("DEEPH") == 0, "the message was applied"
    fx.amqp.publish("market.quotes", "", quote("AFTERH", 3.0), message_id="after-h",
                    headers={"x-ok": nested_table(7)})
    wait_until(lambda: history("AFTERH") == [3.0], 15, what="the next quote to be applied")
    assert d.running() and d.stop() == 0


def test_dlq_show_and_replay_refuse_deep_headers(fx):
    # A dead letter the broker made itself keeps whatever headers the producer sent.
    fx.topology_apply()
    dlq = "eventd.quotes.dlq"
    fx.amqp.publish("", dlq, json.dumps(quote("RD", 1.0)), message_id="deep-dl",
                    headers={"x-deep": nested_table(100), "x-custom": "kept"})
    fx.amqp.publish("", dlq, json.dumps(quote("RO", 1.0)), message_id="plain-dl",
                    headers={"x-original-exchange": "market.quotes", "x-original-routing-key": ""})
    wait_until(lambda: fx.amqp.depth(dlq) == 2, 10, what="two dead letters")
    rc, out, err = fx.eventctl("dlq", "show", "eventd.quotes")
    assert rc == 0, err
    shown = {m["messageId"]: m for m in map(json.loads, out.splitlines())}
    assert shown["deep-dl"].get("droppedHeaders") == ["x-deep"], shown["deep-dl"]
    headers = {k: v for k, v in shown["deep-dl"]["headers"].items() if k != "x-delivery-count"}  # quorum's own
    assert headers == {"x-custom": "kept"}, shown["deep-dl"]["headers"]
    assert "droppedHeaders" not in shown["plain-dl"], shown["plain-dl"]
    rc, out, err = fx.eventctl("dlq", "replay", "eventd.quotes", "--all")
    assert rc == 1, f"replay exited {rc}: {err!r}"
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and "message_id=deep-dl" in lines[0] and "'x-deep'" in lines[0] \
        and "stays in eventd.quotes.dlq" in lines[0], lines
    assert "replayed 1 message(s)" in out, out
    wait_until(lambda: fx.amqp.depth(dlq) == 1, 10, what="the refused dead letter back in the DLQ")
    [left] = fx.amqp.get_all(dlq)
    assert left.props.message_id == "deep-dl" and left.headers["x-deep"] == nested_table(100), left.headers.keys()
    assert [m.props.message_id for m in fx.amqp.get_all("eventd.quotes")] == ["plain-dl"]


def test_eventctl_refuses_hostile_input(fx):
    fx.topology_apply()
    big = os.path.join(fx.tmp, "big.json")
    with open(big, "wb") as f:
        f.write(b'{"symbol":"BIG","price":1,"change":0,"pad":"' + b"x" * MIB + b'"}')
    big_size = os.path.getsize(big)
    edge = os.path.join(fx.tmp, "edge.json")  # under the limit as read, over it once type and timestamp are added
    with open(edge, "wb") as f:
        head = b'{"symbol":"EDGE","price":1,"change":0,"pad":"'
        f.write(head + b"x" * (MIB - len(head) - 2) + b'"}')
    cases = [
        (["quote_update", '{"symbol":"A\\u0000B","price":1,"change":0}'], "/symbol: must not contain control"),
        (["quote_update", '{"symbol":"A","price":1,"price":-1,"change":0}'], 'Duplicate key "price" at /price'),
        (["quote_update", '{"symbol":"A","price":1,"change":0,"x":{"k":1,"k":2}}'], 'Duplicate key "k" at /x/k'),
        (["quote_update", f"@{big}"], f"the message is {big_size} bytes; limits.maxMessageBytes is 1048576"),
        (["quote_update", f"@{edge}"], "limits.maxMessageBytes is 1048576"),
    ]
    for args, word in cases:
        rc, out, err = fx.eventctl("publish", *args)
        one_line(rc, err, word, f"publish {args[0]} {args[1][:60]}")
        assert out == ""
    # A smaller limit from the config applies too.
    small = os.path.join(fx.tmp, "small.jsonc")
    with open(small, "w") as f:
        json.dump({"http": {"enabled": False}, "limits": {"maxMessageBytes": 1024}}, f)
    rc, out, err = fx.eventctl("--config", small, "publish", "quote_update",
                               json.dumps({"symbol": "S", "price": 1, "change": 0, "pad": "y" * 1000}))
    one_line(rc, err, "limits.maxMessageBytes is 1024", "publish over a 1 KiB limit")
    assert fx.amqp.depth("eventd.quotes") == 0, "something was published"

    rule = '{"alertId":1,"symbol":"%s","condition":"price_above","threshold":1}'
    specs = [
        ('{"rules":[%s],"channels":["push"]}' % (rule % "A\\u0000B"), "/rules/0/symbol: must not contain control"),
        ('{"rules":[],"channels":["push"],"positions":[{"symbol":"P\\u0007","quantity":1}]}',
         "/positions/0/symbol: must not contain control"),
        ('{"rules":[],"channels":["push"],"channels":["email"]}', 'Duplicate key "channels" at /channels'),
        ('{"rules":[{"alertId":1,"alertId":2,"symbol":"A","condition":"price_above","threshold":1}],"channels":[]}',
         'Duplicate key "alertId" at /rules/0/alertId'),
    ]
    for spec, word in specs:
        rc, out, err = fx.eventctl("monitor", "start", "hostile", spec)
        one_line(rc, err, word, f"monitor start {spec[:60]}")
    spec_path = os.path.join(fx.tmp, "big-spec.json")
    with open(spec_path, "w") as f:
        f.write('{"rules":[],"channels":["push"]' + " " * MIB + "}")
    rc, out, err = fx.eventctl("monitor", "start", "hostile", f"@{spec_path}")
    one_line(rc, err, f"SPEC is {os.path.getsize(spec_path)} bytes; limits.maxMessageBytes is 1048576",
             "monitor start, a 1 MiB spec")
    assert redis("EXISTS", monitor_key("hostile")) == 0 and redis("EXISTS", rules_key("A")) == 0, \
        "a refused spec was written"
