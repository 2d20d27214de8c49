"""What the daemon declares on the broker, as the management API shows it."""
from harness import WORK_QUEUES, history, mgmt, wait_until

DEFAULT_DELAYS = [1000, 2000, 4000, 8000]  # 1 s, 2 s, 4 s, 8 s: retries after runs 1..4 of 5


def exchanges(fx):
    return {e["name"]: e for e in mgmt("GET", f"exchanges/{fx.vq}")}


def bindings(fx):
    return {(b["source"], b["destination"], b["routing_key"])
            for b in mgmt("GET", f"bindings/{fx.vq}") if b["source"] and b["destination_type"] == "queue"}


def wait_one_consumer_per_queue(fx, queues):
    def ok():
        counts = fx.consumers_per_queue()
        return counts if all(counts[q] == 1 for q in queues) and sum(counts.values()) == len(queues) else None
    try:
        return wait_until(ok, 15, 0.3, what="one consumer per work queue")
    except AssertionError:
        raise AssertionError(f"consumers per queue: {dict(fx.consumers_per_queue())}, expected 1 on each of "
                             f"{sorted(queues)} and none elsewhere")


def test_default_topology(fx):
    d = fx.start_daemon({"retry": {"initialDelayMs": 1000, "maxDelayMs": 60000, "multiplier": 2, "maxAttempts": 5}})
    queues = fx.queues()
    expected = set(WORK_QUEUES) | {q + ".dlq" for q in WORK_QUEUES} | \
        {f"{q}.retry.{ms}ms" for q in WORK_QUEUES for ms in DEFAULT_DELAYS}
    assert set(queues) == expected, f"missing {sorted(expected - set(queues))}, unexpected {sorted(set(queues) - expected)}"
    for name in WORK_QUEUES:
        q = queues[name]
        assert q["durable"] and not q["auto_delete"], f"{name} is not durable"
        assert q["type"] == "quorum", f"{name} is {q['type']}"
        args = q["arguments"]
        assert args.get("x-queue-type") == "quorum", (name, args)
        assert args.get("x-delivery-limit") == 20, (name, args)  # the documented default
        assert args.get("x-dead-letter-exchange") == "", (name, args)
        assert args.get("x-dead-letter-routing-key") == name + ".dlq", (name, args)
        dlq = queues[name + ".dlq"]
        assert dlq["durable"] and dlq["type"] == "quorum", (name + ".dlq", dlq["type"])
        assert "x-message-ttl" not in dlq["arguments"], f"{name}.dlq expires its dead letters"
        for ms in DEFAULT_DELAYS:
            r = queues[f"{name}.retry.{ms}ms"]
            assert r["durable"], r["name"]
            assert r["arguments"].get("x-message-ttl") == ms, (r["name"], r["arguments"])
            assert r["arguments"].get("x-dead-letter-exchange") == "", (r["name"], r["arguments"])
            assert r["arguments"].get("x-dead-letter-routing-key") == name, (r["name"], r["arguments"])
    ex = exchanges(fx)
    assert ex.get("market.quotes", {}).get("type") == "fanout" and ex["market.quotes"]["durable"], ex.get("market.quotes")
    assert ex.get("events", {}).get("type") == "topic" and ex["events"]["durable"], ex.get("events")
    expected_bindings = {(exchange, name, key) for name, (exchange, key) in WORK_QUEUES.items()}
    got = bindings(fx)
    assert expected_bindings <= got, f"missing bindings {sorted(expected_bindings - got)}"
    wait_one_consumer_per_queue(fx, WORK_QUEUES)
    assert d.stop() == 0


def test_retry_queues_follow_retry_config(fx):
    fx.start_daemon({"retry": {"initialDelayMs": 200, "maxDelayMs": 1600, "multiplier": 2, "maxAttempts": 8}})
    names = set(fx.queues())
    retry = sorted(n for n in names if n.startswith("eventd.quotes.retry."))
    assert retry == sorted(f"eventd.quotes.retry.{ms}ms" for ms in (200, 400, 800, 1600)), retry


def test_classic_queue_type(fx):
    d = fx.start_daemon({"topology": {"deliveryLimit": 7, "queues": [
        {"name": "eventd.quotes", "exchange": "market.quotes", "type": "classic"},
        {"name": "eventd.alerts", "exchange": "events", "bindingKey": "alert.triggered.#"},
    ]}})
    queues = fx.queues()
    quotes = queues["eventd.quotes"]
    assert quotes["type"] == "classic", quotes["type"]
    assert quotes["arguments"].get("x-queue-type") == "classic", quotes["arguments"]
    assert quotes["arguments"].get("x-dead-letter-routing-key") == "eventd.quotes.dlq", quotes["arguments"]
    assert queues["eventd.quotes.dlq"]["type"] == "classic"
    assert queues["eventd.alerts"]["type"] == "quorum", "the default type is quorum"
    assert queues["eventd.alerts"]["arguments"].get("x-delivery-limit") == 7, queues["eventd.alerts"]["arguments"]
    assert "x-delivery-limit" not in quotes["arguments"], "classic queues take no delivery limit"
    assert "eventd.analysis" not in queues, "a configured queue list replaces the default one"
    wait_one_consumer_per_queue(fx, ["eventd.quotes", "eventd.alerts"])
    # The classic queue works like the quorum one.
    rc, out, err = d.eventctl("publish", "quote_update", '{"symbol":"CLS","price":4,"change":0}')
    assert rc == 0, err
    wait_until(lambda: history("CLS") == [4.0], 10, what="the quote to be applied")


def test_restart_is_idempotent(fx):
    d = fx.start_daemon()
    before = fx.queues()
    assert d.stop() == 0
    d.start().wait_ready()
    after = fx.queues()
    assert set(before) == set(after)
    for name in before:
        assert before[name]["arguments"] == after[name]["arguments"], name
