"""eventctl publish and topology, with no daemon running: what lands on the broker."""
import json
import os
import re
import time

from harness import AMQP_PORT, closed_port

QUOTE_KEYS = {"type", "timestamp", "symbol", "price", "change"}


def published_id(stdout):
    m = re.search(r"message_id=(\S+)", stdout)
    assert m, f"eventctl did not print the message id: {stdout!r}"
    return m.group(1)


def assert_wire_properties(msg, type_):
    p = msg.props
    assert p.content_type == "application/json", p.content_type
    assert p.delivery_mode == 2, p.delivery_mode
    assert p.type == type_, p.type
    assert p.message_id, "no message_id"
    assert p.timestamp is not None and abs(p.timestamp - time.time()) < 120, f"timestamp {p.timestamp}"


def test_topology_apply_and_verify(fx):
    rc, out, err = fx.eventctl("topology", "verify")
    assert rc == 1, f"verify in an empty vhost exited {rc}"
    assert "eventd.quotes" in err and "market.quotes" in err, err
    fx.topology_apply()
    rc, out, err = fx.eventctl("topology", "verify")
    assert rc == 0, f"verify after apply exited {rc}: {err}"
    assert fx.amqp.depth("eventd.quotes") == 0 and fx.amqp.depth("eventd.quotes.dlq") == 0


def test_topology_verify_names_a_queue_with_other_arguments(fx):
    fx.amqp.channel().queue_declare("eventd.quotes", durable=True)  # classic, no dead-lettering
    rc, out, err = fx.eventctl("topology", "apply")
    assert rc == 1, f"apply over a conflicting queue exited {rc}: {err!r}"
    assert "eventd.quotes" in err, err
    rc, out, err = fx.eventctl("topology", "verify")
    assert rc == 1, f"verify exited {rc}"
    problems = [l for l in err.splitlines() if "'eventd.quotes'" in l]
    assert problems and any("x-queue-type" in l or "x-dead-letter" in l for l in problems), err


def test_publish_quote_from_argument_file_and_stdin(fx):
    fx.topology_apply()
    path = os.path.join(fx.tmp, "quote.json")
    with open(path, "w") as f:
        json.dump({"symbol": "FILE", "price": 2.5, "change": -0.25}, f)
    ids = []
    for args, kw, symbol in ((['{"symbol":"ARG","price":1,"change":0}'], {}, "ARG"),
                             ([f"@{path}"], {}, "FILE"),
                             (["-"], {"input": '{"symbol":"STDIN","price":3,"change":0.5}'}, "STDIN")):
        rc, out, err = fx.eventctl("publish", "quote_update", *args, **kw)
        assert rc == 0, f"publish {args} exited {rc}: {err.strip()}"
        ids.append((published_id(out), symbol))
    msgs = fx.amqp.get_all("eventd.quotes")
    assert len(msgs) == 3, f"expected 3 messages in eventd.quotes, found {len(msgs)}"
    for msg, (mid, symbol) in zip(msgs, ids):
        assert_wire_properties(msg, "quote_update")
        assert msg.props.message_id == mid, (msg.props.message_id, mid)
        assert msg.exchange == "market.quotes", msg.exchange
        body = json.loads(msg.body)
        assert set(body) == QUOTE_KEYS, f"body keys {sorted(body)}"
        assert body["symbol"] == symbol and body["type"] == "quote_update", body
        assert abs(body["timestamp"] - time.time() * 1000) < 120_000, body["timestamp"]
    assert json.loads(msgs[1].body)["price"] == 2.5 and json.loads(msgs[1].body)["change"] == -0.25


def test_publish_normalises_snake_case(fx):
    fx.topology_apply()
    rc, out, err = fx.eventctl("publish", "analysis_request",
                               '{"user_id":"u-42","symbol":"MSFT","analysis_type":"chart","correlation_id":"c-1"}')
    assert rc == 0, f"exited {rc}: {err.strip()}"
    msgs = fx.amqp.get_all("eventd.analysis")
    assert len(msgs) == 1, f"expected 1 message in eventd.analysis, found {len(msgs)}"
    msg = msgs[0]
    assert_wire_properties(msg, "analysis_request")
    assert msg.routing_key == "analysis.request.MSFT", msg.routing_key
    assert msg.props.correlation_id == "c-1", msg.props.correlation_id
    body = json.loads(msg.body)
    assert body.get("userId") == "u-42" and body.get("analysisType") == "chart", body
    assert body.get("correlationId") == "c-1", body
    assert not [k for k in body if "_" in k], f"snake_case keys left in {body}"


def test_invalid_input_is_refused_and_nothing_is_sent(fx):
    fx.topology_apply()
    deep = os.path.join(fx.tmp, "deep.json")  # too long for an argument
    with open(deep, "w") as f:
        f.write('{"symbol":"A","price":1,"change":0,"x":' + "[" * 100000 + "]" * 100000 + "}")
    cases = [
        (["quote_update", '{"symbol":"A","price":1,'], "JSON"),
        (["quote_update", '{"symbol":"A","price":0,"change":0}'], "/price"),
        (["quote_update", '{"symbol":"A","price":-3,"change":0}'], "/price"),
        (["quote_update", '{"symbol":"A","price":1}'], "change"),
        (["quote_update", '{"symbol":"A","price":"1","change":0}'], "/price"),
        (["analysis_request", '{"user_id":"u","symbol":"A","analysis_type":"weekly"}'], "/analysisType"),
        (["no_such_type", '{"symbol":"A","price":1,"change":0}'], "no_such_type"),
        (["quote_update", '{"symbol":"A","price":1,"change":0}', "--count", "0"], "--count"),
        (["quote_update", '{"symbol":"A","price":1,"change":0}', "--count", "ten"], "--count"),
        (["quote_update", '{"symbol":"A","price":1,"change":0}', "--count", "-5"], "--count"),
        (["quote_update", f"@{fx.tmp}/missing.json"], "missing.json"),
        # A directory was an uncaught stream error (exit 1); deep nesting overflowed the
        # parser's stack (exit 139).
        (["quote_update", f"@{fx.tmp}"], fx.tmp),
        (["quote_update", f"@{deep}"], "Nested deeper than 64 levels"),
    ]
    for args, word in cases:
        rc, out, err = fx.eventctl("publish", *args)
        lines = err.splitlines()
        assert rc == 2, f"publish {args} exited {rc} (stderr {err!r})"
        assert len(lines) == 1, f"publish {args}: expected one stderr line, got {lines!r}"
        assert word in lines[0], f"publish {args}: stderr does not name {word!r}: {lines[0]!r}"
        assert out == "", f"publish {args} printed {out!r}"
    # "--config" last was "unknown command '--config'"; "--config=" fell back to EVENTD_CONFIG.
    for args in (["--config"], ["--config=", "publish", "quote_update", '{"symbol":"A","price":1,"change":0}']):
        rc, out, err = fx.eventctl(*args)
        assert rc == 2 and len(err.splitlines()) == 1 and "--config needs a FILE" in err, (args, rc, err)
    for queue in ("eventd.quotes", "eventd.analysis"):
        assert fx.amqp.depth(queue) == 0, f"something was published to {queue}"


def test_publish_count_gives_distinct_ids(fx):
    fx.topology_apply()
    rc, out, err = fx.eventctl("publish", "quote_update", '{"symbol":"CNT","price":1,"change":0}', "--count", "50")
    assert rc == 0, f"exited {rc}: {err.strip()}"
    msgs = fx.amqp.get_all("eventd.quotes")
    assert len(msgs) == 50, f"expected 50 messages, found {len(msgs)}"
    ids = {m.props.message_id for m in msgs}
    assert len(ids) == 50 and None not in ids, f"{len(ids)} distinct message ids"


def test_publish_fixed_message_id(fx):
    fx.topology_apply()
    rc, out, err = fx.eventctl("publish", "quote_update", '{"symbol":"FIX","price":1,"change":0}',
                               "--message-id", "fixed-1", "--count", "3")
    assert rc == 0, f"exited {rc}: {err.strip()}"
    assert [m.props.message_id for m in fx.amqp.get_all("eventd.quotes")] == ["fixed-1"] * 3


def test_publish_without_topology_fails(fx):
    # Fresh vhost: the exchange does not exist.
    rc, out, err = fx.eventctl("publish", "quote_update", '{"symbol":"A","price":1,"change":0}')
    assert rc == 1, f"exited {rc} (stderr {err!r})"
    lines = err.splitlines()
    assert len(lines) == 1 and "market.quotes" in lines[0], f"stderr {lines!r}"
    # The exchange exists but no queue is bound: the broker returns the message.
    fx.amqp.declare_exchange("market.quotes", "fanout")
    rc, out, err = fx.eventctl("publish", "quote_update", '{"symbol":"A","price":1,"change":0}')
    assert rc == 1, f"exited {rc} (stderr {err!r})"
    lines = err.splitlines()
    assert len(lines) == 1 and "unroutable" in lines[0] and "market.quotes" in lines[0], f"stderr {lines!r}"


def test_publish_broker_unreachable(fx):
    env = dict(fx.env, EVENTD_AMQP_URL=f"amqp://guest:guest@127.0.0.1:{closed_port()}/%2f")
    started = time.monotonic()
    rc, out, err = fx.eventctl("publish", "quote_update", '{"symbol":"A","price":1,"change":0}', env=env)
    assert rc == 1, f"exited {rc} (stderr {err!r})"
    lines = err.splitlines()
    assert len(lines) == 1 and "RabbitMQ" in lines[0], f"stderr {lines!r}"
    assert time.monotonic() - started < 20, "took too long to give up"
    # Bad credentials are a broker refusal too, not a crash.
    env = dict(fx.env, EVENTD_AMQP_URL=f"amqp://guest:wrong@127.0.0.1:{AMQP_PORT}/{fx.vq}")
    rc, out, err = fx.eventctl("publish", "quote_update", '{"symbol":"A","price":1,"change":0}', env=env)
    assert rc == 1 and len(err.splitlines()) == 1, f"bad password: exited {rc}, stderr {err!r}"
