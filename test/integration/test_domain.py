"""The domain: monitors, edge-triggered alert rules, the alert -> notification chain with
its sinks (redis stream, file spool, webhook), retries, circuit breaker and rate limit,
analysis request-reply, and exactly-once effects of derived messages.

Quotes are published one at a time and each is awaited until its idempotency key reads
"1": by then its effects are in Redis and every message it derived (alert_triggered) is
confirmed by the broker, so the order of evaluation is the order of publication.
"""
import itertools
import json
import math
import os
import re
import statistics
import time

from harness import (CONDITIONS, MONITORS_KEY, alerts_key, analysis_key, history_key, idem_key, monitor_key,
                     latest_quote, monitor_symbols_key, notifications_key, now_ms, quote, quote_key, redis,
                     rule_index_key, outbox_key, rule_owners_key, rule_state_key, rules_key, stored_quote, wait_until)
from webhook_server import WebhookServer

_ids = itertools.count(1)
NOTIFY_QUEUES = ("eventd.notify.push", "eventd.notify.email", "eventd.notify.discord")


# ---------------------------------------------------------------- helpers

def domain_config(fx, hook=None, overrides=None):
    """Config with every channel pointed at something this test owns: push -> Redis stream,
    email -> a file in the test's temp dir, discord -> the test webhook (or a file when none)."""
    discord = ({"sink": "webhook", "url": hook.url} if hook is not None
               else {"sink": "file", "path": os.path.join(fx.tmp, "discord.jsonl")})
    config = {"notify": {"channels": {"push": {"sink": "redis"},
                                      "email": {"sink": "file", "path": email_path(fx)},
                                      "discord": discord}}}
    return _merge(config, overrides or {})


def _merge(base, extra):
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def email_path(fx):
    return os.path.join(fx.tmp, "spool", "email.jsonl")


def email_lines(fx):
    try:
        with open(email_path(fx)) as f:
            text = f.read()
    except FileNotFoundError:
        return []
    assert text == "" or text.endswith("\n"), f"the email spool ends in a partial line: {text[-200:]!r}"
    return [json.loads(line) for line in text.splitlines()]


def monitor_start(fx, user, spec):
    rc, out, err = fx.eventctl("monitor", "start", user, json.dumps(spec))
    assert rc == 0, f"monitor start {user} exited {rc}: {err.strip()}"
    return out


def rule(alert_id, symbol, condition, threshold, cooldown=None):
    r = {"alertId": alert_id, "symbol": symbol, "condition": condition, "threshold": threshold}
    if cooldown is not None:
        r["cooldownSec"] = cooldown
    return r


def processed(tag_of, message_id):
    """True once the message's effects are recorded and its derived messages confirmed;
    tag_of: its symbol (quote_update, analysis_request) or its userId (the other types)."""
    return redis("GET", idem_key(tag_of, message_id)) == "1"


def send_quote(fx, symbol, price, change=0.0, ts=None, message_id=None, wait=True):
    mid = message_id or f"q-{symbol}-{next(_ids)}"
    fx.amqp.publish("market.quotes", symbol, quote(symbol, price, change, timestamp=ts), message_id=mid,
                    type="quote_update")
    if wait:
        wait_until(lambda: processed(symbol, mid), 15, what=f"quote {mid} ({symbol} {price}) processed")
    return mid


def alerts(user):
    """The user's alert history, oldest first (eventd LPUSHes)."""
    return [json.loads(a) for a in reversed(redis("LRANGE", alerts_key(user), 0, -1))]


def stream(user):
    """The user's notification stream as [(entry id, {field: value})]."""
    entries = redis("XRANGE", notifications_key(user), "-", "+") or []
    return [(eid, dict(zip(fields[::2], fields[1::2]))) for eid, fields in entries]


def settle(fx, seconds=1.0, queues=("eventd.alerts",) + NOTIFY_QUEUES):
    """Waits for the given work queues to be empty, then for them to stay empty for `seconds`
    (a message in flight inside eventd takes milliseconds): what was derived has been handled."""
    wait_until(lambda: all(fx.amqp.depth(q) == 0 for q in queues), 20, what=f"{queues} drained")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        busy = [q for q in queues if fx.amqp.depth(q)]
        if busy:
            wait_until(lambda: all(fx.amqp.depth(q) == 0 for q in queues), 20, what=f"{busy} drained")
            end = time.monotonic() + seconds
        time.sleep(0.1)


def publish_notification(fx, d, user, channel, title, body, message_id=None, count=None, kind=None):
    payload = {"userId": user, "channel": channel, "title": title, "body": body}
    if kind:
        payload["kind"] = kind
    args = ["publish", "notification", json.dumps(payload)]
    if message_id:
        args += ["--message-id", message_id]
    if count:
        args += ["--count", str(count)]
    rc, out, err = d.eventctl(*args)
    assert rc == 0, f"eventctl publish notification exited {rc}: {err.strip()}"
    return out


def dead_letters(fx, queue, n, timeout=20):
    wait_until(lambda: (fx.amqp.depth(queue) or 0) >= n, timeout, what=f"{n} dead letter(s) in {queue}")
    msgs = fx.amqp.get_all(queue)
    assert len(msgs) == n, f"expected {n} dead letter(s) in {queue}, found {len(msgs)}"
    return msgs


def log_lines_for(d, msg, message_id):
    return [l for l in d.log_lines(complete_only=True) if l["msg"] == msg and l.get("message_id") == message_id]


# ---------------------------------------------------------------- monitor CLI

def test_monitor_cli_start_status_stop_list(fx):
    spec_a = {"rules": [rule(1, "MONA", "price_above", 200, 300), rule(2, "MONB", "price_below", 50)],
              "channels": ["push", "email"], "positions": [{"symbol": "MONA", "quantity": 10}],
              "checkIntervalMs": 30000}
    spec_b = {"rules": [rule(5, "MONA", "change_pct_below", -3)], "channels": ["discord"]}
    spec_c = {"rules": [rule(9, "MONC", "change_pct_above", 2.5)], "channels": ["push"]}

    # From an argument, from @file and from stdin.
    out = monitor_start(fx, "mon-a", spec_a)
    assert "mon-a" in out, out
    path = os.path.join(fx.tmp, "spec-b.json")
    with open(path, "w") as f:
        json.dump(spec_b, f)
    rc, out, err = fx.eventctl("monitor", "start", "mon-b", f"@{path}")
    assert rc == 0, f"monitor start @file exited {rc}: {err}"
    rc, out, err = fx.eventctl("monitor", "start", "mon-c", "-", input=json.dumps(spec_c))
    assert rc == 0, f"monitor start - (stdin) exited {rc}: {err}"

    for user, spec in (("mon-a", spec_a), ("mon-b", spec_b), ("mon-c", spec_c)):
        rc, out, err = fx.eventctl("monitor", "status", user)
        assert rc == 0, f"status {user} exited {rc}: {err}"
        st = json.loads(out)
        assert st.get("status") == "running", st
        assert st.get("userId") == user, st
        assert st.get("spec", {}).get("rules") == spec["rules"], f"status of {user} shows spec {st.get('spec')}"
        assert st["spec"].get("channels") == spec["channels"], st
        assert st.get("channels") == spec["channels"], st
    assert json.loads(fx.eventctl("monitor", "status", "mon-a")[1]).get("checkIntervalMs") == 30000

    # The per-symbol index of watching users.
    rules_a = redis("HGETALL", rules_key("MONA"))
    fields = dict(zip(rules_a[::2], rules_a[1::2]))
    assert set(fields) == {"mon-a:1", "mon-b:5"}, f"the rules of MONA are {sorted(fields)}"
    cooldown, _, alert_fields = fields["mon-a:1"].partition(" ")
    r = json.loads(alert_fields)
    assert cooldown == "300", f"the rule's cooldown is not stored first: {fields['mon-a:1']!r}"
    assert r == {"userId": "mon-a", "alertId": 1, "condition": "price_above", "threshold": 200}, r
    index = redis("ZRANGE", rule_index_key("MONA", "price_above"), 0, -1, "WITHSCORES")
    assert "mon-a:1" in index[::2] and float(index[index.index("mon-a:1") + 1]) == 200, index
    assert redis("HEXISTS", rules_key("MONB"), "mon-a:2") == 1
    assert redis("HEXISTS", rules_key("MONC"), "mon-c:9") == 1

    rc, out, err = fx.eventctl("monitor", "list")
    assert rc == 0, err
    listed = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert set(listed) == {"mon-a", "mon-b", "mon-c"}, out
    assert "running" in listed["mon-a"] and "2 rule" in listed["mon-a"], listed["mon-a"]

    # stop: the rules leave the index, the spec stays.
    rc, out, err = fx.eventctl("monitor", "stop", "mon-a")
    assert rc == 0, f"stop exited {rc}: {err}"
    st = json.loads(fx.eventctl("monitor", "status", "mon-a")[1])
    assert st.get("status") == "stopped", st
    assert st.get("spec", {}).get("rules") == spec_a["rules"], "stop lost the spec"
    assert redis("HEXISTS", rules_key("MONA"), "mon-a:1") == 0, "a stopped monitor's rule is still indexed"
    assert redis("HEXISTS", rules_key("MONB"), "mon-a:2") == 0, "a stopped monitor's rule is still indexed"
    assert redis("HEXISTS", rules_key("MONA"), "mon-b:5") == 1, "stopping mon-a removed mon-b's rule"
    rc, out, err = fx.eventctl("monitor", "list")
    listed = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "stopped" in listed["mon-a"] and "running" in listed["mon-b"], out

    # Replacing a monitor replaces its rules in the index (MONC's rule goes, MOND's comes).
    monitor_start(fx, "mon-c", {"rules": [rule(9, "MOND", "price_above", 1)], "channels": ["push"]})
    assert redis("HEXISTS", rules_key("MONC"), "mon-c:9") == 0, "the replaced rule is still indexed"
    assert redis("HEXISTS", rules_key("MOND"), "mon-c:9") == 1

    # Invalid specs: exit 2, one line naming the field, nothing written.
    good_rule = rule(1, "MONA", "price_above", 10)
    invalid = [
        ("condition", {"rules": [rule(1, "MONA", "price_over", 10)], "channels": ["push"]}),
        ("channels", {"rules": [good_rule]}),
        ("alertId", {"rules": [good_rule, rule(1, "MONX", "price_below", 5)], "channels": ["push"]}),
        ("cooldownSec", {"rules": [rule(1, "MONA", "price_above", 10, -1)], "channels": ["push"]}),
        ("alertId", {"rules": [rule(2 ** 31, "MONA", "price_above", 10)], "channels": ["push"]}),
        ("alertId", {"rules": [rule(2 ** 64 - 1, "MONA", "price_above", 10)], "channels": ["push"]}),
        ("cooldownSec", {"rules": [rule(1, "MONA", "price_above", 10, 2 ** 64 - 1)], "channels": ["push"]}),
        ("checkIntervalMs", {"rules": [good_rule], "channels": ["push"], "checkIntervalMs": 2 ** 63}),
        ("channels", {"rules": [good_rule], "channels": ["sms"]}),
        ("threshold", {"rules": [{"alertId": 1, "symbol": "MONA", "condition": "price_above"}], "channels": []}),
        ("JSON", '{"rules": [{"alertId": 1,'),
        # Deep nesting overflowed the parser's stack (exit 139); given on stdin ("-"):
        # too long for an argument.
        ("Nested deeper than 64 levels", '{"rules": [], "channels": [], "positions": [{"symbol": "A", "quantity": 1,'
                                         ' "x": ' + "[" * 100000 + "]" * 100000 + '}]}'),
    ]
    before = {k: redis("HGETALL", k) for k in (rules_key("MONA"), rules_key("MONX"), rules_key("MONB"))}
    before_b = redis("HGETALL", monitor_key("mon-b"))
    symbols_b = sorted(redis("SMEMBERS", monitor_symbols_key("mon-b")))
    members = sorted(redis("SMEMBERS", MONITORS_KEY))
    for word, spec in invalid:
        text = spec if isinstance(spec, str) else json.dumps(spec)
        for user in ("mon-new", "mon-b"):  # a new user, and replacing an existing monitor
            if len(text) > 100000:
                rc, out, err = fx.eventctl("monitor", "start", user, "-", input=text)
            else:
                rc, out, err = fx.eventctl("monitor", "start", user, text)
            lines = err.splitlines()
            assert rc == 2, f"invalid spec ({word}) for {user}: exit {rc}, stderr {err!r}"
            assert len(lines) == 1, f"invalid spec ({word}): expected one stderr line, got {lines!r}"
            assert word in lines[0], f"invalid spec: stderr does not name {word!r}: {lines[0]!r}"
            assert out == "", f"invalid spec ({word}) printed {out!r}"
        for key in (monitor_key("mon-new"), monitor_symbols_key("mon-new")):
            assert redis("EXISTS", key) == 0, f"invalid spec ({word}) created {key}"
        for key, value in before.items():
            assert redis("HGETALL", key) == value, f"invalid spec ({word}) changed {key}"
        assert redis("HGETALL", monitor_key("mon-b")) == before_b, f"invalid spec ({word}) changed mon-b's monitor"
        assert sorted(redis("SMEMBERS", monitor_symbols_key("mon-b"))) == symbols_b, \
            f"invalid spec ({word}) changed mon-b's symbols"
        assert sorted(redis("SMEMBERS", MONITORS_KEY)) == members, f"invalid spec ({word}) changed eventd:monitors"

    # Unknown users.
    for sub in ("status", "stop"):
        rc, out, err = fx.eventctl("monitor", sub, "nobody-here")
        assert rc == 1, f"monitor {sub} of an unknown user exited {rc}"
        assert len(err.splitlines()) == 1 and "nobody-here" in err, err
    for key in (monitor_key("nobody-here"), monitor_symbols_key("nobody-here")):
        assert redis("EXISTS", key) == 0, f"stop of an unknown user wrote {key}"
    rc, out, err = fx.eventctl("monitor", "start", "bad user", json.dumps(spec_c))
    assert rc == 2 and len(err.splitlines()) == 1, (rc, err)

    # A spec in Redis that eventctl did not write: not an object (HasMember on an array
    # aborted `monitor list`, exit 134), nested too deep (a stack overflow in `monitor
    # status`), not JSON. Listed and shown without crashing.
    for user, spec in (("odd-array", "[1, 2]"), ("odd-deep", "[" * 100000 + "]" * 100000), ("odd-text", "{oops")):
        redis("HSET", monitor_key(user), "status", "running", "spec", spec)
        redis("SADD", MONITORS_KEY, user)
        rc, out, err = fx.eventctl("monitor", "status", user)
        assert rc == 0, f"monitor status {user} exited {rc}: {err!r}"
        assert json.loads(out)["userId"] == user, out
    rc, out, err = fx.eventctl("monitor", "list")
    assert rc == 0, f"monitor list with odd specs exited {rc}: {err!r}"
    for user in ("odd-array", "odd-deep", "odd-text"):
        assert re.search(rf"^{user}\trunning\t0 rule\(s\)$", out, re.M), out


# ---------------------------------------------------------------- rules

def test_price_rule_is_edge_triggered_with_cooldown(fx):
    fx.start_daemon(domain_config(fx))
    # Same rule, two users: no cooldown, and a 300 s cooldown (measured in quote time).
    monitor_start(fx, "edge-a", {"rules": [rule(1, "EDGE", "price_above", 200, 0)], "channels": ["push"]})
    monitor_start(fx, "edge-b", {"rules": [rule(4, "EDGE", "price_above", 200, 300)], "channels": ["push"]})
    base = now_ms() - 60_000
    steps = [  # price, alerts expected for edge-a and edge-b after it
        (190, 0, 0),  # records the side
        (195, 0, 0),
        (201, 1, 1),  # crosses: fires
        (205, 1, 1),  # still above: no re-fire
        (210, 1, 1),
        (199, 1, 1),  # back below
        (202, 2, 1),  # crosses again: fires without cooldown, not within 300 s of the first
    ]
    for i, (price, want_a, want_b) in enumerate(steps):
        send_quote(fx, "EDGE", price, ts=base + i * 1000)
        if want_a or want_b:
            wait_until(lambda: len(alerts("edge-a")) >= want_a and len(alerts("edge-b")) >= want_b, 15,
                       what=f"alerts after {price}")
        settle(fx, 0.5)
        got = (len(alerts("edge-a")), len(alerts("edge-b")))
        assert got == (want_a, want_b), f"after quote {price}: alerts (edge-a, edge-b) = {got}, expected " \
                                        f"{(want_a, want_b)}; edge-a: {alerts('edge-a')}"
    first, second = alerts("edge-a")
    for a, value in ((first, 201), (second, 202)):
        assert a["userId"] == "edge-a" and a["alertId"] == 1 and a["symbol"] == "EDGE", a
        assert a["condition"] == "price_above" and a["threshold"] == 200 and a["currentValue"] == value, a
    [b] = alerts("edge-b")
    assert b["alertId"] == 4 and b["currentValue"] == 201, b
    # Every alert became one push notification.
    settle(fx)
    assert len(stream("edge-a")) == 2 and len(stream("edge-b")) == 1, (stream("edge-a"), stream("edge-b"))


def test_alerts_from_one_batch_of_several_symbols_carry_their_own_quote(fx):
    # A backlog of interleaved quotes of three watched symbols: their function call holds
    # a run of each symbol's quotes, sent with the symbol's keys (and its name) once. Each
    # alert still names its own symbol and its own quote's correlation id and price.
    d = fx.daemon(domain_config(fx))
    fx.topology_apply(d.config_path)
    symbols = ["RUNA", "RUNB", "RUNC"]
    for s in symbols:
        monitor_start(fx, f"run-{s}", {"rules": [rule(1, s, "price_above", 100, 0)], "channels": ["push"]})
    base = now_ms() - 60_000
    for i, price in enumerate((90, 101, 99, 102)):  # the reference, a crossing, back below, a crossing
        for s in symbols:
            fx.amqp.publish("market.quotes", s, quote(s, price, timestamp=base + i * 1000, correlationId=f"c-{s}-{i}"),
                            message_id=f"{s}-{i}", type="quote_update")
    d.start().wait_ready()
    wait_until(lambda: all(len(alerts(f"run-{s}")) >= 2 for s in symbols), 30, what="two alerts per symbol")
    settle(fx)
    for s in symbols:
        got = [(a["symbol"], a.get("correlationId"), a["currentValue"]) for a in alerts(f"run-{s}")]
        assert got == [(s, f"c-{s}-1", 101), (s, f"c-{s}-3", 102)], got
        assert [float(p) for p in redis("LRANGE", f"eventd:history:{{{s}}}", 0, -1)] == [90, 101, 99, 102]
    assert d.stop() == 0


def test_failed_quote_script_writes_nothing_so_its_retry_still_fires(fx):
    # Redis does not roll back a failed script: if the quote were stored before the
    # history push failed, the retry would see itself as the previous quote, cross
    # nothing, and the alert would be lost (and the history pushed twice).
    d = fx.start_daemon(domain_config(fx, None, {"log": {"level": "debug"}}))
    monitor_start(fx, "wt", {"rules": [rule(1, "WRT", "price_above", 100, 0)], "channels": ["push"]})
    base = now_ms() - 60_000
    send_quote(fx, "WRT", 99, ts=base)
    redis("SET", history_key("WRT"), "not a list")
    mid = send_quote(fx, "WRT", 101, ts=base + 1000, wait=False)
    wait_until(lambda: d.logged("retrying"), 15, what="the failing quote to be retried")
    assert latest_quote("WRT").get("price") == "99", "a failed run stored the quote"
    assert redis("HGETALL", rule_state_key("WRT")) == [], "a failed run set the rule's cooldown"
    redis("DEL", history_key("WRT"))
    wait_until(lambda: processed("WRT", mid), 20, what="the retried quote applied")
    settle(fx)
    assert [a["currentValue"] for a in alerts("wt")] == [101], f"alerts after the retry: {alerts('wt')}"
    assert redis("LRANGE", history_key("WRT"), 0, -1) == ["101"], "the history was pushed more than once"
    assert len(stream("wt")) == 1


def test_symbols_with_colons_do_not_collide_with_the_rule_index(fx):
    # "CLN:price_above" is a valid symbol; its rule specs must not share a key with
    # CLN's price_above index.
    fx.start_daemon(domain_config(fx))
    monitor_start(fx, "col-a", {"rules": [rule(1, "CLN:price_above", "price_above", 100, 0)], "channels": ["push"]})
    monitor_start(fx, "col-b", {"rules": [rule(1, "CLN", "price_above", 100, 0)], "channels": ["push"]})
    base = now_ms() - 60_000
    for i, symbol in enumerate(("CLN", "CLN:price_above")):
        send_quote(fx, symbol, 99, ts=base + i)
        send_quote(fx, symbol, 101, ts=base + 1000 + i)
    settle(fx)
    assert [(a["symbol"], a["currentValue"]) for a in alerts("col-b")] == [("CLN", 101)], alerts("col-b")
    assert [(a["symbol"], a["currentValue"]) for a in alerts("col-a")] == [("CLN:price_above", 101)], alerts("col-a")
    assert fx.amqp.depth("eventd.quotes.dlq") == 0


def test_a_quote_crossing_ten_thousand_rules_fires_each_once(fx):
    # Far beyond Lua 5.1's unpack() limit (about 8,000 values) in one script.
    fx.start_daemon(domain_config(fx))
    users = [f"many-{u}" for u in range(10)]
    for u in users:
        monitor_start(fx, u, {"rules": [rule(i, "MANY", "price_above", 100 + i / 1000, 0) for i in range(1000)],
                              "channels": []})
    base = now_ms() - 60_000
    send_quote(fx, "MANY", 99, ts=base)
    send_quote(fx, "MANY", 102, ts=base + 1000, message_id="many-cross", wait=False)
    wait_until(lambda: processed("MANY", "many-cross"), 60, what="the quote crossing 10,000 rules applied")
    settle(fx, 1.0, ("eventd.alerts",))
    derived = set()
    for u in users:  # each alert_triggered under its user's tag
        cursor = "0"
        while True:
            cursor, keys = redis("SCAN", cursor, "MATCH", idem_key(u, "many-cross:*"), "COUNT", 1000)
            derived.update(keys)
            if cursor == "0":
                break
    assert len(derived) == 10_000, f"{len(derived)} alert_triggered messages handled, expected 10,000"
    fired = redis("HKEYS", rule_state_key("MANY"))
    for u in users:
        mine = {f for f in fired if f.startswith(u + ":")}
        assert mine == {f"{u}:{i}" for i in range(1000)}, f"{u}: {len(mine)} of its 1000 rules recorded as fired"
    assert len(fired) == 10_000, f"{len(fired)} rules recorded as fired"
    assert redis("LLEN", history_key("MANY")) == 2
    assert fx.amqp.depth("eventd.quotes.dlq") == 0 and fx.amqp.depth("eventd.alerts.dlq") == 0


test_a_quote_crossing_ten_thousand_rules_fires_each_once.timeout = 180


def test_change_pct_below_uses_previous_close(fx):
    fx.start_daemon(domain_config(fx))
    monitor_start(fx, "pct", {"rules": [rule(7, "CHG", "change_pct_below", -5, 0)], "channels": ["push"]})
    base = now_ms() - 60_000
    # change / (price - change) * 100, i.e. relative to the previous close:
    steps = [
        (100, -2, 0),     # -1.96 %: records the side
        (95, -4.9, 0),    # -4.905 %: not below -5 (-5.16 % if divided by the price: must not fire)
        (94, -5.1, 1),    # -5.146 %: crosses below, fires
        (93, -6, 1),      # -6.06 %: still below
        (96, -1, 1),      # back above
        (90, -10, 2),     # -10 %: crosses again
    ]
    for i, (price, change, want) in enumerate(steps):
        send_quote(fx, "CHG", price, change, ts=base + i * 1000)
        if want:
            wait_until(lambda: len(alerts("pct")) >= want, 15, what=f"{want} alert(s)")
        settle(fx, 0.5)
        assert len(alerts("pct")) == want, f"after {price}/{change}: {len(alerts('pct'))} alert(s), expected {want}: " \
                                           f"{alerts('pct')}"
    first, second = alerts("pct")
    assert first["condition"] == "change_pct_below" and first["threshold"] == -5, first
    assert math.isclose(first["currentValue"], -5.1 / 99.1 * 100, rel_tol=1e-6), first
    assert math.isclose(second["currentValue"], -10.0, rel_tol=1e-6), second


def test_stopped_monitor_triggers_nothing(fx):
    fx.start_daemon(domain_config(fx))
    spec = {"rules": [rule(1, "STP", "price_above", 200, 0)], "channels": ["push"]}
    monitor_start(fx, "stop-a", spec)
    monitor_start(fx, "stop-b", spec)  # a running control on the same symbol
    base = now_ms() - 60_000
    send_quote(fx, "STP", 190, ts=base)
    rc, out, err = fx.eventctl("monitor", "stop", "stop-a")
    assert rc == 0, err
    index = redis("HGETALL", rules_key("STP"))
    assert index[::2] == ["stop-b:1"], f"the rules of STP after stopping stop-a: {index}"
    send_quote(fx, "STP", 250, ts=base + 1000)
    wait_until(lambda: len(alerts("stop-b")) == 1, 15, what="the running monitor's alert")
    settle(fx)
    assert alerts("stop-a") == [], f"a stopped monitor fired: {alerts('stop-a')}"
    assert stream("stop-a") == [], "a stopped monitor was notified"
    assert len(stream("stop-b")) == 1


def test_rules_on_a_symbol_already_quoted_are_seen_at_once_each_time(fx):
    # eventd stores the quotes of a symbol without rules with a cheaper function and
    # learns that a symbol has rules from its stored quote's mark, which eventctl keeps: rules added to a symbol eventd has quoted, removed, and added back must
    # each count from the very next quote.
    fx.start_daemon(domain_config(fx))
    base = now_ms() - 60_000
    step = itertools.count()

    def q(price):
        send_quote(fx, "LATE", price, ts=base + next(step) * 1000)

    for price in (190, 210, 190):  # no rules yet: nothing fires
        q(price)
    assert "rules" not in latest_quote("LATE")
    spec = {"rules": [rule(1, "LATE", "price_above", 200, 0)], "channels": ["push"]}
    monitor_start(fx, "late", spec)
    assert latest_quote("LATE").get("rules"), redis("GET", quote_key("LATE"))
    q(201)
    wait_until(lambda: len(alerts("late")) == 1, 15, what="the alert of the rule added to a quoted symbol")
    q(190)
    rc, _, err = fx.eventctl("monitor", "stop", "late")
    assert rc == 0, err
    assert "rules" not in latest_quote("LATE"), "monitor stop left the symbol marked"
    for price in (205, 190, 206):  # crossings with no rules
        q(price)
    settle(fx)
    assert len(alerts("late")) == 1, f"a stopped monitor fired: {alerts('late')}"
    monitor_start(fx, "late", spec)
    for price in (207, 190, 208):  # 206 -> 207 crosses nothing; 190 -> 208 does
        q(price)
    wait_until(lambda: len(alerts("late")) == 2, 15, what="the alert after the rule came back")
    settle(fx)
    assert [a["currentValue"] for a in alerts("late")] == [201, 208], alerts("late")
    assert len(stream("late")) == 2
    assert redis("GET", quote_key("LATE")) == stored_quote(208, 0, base + 10_000, rules=True), \
        redis("GET", quote_key("LATE"))
    assert redis("LLEN", history_key("LATE")) == 11


def test_a_failed_quote_of_a_symbol_without_rules_leaves_the_stored_quote_as_it_was(fx):
    # The cheap function replaces the stored quote before it pushes the price: when the
    # push fails, the quote it replaced and the idempotency key must be as they were.
    d = fx.start_daemon(domain_config(fx, None, {"log": {"level": "debug"}}))
    base = now_ms() - 60_000
    send_quote(fx, "RST", 10, ts=base)
    redis("SET", history_key("RST"), "not a list")
    mid = send_quote(fx, "RST", 11, ts=base + 1000, wait=False)
    wait_until(lambda: d.logged("retrying"), 15, what="the failing quote to be retried")
    assert redis("GET", quote_key("RST")) == stored_quote(10, 0, base), redis("GET", quote_key("RST"))
    assert redis("EXISTS", idem_key("RST", mid)) == 0, "a failed run kept the idempotency key"
    redis("DEL", history_key("RST"))
    wait_until(lambda: processed("RST", mid), 20, what="the retried quote applied")
    assert redis("GET", quote_key("RST")) == stored_quote(11, 0, base + 1000)
    assert redis("LRANGE", history_key("RST"), 0, -1) == ["11"]


def test_quote_hashes_of_an_older_eventd_are_converted_with_their_rules_mark(fx):
    # Before 2026-12 the latest quote was a hash (price, change, timestamp, and "rules"
    # while the symbol had rules). The next quote converts it, and so does eventctl when
    # it changes the symbol's rules; a symbol marked in the hash keeps its rules, and its
    # stored quote is the reference the next one crosses from.
    fx.start_daemon(domain_config(fx))
    base = now_ms() - 60_000
    redis("HSET", quote_key("OLDQ"), "price", "10", "change", "0", "timestamp", base)
    send_quote(fx, "OLDQ", 11, ts=base + 1000)
    assert redis("GET", quote_key("OLDQ")) == stored_quote(11, 0, base + 1000), redis("GET", quote_key("OLDQ"))

    redis("HSET", quote_key("OLDE"), "price", "5", "change", "0", "timestamp", base)
    monitor_start(fx, "olde", {"rules": [rule(1, "OLDE", "price_above", 6, 0)], "channels": ["push"]})
    assert redis("GET", quote_key("OLDE")) == stored_quote(5, 0, base, rules=True), redis("GET", quote_key("OLDE"))

    monitor_start(fx, "oldr", {"rules": [rule(1, "OLDR", "price_above", 200, 0)], "channels": ["push"]})
    redis("DEL", quote_key("OLDR"))  # what an older eventd and eventctl left
    redis("HSET", quote_key("OLDR"), "price", "199", "change", "0", "timestamp", base, "rules", "1")
    send_quote(fx, "OLDR", 201, ts=base + 1000)
    wait_until(lambda: len(alerts("oldr")) == 1, 15, what="the alert crossing from the converted quote")
    assert alerts("oldr")[0]["currentValue"] == 201, alerts("oldr")
    assert redis("GET", quote_key("OLDR")) == stored_quote(201, 0, base + 1000, rules=True), \
        redis("GET", quote_key("OLDR"))


def test_a_pending_outbox_is_published_for_a_symbol_without_rules(fx):
    # A quote applied before a crash, its alert recorded but never confirmed, comes back
    # (its idempotency key reads "pending") when the symbol has no rules any more, so
    # eventd takes it to the cheap function first: that one must hand it on, and the
    # alert is published once; the quote is not applied again.
    fx.start_daemon(domain_config(fx))
    monitor_start(fx, "pend", {"rules": [], "channels": ["push"]})
    mid = "pend-q-1"
    alert = {"type": "alert_triggered", "timestamp": now_ms(), "symbol": "PEND", "currentValue": 201,
             "userId": "pend", "alertId": 1, "condition": "price_above", "threshold": 200}
    redis("RPUSH", outbox_key("PEND", mid), json.dumps(alert))
    redis("SET", idem_key("PEND", mid), "pending")
    send_quote(fx, "PEND", 201, message_id=mid)
    wait_until(lambda: len(alerts("pend")) == 1, 15, what="the pending alert published and handled")
    settle(fx)
    assert alerts("pend") == [alert], alerts("pend")
    assert redis("EXISTS", history_key("PEND")) == 0, "the quote was applied again"
    assert redis("EXISTS", quote_key("PEND")) == 0, "the quote was applied again"


def user_rules(user, symbol):
    """What is indexed for `user` under `symbol`: {rule specs..., index of each condition: members..., owners}."""
    mine = lambda members: sorted(m for m in members if m.startswith(user + ":"))  # noqa: E731
    out = {"specs": mine(redis("HKEYS", rules_key(symbol))), "owners": redis("HGET", rule_owners_key(symbol), user),
           "state": mine(redis("HKEYS", rule_state_key(symbol)))}
    for c in CONDITIONS:
        out[c] = mine(redis("ZRANGE", rule_index_key(symbol, c), 0, -1))
    return out


def indexed(user, *alert_ids, condition="price_above"):
    """user_rules() of a user with exactly these rules (and no cooldown state) under a symbol."""
    members = sorted(f"{user}:{i}" for i in alert_ids)
    out = {"specs": members, "owners": json.dumps(list(alert_ids), separators=(",", ":")) if alert_ids else None,
           "state": []}
    for c in CONDITIONS:
        out[c] = members if c == condition else []
    return out


def test_interrupted_monitor_start_and_stop_are_repaired_by_a_rerun(fx):
    # start and stop write to one slot per call (the user's keys, eventd:monitors, each
    # symbol's rules): a failure halfway leaves some symbols done. Running the same
    # command again must leave exactly what one clean run leaves.
    fx.start_daemon(domain_config(fx))
    old = {"rules": [rule(1, "HAA", "price_above", 100, 0), rule(2, "HCC", "price_above", 100, 0)],
           "channels": ["push"]}
    new = {"rules": [rule(1, "HAA", "price_above", 200, 0), rule(3, "HBB", "price_above", 100, 0),
                     rule(4, "HDD", "price_above", 100, 0)], "channels": ["push"]}
    monitor_start(fx, "fix", old)
    monitor_start(fx, "fix-other", {"rules": [rule(7, "HCC", "price_above", 100, 0)], "channels": ["push"]})
    # What an earlier interrupted start could have left: a rule under a symbol the user's
    # monitorsyms lists but no spec has.
    redis("HSET", rules_key("HEE"), "fix:9", '0 {"userId":"fix","alertId":9,"condition":"price_above","threshold":100}')
    redis("ZADD", rule_index_key("HEE", "price_above"), 100, "fix:9")
    redis("HSET", rule_owners_key("HEE"), "fix", "[9]")
    redis("HSET", rule_state_key("HEE"), "fix:9", 1)
    redis("SADD", monitor_symbols_key("fix"), "HEE")

    # The per-symbol step fails for HBB (symbols go in order: HAA is done, HCC, HDD, HEE not).
    redis("SET", rules_key("HBB"), "not a hash")
    rc, out, err = fx.eventctl("monitor", "start", "fix", json.dumps(new))
    assert rc == 1, f"monitor start with a broken key exited {rc}: {err!r}"
    assert out == "" and len(err.splitlines()) == 1, (out, err)
    assert "WRONGTYPE" in err and "run it again" in err, err
    assert user_rules("fix", "HAA") == indexed("fix", 1), "HAA, before the failure, was not done"
    assert user_rules("fix", "HCC") == indexed("fix", 2), "HCC, after the failure, was touched"
    assert user_rules("fix", "HEE") == dict(indexed("fix", 9), state=["fix:9"]), "HEE, after the failure, was touched"
    assert sorted(redis("SMEMBERS", monitor_symbols_key("fix"))) == ["HAA", "HBB", "HCC", "HDD", "HEE"]
    st = json.loads(fx.eventctl("monitor", "status", "fix")[1])
    assert st["spec"]["rules"] == old["rules"], "the monitor was written before its rules"

    # Fixed and run again: exactly the new spec, nothing of the old one or the leftover.
    redis("DEL", rules_key("HBB"))
    out = monitor_start(fx, "fix", new)
    assert out == "monitor for fix running: 3 rule(s)\n", out
    assert user_rules("fix", "HAA") == indexed("fix", 1)
    assert float(redis("ZSCORE", rule_index_key("HAA", "price_above"), "fix:1")) == 200
    assert user_rules("fix", "HBB") == indexed("fix", 3)
    assert user_rules("fix", "HDD") == indexed("fix", 4)
    assert user_rules("fix", "HCC") == indexed("fix"), "the rule the new spec dropped is still indexed"
    assert user_rules("fix", "HEE") == indexed("fix"), "the leftover rule is still indexed"
    assert user_rules("fix-other", "HCC") == indexed("fix-other", 7), "another user's rule was touched"
    assert sorted(redis("SMEMBERS", monitor_symbols_key("fix"))) == ["HAA", "HBB", "HDD"]
    assert "fix" in redis("SMEMBERS", MONITORS_KEY)
    st = json.loads(fx.eventctl("monitor", "status", "fix")[1])
    assert st["status"] == "running" and st["spec"]["rules"] == new["rules"], st

    # Quotes: only the new rules fire.
    base = now_ms() - 60_000
    for i, symbol in enumerate(("HAA", "HBB", "HCC", "HDD", "HEE")):
        send_quote(fx, symbol, 99, ts=base + i)
        send_quote(fx, symbol, 101, ts=base + 1000 + i)
    send_quote(fx, "HAA", 250, ts=base + 2000)
    wait_until(lambda: len(alerts("fix")) >= 3 and alerts("fix-other"), 15, what="the alerts of the new rules")
    settle(fx)
    fired = sorted((a["symbol"], a["alertId"], a["currentValue"]) for a in alerts("fix"))
    assert fired == [("HAA", 1, 250), ("HBB", 3, 101), ("HDD", 4, 101)], fired
    assert [(a["symbol"], a["alertId"]) for a in alerts("fix-other")] == [("HCC", 7)], alerts("fix-other")

    # stop fails halfway too (HDD's rule state is not a hash): HAA and HBB done, HDD not,
    # the monitor still running. The rerun finishes it.
    redis("SET", rule_state_key("HDD"), "not a hash")
    rc, out, err = fx.eventctl("monitor", "stop", "fix")
    assert rc == 1 and out == "" and len(err.splitlines()) == 1 and "run it again" in err, (rc, out, err)
    assert user_rules("fix", "HAA") == indexed("fix") and user_rules("fix", "HBB") == indexed("fix")
    assert redis("HGET", rules_key("HDD"), "fix:4"), "HDD, after the failure, was touched"
    assert json.loads(fx.eventctl("monitor", "status", "fix")[1])["status"] == "running"
    redis("DEL", rule_state_key("HDD"))
    rc, out, err = fx.eventctl("monitor", "stop", "fix")
    assert rc == 0 and out == "monitor for fix stopped\n", (rc, out, err)
    for symbol in ("HAA", "HBB", "HCC", "HDD", "HEE"):
        assert user_rules("fix", symbol) == indexed("fix"), f"a rule of the stopped monitor is left under {symbol}"
    assert redis("EXISTS", monitor_symbols_key("fix")) == 0
    st = json.loads(fx.eventctl("monitor", "status", "fix")[1])
    assert st["status"] == "stopped" and st["spec"]["rules"] == new["rules"], st

    # Crossing every threshold again fires nothing for fix; fix-other still fires.
    for i, symbol in enumerate(("HAA", "HBB", "HCC", "HDD", "HEE")):
        send_quote(fx, symbol, 90, ts=base + 3000 + i)
        send_quote(fx, symbol, 300, ts=base + 4000 + i)
    wait_until(lambda: len(alerts("fix-other")) == 2, 15, what="fix-other's second alert")
    settle(fx)
    assert len(alerts("fix")) == 3, f"the stopped monitor fired: {alerts('fix')[3:]}"
    assert len(stream("fix")) == 3, "the stopped monitor was notified"


# ---------------------------------------------------------------- alert -> notifications

def test_alert_reaches_every_channel_once(fx):
    hook = WebhookServer(fx)
    fx.start_daemon(domain_config(fx, hook))
    monitor_start(fx, "chain", {"rules": [rule(3, "CHN", "price_above", 100, 0)],
                                "channels": ["push", "email", "discord"]})
    base = now_ms() - 60_000
    send_quote(fx, "CHN", 99, ts=base)
    send_quote(fx, "CHN", 101.5, ts=base + 1000)
    wait_until(lambda: stream("chain") and email_lines(fx) and hook.count(), 20,
               what="a notification in the stream, the email spool and the webhook")
    settle(fx)

    [alert] = alerts("chain")
    assert alert["alertId"] == 3 and alert["currentValue"] == 101.5, alert

    entries = stream("chain")
    assert len(entries) == 1, f"{len(entries)} entries in the stream of chain"
    push = entries[0][1]
    assert push.get("channel") == "push" and push.get("kind") == "alert", push
    assert "CHN" in push.get("title", "") and push.get("body"), push
    assert push.get("messageId"), push
    data = json.loads(push.get("data", "{}"))
    assert data.get("alertId") == 3 and data.get("userId") == "chain", f"stream entry data: {data}"

    lines = email_lines(fx)
    assert len(lines) == 1, f"{len(lines)} lines in the email spool: {lines}"
    email = lines[0]
    assert email.get("messageId"), f"email line lacks messageId: {email}"
    assert email.get("channel") == "email" and email.get("userId") == "chain" and email.get("kind") == "alert", email
    assert email.get("title") == push["title"] and email.get("body") == push["body"], (email, push)
    assert email["messageId"] != push["messageId"], "two channels' notifications share a message id"

    posts = hook.snapshot()
    assert len(posts) == 1, f"{len(posts)} POSTs to the webhook"
    post = posts[0]
    assert post.headers.get("Content-Type", "").startswith("application/json"), post.headers
    assert isinstance(post.json, dict) and set(post.json) >= {"username", "content"}, f"not Discord-like: {post.raw!r}"
    assert isinstance(post.json["username"], str) and post.json["username"], post.json
    assert push["title"] in post.json["content"] and push["body"] in post.json["content"], post.json
    assert len(post.json["content"]) <= 2000, "Discord rejects content over 2000 characters"
    for q in NOTIFY_QUEUES + ("eventd.alerts",):
        assert fx.amqp.depth(q + ".dlq") == 0, f"{q}.dlq is not empty"


def test_webhook_500_is_retried_then_dead_lettered(fx):
    hook = WebhookServer(fx, status=500)
    d = fx.start_daemon(domain_config(fx, hook, {
        "retry": {"initialDelayMs": 200, "maxDelayMs": 800, "maxAttempts": 3},
        "notify": {"circuitBreaker": {"failureThreshold": 100}}}))
    publish_notification(fx, d, "hook500", "discord", "T-500", "B-500", message_id="n500", kind="alert")
    [dead] = dead_letters(fx, "eventd.notify.discord.dlq", 1)
    h = dead.headers
    assert dead.props.message_id == "n500", dead.props
    assert h.get("x-error-code") == "MAX_ATTEMPTS", h
    assert "DOWNSTREAM_ERROR" in h.get("x-error-message", ""), h.get("x-error-message")
    assert "500" in h.get("x-error-message", ""), h.get("x-error-message")
    assert h.get("x-retry-count") == 2, f"x-retry-count {h.get('x-retry-count')!r}, expected maxAttempts-1 = 2"
    assert h.get("x-original-queue") == "eventd.notify.discord", h
    assert h.get("x-original-exchange") == "events" and h.get("x-original-routing-key") == "notification.discord.alert", h
    body = json.loads(dead.body)
    assert body.get("title") == "T-500" and body.get("userId") == "hook500", body
    assert hook.count() == 3, f"{hook.count()} POSTs for maxAttempts 3"
    retries = log_lines_for(d, "retrying", "n500")
    assert [r.get("retry") for r in retries] == [1, 2], retries
    assert all(r.get("code") == "DOWNSTREAM_ERROR" for r in retries), retries
    assert [r.get("delay_ms") for r in retries] == [200, 400], retries
    assert redis("EXISTS", idem_key("hook500", "n500")) == 0, "a failed notification was recorded as delivered"
    assert fx.amqp.depth("eventd.notify.discord") == 0


def test_webhook_400_is_dead_lettered_at_once(fx):
    hook = WebhookServer(fx, status=400)
    d = fx.start_daemon(domain_config(fx, hook, {
        "retry": {"initialDelayMs": 200, "maxDelayMs": 800, "maxAttempts": 3},
        "notify": {"circuitBreaker": {"failureThreshold": 100}}}))
    publish_notification(fx, d, "hook400", "discord", "T-400", "B-400", message_id="n400")
    [dead] = dead_letters(fx, "eventd.notify.discord.dlq", 1)
    h = dead.headers
    assert h.get("x-error-code") == "DOWNSTREAM_ERROR", h
    assert "400" in h.get("x-error-message", ""), h
    assert h.get("x-retry-count") == 0, h
    settle(fx, 1.0, ("eventd.notify.discord",))
    assert hook.count() == 1, f"a 400 was retried: {hook.count()} POSTs"
    assert not log_lines_for(d, "retrying", "n400"), "a 400 was retried"


def test_circuit_breaker_defers_then_delivers_everything(fx):
    hook = WebhookServer(fx, status=503)
    open_ms = 2000
    d = fx.start_daemon(domain_config(fx, hook, {
        "log": {"level": "debug"},
        "retry": {"initialDelayMs": 200, "maxDelayMs": 1600, "maxAttempts": 10},
        "notify": {"circuitBreaker": {"failureThreshold": 2, "openTimeoutMs": open_ms},
                   "rateLimit": {"perMinute": 60000, "burst": 1000}}}))
    # Two failures open the circuit (one at a time, so neither is in flight with the other).
    for i in (1, 2):
        publish_notification(fx, d, "cb", "discord", f"cb-{i}", f"cb-body-{i}", message_id=f"cb-{i}")
        hook.wait_posts(i)
    opened = time.monotonic()
    # More notifications while it is open: deferred, not POSTed.
    for i in range(3, 7):
        publish_notification(fx, d, "cb", "discord", f"cb-{i}", f"cb-body-{i}", message_id=f"cb-{i}")
    wait_until(lambda: [l for l in d.log_lines(complete_only=True) if l["msg"] == "deferring"], 10,
               what="a 'deferring' log line")
    # Let it fail for a while: every retry of the six comes back at least once.
    while time.monotonic() - opened < 5.0:
        time.sleep(0.1)
    failing_for = time.monotonic() - opened
    failed_posts = hook.count()
    trials_allowed = math.floor(failing_for * 1000 / open_ms) + 1
    assert failed_posts <= 2 + trials_allowed, \
        f"{failed_posts} POSTs in {failing_for:.1f} s with the circuit open (threshold 2, at most " \
        f"{trials_allowed} half-open trial(s)): the breaker does not hold calls back"
    deferred = [l for l in d.log_lines(complete_only=True) if l["msg"] == "deferring"]
    assert deferred and all(l.get("code") == "DOWNSTREAM_ERROR" for l in deferred), deferred[:3]
    assert {l.get("message_id") for l in deferred} >= {f"cb-{i}" for i in range(3, 7)}, \
        f"not every notification sent while open was deferred: {sorted({l.get('message_id') for l in deferred})}"

    hook.status = 200
    expected = {f"cb-body-{i}" for i in range(1, 7)}

    def delivered():
        return [p.json["content"].split("\n", 1)[1] for p in hook.snapshot() if p.status == 200]
    wait_until(lambda: set(delivered()) >= expected, 30, 0.1, what="all six notifications delivered")
    settle(fx, 1.5, ("eventd.notify.discord",))
    got = delivered()
    assert sorted(got) == sorted(expected), f"delivered {sorted(got)}: some twice or unknown"
    assert fx.amqp.depth("eventd.notify.discord.dlq") == 0, "a notification was dead-lettered"
    for i in range(1, 7):
        assert processed("cb", f"cb-{i}"), f"cb-{i} not recorded as delivered"


def test_rate_limit_defers_without_dropping(fx):
    d = fx.start_daemon(domain_config(fx, None, {
        "log": {"level": "debug"},
        # Deferrals use up no attempt: with maxAttempts 1 (a failure is never retried)
        # they still wait in a retry queue, and counting them would dead-letter.
        "retry": {"initialDelayMs": 200, "maxDelayMs": 1600, "maxAttempts": 1},
        "notify": {"rateLimit": {"perMinute": 60, "burst": 2}}}))
    publish_notification(fx, d, "rl", "push", "rate", "limited", count=5)
    wait_until(lambda: len(stream("rl")) >= 2, 2, what="the first two notifications (burst 2), at once")
    wait_until(lambda: len(stream("rl")) >= 5, 20, what="all five notifications")
    settle(fx, 1.0, ("eventd.notify.push",))
    entries = stream("rl")
    assert len(entries) == 5, f"{len(entries)} notifications delivered"
    assert len({e[1].get("messageId") for e in entries}) == 5, "a notification was delivered twice"
    ms = [int(eid.split("-")[0]) for eid, _ in entries]
    assert ms[1] - ms[0] < 700, f"the first two (burst 2) were not delivered at once: {ms}"
    assert ms[2] - ms[0] >= 900, f"the third came {ms[2] - ms[0]} ms after the first: burst 2 at 1/s exceeded"
    assert ms[4] - ms[0] >= 2700, f"five notifications in {ms[4] - ms[0]} ms at 60/min with burst 2"
    assert fx.amqp.depth("eventd.notify.push.dlq") == 0, "a rate-limited notification was dead-lettered"
    deferred = [l for l in d.log_lines(complete_only=True) if l["msg"] == "deferring"]
    assert deferred and all(l.get("code") == "RATE_LIMIT" for l in deferred), deferred[:3]
    assert not d.logged("retrying"), "a rate-limited notification used up an attempt"


# ---------------------------------------------------------------- analysis

def test_analysis_request_reply(fx):
    d = fx.start_daemon(domain_config(fx))
    ch = fx.amqp.channel()
    ch.queue_declare("analysis-replies", durable=True)
    for i in range(60):
        price = round(100 + 8 * math.sin(i / 4) + 0.15 * i, 4)
        fx.amqp.publish("market.quotes", "ANL", quote("ANL", price), message_id=f"anl-{i}")
    wait_until(lambda: redis("LLEN", history_key("ANL")) == 60, 20, what="60 quotes of ANL applied")
    prices = [float(p) for p in redis("LRANGE", history_key("ANL"), 0, -1)]

    rc, out, err = d.eventctl("publish", "analysis_request",
                              '{"userId":"ana","symbol":"ANL","analysisType":"full"}',
                              "--reply-to", "analysis-replies", "--correlation-id", "corr-X")
    assert rc == 0, err
    wait_until(lambda: fx.amqp.depth("analysis-replies") >= 1, 20, what="a reply on analysis-replies")
    [reply] = fx.amqp.get_all("analysis-replies")
    assert reply.props.correlation_id == "corr-X", f"reply correlation_id {reply.props.correlation_id!r}"
    assert reply.props.type == "analysis_complete", reply.props.type
    assert reply.props.content_type == "application/json", reply.props.content_type
    a = json.loads(reply.body)
    assert a.get("type") == "analysis_complete", a
    assert a.get("userId") == "ana" and a.get("symbol") == "ANL", a
    assert a.get("workflowId"), a
    assert a.get("recommendation") in ("buy", "sell", "hold"), a
    for k in ("sma20", "sma50", "rsi14", "macd", "historicalVolatility"):
        assert k in a, f"analysis_complete lacks {k}: {sorted(a)}"
    assert math.isclose(a["sma20"], statistics.fmean(prices[-20:]), rel_tol=1e-9), (a["sma20"], prices[-20:])
    assert math.isclose(a["sma50"], statistics.fmean(prices[-50:]), rel_tol=1e-9), a["sma50"]
    assert 0 <= a["rsi14"] <= 100, a["rsi14"]
    assert set(a["macd"]) >= {"macd", "signal", "histogram"}, a["macd"]
    assert math.isclose(a["macd"]["histogram"], a["macd"]["macd"] - a["macd"]["signal"], abs_tol=1e-9), a["macd"]
    returns = [math.log(prices[i] / prices[i - 1]) for i in range(len(prices) - 20, len(prices))]
    hv = statistics.stdev(returns) * math.sqrt(252)
    assert math.isclose(a["historicalVolatility"], hv, rel_tol=1e-6), (a["historicalVolatility"], hv)

    # analysis_complete also went to analysis.complete.<user>, where eventd stores it.
    key = analysis_key("ana", "ANL")
    stored = wait_until(lambda: redis("GET", key), 15, what=key)
    stored = json.loads(stored)
    assert stored.get("workflowId") == a["workflowId"] and stored.get("recommendation") == a["recommendation"], stored
    assert math.isclose(stored.get("sma20", 0), a["sma20"]), stored
    assert fx.amqp.depth("eventd.analysis.dlq") == 0 and fx.amqp.depth("eventd.analysis-results.dlq") == 0


def test_analysis_with_too_little_history_is_dead_lettered(fx):
    d = fx.start_daemon(domain_config(fx))
    for i in range(5):
        fx.amqp.publish("market.quotes", "SHRT", quote("SHRT", 10 + i), message_id=f"shrt-{i}")
    wait_until(lambda: redis("LLEN", history_key("SHRT")) == 5, 15, what="5 quotes of SHRT applied")
    rc, out, err = d.eventctl("publish", "analysis_request", '{"userId":"ana2","symbol":"SHRT","analysisType":"full"}',
                              "--message-id", "short-1")
    assert rc == 0, err
    [dead] = dead_letters(fx, "eventd.analysis.dlq", 1)
    h = dead.headers
    assert dead.props.message_id == "short-1"
    assert h.get("x-error-code") == "NOT_FOUND", h
    msg = h.get("x-error-message", "")
    assert "50" in msg and "5" in msg.replace("50", ""), f"the error does not say how many prices are needed: {msg!r}"
    assert h.get("x-retry-count") == 0, h
    assert redis("EXISTS", analysis_key("ana2", "SHRT")) == 0


# ---------------------------------------------------------------- exactly-once of derived messages

def test_duplicate_crossing_quote_notifies_once(fx):
    hook = WebhookServer(fx)
    d = fx.start_daemon(domain_config(fx, hook, {"log": {"level": "debug"}}))
    monitor_start(fx, "once", {"rules": [rule(2, "ONCE", "price_above", 50, 0)],
                               "channels": ["push", "email", "discord"]})
    base = now_ms() - 60_000
    send_quote(fx, "ONCE", 49, ts=base)
    body = quote("ONCE", 51, timestamp=base + 1000)
    # Twice back to back (the second may arrive while the first is in flight) ...
    fx.amqp.publish("market.quotes", "ONCE", body, message_id="cross-1", type="quote_update")
    fx.amqp.publish("market.quotes", "ONCE", body, message_id="cross-1", type="quote_update")
    wait_until(lambda: processed("ONCE", "cross-1"), 15, what="the crossing quote processed")
    wait_until(lambda: stream("once") and email_lines(fx) and hook.count(), 20, what="the notifications")
    settle(fx)
    # ... and once more after everything settled.
    fx.amqp.publish("market.quotes", "ONCE", body, message_id="cross-1", type="quote_update")
    wait_until(lambda: d.logged("duplicate acked", message_id="cross-1"), 15, what="the third copy acked as duplicate")
    settle(fx, 1.5)
    assert len(alerts("once")) == 1, f"{len(alerts('once'))} alerts for one crossing"
    assert len(stream("once")) == 1, f"{len(stream('once'))} push notifications"
    assert len(email_lines(fx)) == 1, f"{len(email_lines(fx))} email lines"
    assert hook.count() == 1, f"{hook.count()} webhook POSTs"
    assert redis("LLEN", history_key("ONCE")) == 2, "the duplicate quote was applied twice"


# ---------------------------------------------------------------- found while testing

def test_webhook_content_is_capped_without_breaking_utf8(fx):
    # Discord takes at most 2000 characters of content; cutting a long multi-byte text at
    # 2000 bytes can split a character in half, and the POST body is then not valid JSON.
    hook = WebhookServer(fx)
    d = fx.start_daemon(domain_config(fx, hook))
    title = "x" + "\u00e9" * 1500  # 3001 bytes in UTF-8
    publish_notification(fx, d, "utf", "discord", title, "body", message_id="utf-1")
    hook.wait_posts(1)
    [post] = hook.snapshot()
    try:
        content = json.loads(post.raw.decode("utf-8"))["content"]
    except ValueError as e:
        raise AssertionError(f"the webhook body is not UTF-8 JSON ({e}): ...{post.raw[1990:2030]!r}")
    assert 0 < len(content) <= 2000, f"content has {len(content)} characters"
    assert content.startswith("**x\u00e9\u00e9"), content[:20]


def test_reply_to_a_missing_queue_is_settled_by_the_retry_policy(fx):
    # The reply queue of a request is gone (its client died). The reply is unroutable
    # (mandatory publishing): eventd must treat that as an error of this message, with its
    # retry policy and x-error-* dead letter, not redeliver it forever every second.
    d = fx.start_daemon(domain_config(fx, None, {"retry": {"initialDelayMs": 200, "maxDelayMs": 400,
                                                           "maxAttempts": 3}}))
    for i in range(60):
        fx.amqp.publish("market.quotes", "", quote("RPL", 100 + i % 7), message_id=f"rpl-{i}")
    wait_until(lambda: redis("LLEN", history_key("RPL")) == 60, 20, what="60 quotes of RPL applied")
    rc, out, err = d.eventctl("publish", "analysis_request", '{"userId":"rpl","symbol":"RPL","analysisType":"chart"}',
                              "--reply-to", "no-such-reply-queue", "--message-id", "rpl-req")
    assert rc == 0, err

    def settled():
        if processed("RPL", "rpl-req"):
            return "acked"
        if fx.amqp.depth("eventd.analysis.dlq"):
            return "dead-lettered"
        return None
    try:
        outcome = wait_until(settled, 10, 0.1, what="the request settled (acked or dead-lettered)")
    except AssertionError:
        unconfirmed = len(d.logged("derived message not confirmed"))
        raise AssertionError(f"the request with a missing reply queue is still unsettled after 10 s (idempotency "
                             f"key {redis('GET', idem_key('RPL', 'rpl-req'))!r}, {unconfirmed} unconfirmed publishes "
                             f"logged): redelivered in a loop outside the retry policy")
    if outcome == "dead-lettered":
        [dead] = fx.amqp.get_all("eventd.analysis.dlq")
        assert dead.headers.get("x-error-code"), f"dead letter without x-error-code: {dead.headers}"
        assert "no-such-reply-queue" in dead.headers.get("x-error-message", ""), dead.headers
    assert len(d.logged("derived message not confirmed")) <= 3, "more publish attempts than maxAttempts"


def test_analysis_of_extreme_prices_never_emits_invalid_json(fx):
    # Prices near the largest double are valid quotes (price > 0); their sums overflow to
    # infinity, which JSON cannot express. eventd must not send malformed analysis_complete
    # messages (nor loop on them): a valid reply, or a dead letter that says why.
    d = fx.start_daemon(domain_config(fx))
    fx.amqp.channel().queue_declare("extreme-replies", durable=True)
    for i in range(60):
        fx.amqp.publish("market.quotes", "", quote("XTR", 1.5e308 if i % 2 else 1.7e308), message_id=f"xtr-{i}")
    wait_until(lambda: redis("LLEN", history_key("XTR")) == 60, 20, what="60 quotes of XTR applied")
    rc, out, err = d.eventctl("publish", "analysis_request", '{"userId":"xtr","symbol":"XTR","analysisType":"full"}',
                              "--reply-to", "extreme-replies", "--message-id", "xtr-req")
    assert rc == 0, err
    wait_until(lambda: processed("XTR", "xtr-req") or fx.amqp.depth("eventd.analysis.dlq")
               or fx.amqp.depth("extreme-replies"), 15, what="a reply or a dead letter")
    time.sleep(2.5)  # long enough for a redelivery loop (1 s) to show
    replies = fx.amqp.get_all("extreme-replies")
    for r in replies:
        try:
            json.loads(r.body)
        except ValueError:
            raise AssertionError(f"{len(replies)} reply(ies), malformed JSON: ...{r.body[-120:]!r}")
    assert len(replies) <= 1, f"{len(replies)} replies to one request"
    if fx.amqp.depth("eventd.analysis.dlq"):
        [dead] = fx.amqp.get_all("eventd.analysis.dlq")
        assert dead.headers.get("x-error-code"), dead.headers
    else:
        assert processed("XTR", "xtr-req") and len(replies) == 1, "the request neither answered nor dead-lettered"


def test_file_sink_line_has_one_message_id_even_if_the_producer_sent_one(fx):
    d = fx.start_daemon(domain_config(fx))
    payload = {"userId": "dupid", "channel": "email", "title": "t", "body": "b", "messageId": "producers-own"}
    rc, out, err = d.eventctl("publish", "notification", json.dumps(payload), "--message-id", "amqp-id-1")
    assert rc == 0, err
    wait_until(lambda: email_lines(fx), 15, what="the email spool line")
    with open(email_path(fx)) as f:
        pairs = json.loads(f.readline(), object_pairs_hook=lambda kv: kv)
    keys = [k for k, _ in pairs]
    assert keys.count("messageId") == 1, f"the spool line has messageId {keys.count('messageId')} times: {pairs}"
    assert dict(pairs)["messageId"] == "amqp-id-1", pairs
