"""Operability: /metrics, /healthz, /readyz, eventctl dlq and topology, JSON logs, the
systemd unit, and the README's promise to document every Redis key."""
import json
import os
import re
import shutil
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request

from harness import (BUILD_DIR, EVENTD, MONITORS_KEY, SOURCE_DIR, WORK_QUEUES, analysis_key, closed_port,
                     dev_services, history_key, idem_key, mgmt, notifications_key, now_ms, quote, quote_key, redis,
                     redis_up, stop_redis, wait_until)
from webhook_server import WebhookServer

DLQS = [q + ".dlq" for q in WORK_QUEUES]


# ---------------------------------------------------------------- helpers

def http_get(port, path, timeout=5):
    """(status, body) of GET http://127.0.0.1:port/path; (None, error) when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (OSError, urllib.error.URLError) as e:
        return None, str(e)


def http_daemon(fx, overrides=None):
    port = closed_port()
    cfg = dict(overrides or {})
    cfg["http"] = {"enabled": True, "listen": f"127.0.0.1:{port}"}
    d = fx.start_daemon(cfg)
    return d, port


_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{((?:{_LABEL})(?:,{_LABEL})*,?)?\}})? (\S+)(?: (-?\d+))?$")
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')


def parse_metrics(text):
    """Validates Prometheus text exposition (0.0.4) and returns {(name, ((label, value), ...)): float}."""
    assert text.endswith("\n"), "the exposition does not end with a newline"
    types = {}
    samples = {}
    for n, line in enumerate(text.split("\n")[:-1], 1):
        if line.startswith("#"):
            m = re.match(rf"^# (HELP|TYPE) ({_NAME})(?: (.*))?$", line)
            assert m, f"line {n}: malformed comment {line!r}"
            if m.group(1) == "TYPE":
                assert m.group(3) in ("counter", "gauge", "histogram", "summary", "untyped"), f"line {n}: {line!r}"
                assert m.group(2) not in types, f"line {n}: second TYPE for {m.group(2)}"
                types[m.group(2)] = m.group(3)
            continue
        assert line.strip(), f"line {n}: empty line in the exposition"
        m = _SAMPLE.match(line)
        assert m, f"line {n}: not `name{{labels}} value`: {line!r}"
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        try:
            v = float(value)
        except ValueError:
            raise AssertionError(f"line {n}: value {value!r} is not a number")
        family = re.sub(r"_(bucket|sum|count)$", "", name) if re.sub(r"_(bucket|sum|count)$", "", name) in types \
            else name
        assert family in types, f"line {n}: sample {name} has no # TYPE line before it"
        key = (name, tuple(sorted(_LABEL_RE.findall(labels))))
        assert key not in samples, f"line {n}: duplicate series {line!r}"
        samples[key] = v
    return samples


def metric(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


def scrape(port):
    status, body = http_get(port, "/metrics")
    assert status == 200, f"/metrics answered {status}: {body[:200]}"
    return parse_metrics(body)


def wait_metric(port, name, at_least, timeout=20, **labels):
    def reached():
        v = metric(scrape(port), name, **labels)
        return v is not None and v >= at_least
    wait_until(reached, timeout, 0.1, what=f"{name}{labels} >= {at_least}")
    return metric(scrape(port), name, **labels)


def peek(fx, queue):
    """Every ready message of queue, returned to it afterwards (basic.get, then nack with requeue)."""
    ch = fx.amqp.channel()
    out, last = [], None
    while True:
        method, props, body = ch.basic_get(queue, auto_ack=False)
        if method is None:
            break
        out.append((props, dict(props.headers or {}), body))
        last = method.delivery_tag
    if last is not None:
        ch.basic_nack(last, multiple=True, requeue=True)
    return out


def dlq_depths(stdout):
    depths = {}
    for line in stdout.splitlines()[1:]:
        parts = line.split()
        if len(parts) == 2:
            depths[parts[0]] = int(parts[1]) if parts[1].isdigit() else parts[1]
    return depths


# ---------------------------------------------------------------- /metrics

def test_metrics_follow_the_messages(fx):
    d, port = http_daemon(fx)
    first = scrape(port)  # valid before any message, too
    assert metric(first, "eventd_amqp_up") == 1 and metric(first, "eventd_redis_up") == 1, first
    assert metric(first, "eventd_consuming") == 1, "eventd_consuming is not 1 once ready"

    n = 25
    rc, out, err = d.eventctl("publish", "quote_update", '{"symbol":"MET","price":3,"change":0}', "--count", str(n))
    assert rc == 0, err
    q = {"queue": "eventd.quotes", "type": "quote_update"}
    wait_metric(port, "eventd_messages_acked_total", n, **q)
    s = scrape(port)
    assert metric(s, "eventd_messages_consumed_total", **q) == n, metric(s, "eventd_messages_consumed_total", **q)
    assert metric(s, "eventd_messages_acked_total", **q) == n
    assert redis("LLEN", history_key("MET")) == n

    # A message that fails schema validation is dead-lettered and counted.
    fx.amqp.publish("market.quotes", "", quote("MET", -1.0), message_id="met-bad")
    wait_metric(port, "eventd_messages_dead_lettered_total", 1, **q)
    # A duplicate is counted, not applied.
    fx.amqp.publish("market.quotes", "", quote("MET", 4.0), message_id="met-dup")
    wait_until(lambda: redis("GET", idem_key("MET", "met-dup")) == "1", 10, what="met-dup processed")
    fx.amqp.publish("market.quotes", "", quote("MET", 4.0), message_id="met-dup")
    wait_metric(port, "eventd_messages_duplicate_total", 1, **q)
    # A retryable failure is counted as a retry (history of METR is not a list for a moment).
    redis("SET", history_key("METR"), "x")
    fx.amqp.publish("market.quotes", "", quote("METR", 5.0), message_id="met-retry")
    wait_metric(port, "eventd_messages_retried_total", 1, **q)
    redis("DEL", history_key("METR"))
    wait_until(lambda: redis("LLEN", history_key("METR")) == 1, 15, what="the retried quote applied")

    s = scrape(port)
    assert metric(s, "eventd_messages_consumed_total", **q) >= n + 4, s
    assert metric(s, "eventd_messages_dead_lettered_total", **q) == 1
    assert metric(s, "eventd_messages_duplicate_total", **q) == 1
    assert redis("LLEN", history_key("MET")) == n + 1, "the duplicate was applied"
    count = metric(s, "eventd_handler_duration_seconds_count", type="quote_update")
    assert count is not None and count >= n, f"handler duration count {count}, expected >= {n}"
    buckets = sorted(((float(dict(labels)["le"]), v) for (name, labels), v in s.items()
                      if name == "eventd_handler_duration_seconds_bucket" and dict(labels).get("type") == "quote_update"))
    assert buckets and buckets[-1][0] == float("inf"), f"no +Inf bucket: {buckets}"
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:])), f"buckets not cumulative: {buckets}"
    assert buckets[-1][1] == count, f"+Inf bucket {buckets[-1][1]} != count {count}"
    assert metric(s, "eventd_handler_duration_seconds_sum", type="quote_update") > 0
    wait_until(lambda: metric(scrape(port), "eventd_in_flight_messages") == 0, 10, what="in-flight back to 0")
    assert metric(s, "eventd_reconnects_total", peer="amqp") is not None, "no eventd_reconnects_total{peer=amqp}"
    assert d.stop() == 0


def test_health_and_readiness_follow_redis(fx):
    d, port = http_daemon(fx)
    assert http_get(port, "/healthz")[0] == 200
    status, body = http_get(port, "/readyz")
    assert status == 200, f"/readyz answered {status} when ready: {body!r}"
    assert http_get(port, "/nope")[0] == 404

    stop_redis(fx)
    try:
        status, body = wait_until(lambda: (lambda r: r if r[0] == 503 else None)(http_get(port, "/readyz")), 15,
                                  what="/readyz to answer 503 with Redis down")
        assert "redis" in body.lower(), f"/readyz 503 body does not name redis: {body!r}"
        assert http_get(port, "/healthz")[0] == 200, "/healthz failed while only Redis was down"
        assert metric(scrape(port), "eventd_redis_up") == 0, "eventd_redis_up is not 0 with Redis down"
        assert d.running(), "eventd exited while Redis was down"
    finally:
        dev_services("start-redis")
    wait_until(lambda: http_get(port, "/readyz")[0] == 200, 30, 0.2, what="/readyz 200 again after Redis is back")
    assert metric(scrape(port), "eventd_redis_up") == 1
    fx.amqp.publish("market.quotes", "", quote("RDY", 1.0), message_id="rdy-1")
    wait_until(lambda: redis("LLEN", history_key("RDY")) == 1, 15, what="a quote applied after the outage")
    assert d.stop() == 0


test_health_and_readiness_follow_redis.timeout = 150


def test_metrics_show_deferrals_and_the_sink_circuit(fx):
    hook = WebhookServer(fx, status=503)
    d, port = http_daemon(fx, {
        "retry": {"initialDelayMs": 200, "maxDelayMs": 800, "maxAttempts": 10},
        "notify": {"channels": {"discord": {"sink": "webhook", "url": hook.url},
                                "email": {"sink": "file", "path": os.path.join(fx.tmp, "mail", "e.jsonl")}},
                   "circuitBreaker": {"failureThreshold": 2, "openTimeoutMs": 1500}}})
    s = scrape(port)
    assert metric(s, "eventd_sink_circuit_state", channel="discord", state="closed") == 1, s
    assert metric(s, "eventd_sink_circuit_state", channel="email", state="closed") == 1, s
    assert metric(s, "eventd_sink_circuit_state", channel="push", state="closed") is None, \
        "the redis sink has no breaker, yet a series is shown for it"
    bodies = {f"circuit-{i}" for i in range(4)}
    for b in sorted(bodies):
        rc, out, err = d.eventctl("publish", "notification",
                                  json.dumps({"userId": "mx", "channel": "discord", "title": "t", "body": b}))
        assert rc == 0, err
    q = {"queue": "eventd.notify.discord", "type": "notification"}
    wait_until(lambda: metric(scrape(port), "eventd_sink_circuit_state", channel="discord", state="open") == 1,
               15, 0.05, what="eventd_sink_circuit_state{channel=discord,state=open} 1")
    wait_metric(port, "eventd_messages_deferred_total", 1, **q)
    s = scrape(port)
    assert metric(s, "eventd_sink_circuit_state", channel="email", state="closed") == 1, "email's breaker moved"
    assert metric(s, "eventd_messages_retried_total", **q) >= 2, "the two failures that opened it were not retries"

    hook.status = 200
    def delivered():
        return {p.json["content"].split("\n", 1)[1] for p in hook.snapshot() if p.status == 200}
    wait_until(lambda: delivered() >= bodies, 30, 0.1, what="all four notifications delivered")
    wait_until(lambda: metric(scrape(port), "eventd_sink_circuit_state", channel="discord", state="closed") == 1,
               10, what="the discord circuit closed again")
    # Every delivery is acked once its copy sits in a retry queue, or once delivered.
    def settled(s):
        return (metric(s, "eventd_messages_acked_total", **q) - metric(s, "eventd_messages_retried_total", **q)
                - metric(s, "eventd_messages_deferred_total", **q))
    wait_until(lambda: settled(scrape(port)) >= 4, 10, what="four deliveries acked as delivered")
    wait_until(lambda: metric(scrape(port), "eventd_in_flight_messages") == 0, 10, what="in-flight back to 0")
    s = scrape(port)
    assert settled(s) == 4, f"{settled(s)} deliveries acked as delivered, expected 4: {s}"
    assert len([p for p in hook.snapshot() if p.status == 200]) == 4, "a notification was POSTed twice"
    assert metric(s, "eventd_messages_dead_lettered_total", **q) in (None, 0)
    assert d.stop() == 0


# ---------------------------------------------------------------- eventctl dlq

def test_dlq_list_show_replay_purge(fx):
    # maxAttempts 1: a failing quote goes straight to eventd.quotes.dlq with MAX_ATTEMPTS.
    d = fx.start_daemon({"retry": {"maxAttempts": 1}})
    redis("SET", history_key("DLQA"), "not a list")
    prices = {"r1": 11.0, "r2": 22.0, "r3": 33.0}
    bodies = {}
    for mid, price in prices.items():
        bodies[mid] = json.dumps(quote("DLQA", price)).encode()
        fx.amqp.publish("market.quotes", "DLQA", bodies[mid], message_id=mid, type="quote_update",
                        headers={"x-custom": "keep-me"})
    wait_until(lambda: fx.amqp.depth("eventd.quotes.dlq") == 3, 15, what="3 dead letters")

    rc, out, err = d.eventctl("dlq", "list")
    assert rc == 0, err
    depths = dlq_depths(out)
    assert set(depths) == set(DLQS), f"dlq list shows {sorted(depths)}"
    assert depths["eventd.quotes.dlq"] == 3, out
    assert all(v == 0 for k, v in depths.items() if k != "eventd.quotes.dlq"), out

    rc, out, err = d.eventctl("dlq", "show", "eventd.quotes.dlq", "--count", "2")
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 2, f"dlq show --count 2 printed {len(lines)} line(s): {out[:300]}"
    shown = [json.loads(line) for line in lines]
    for m in shown:
        assert m.get("messageId") in prices, m
        assert m["headers"].get("x-error-code") == "MAX_ATTEMPTS", m
        assert m["headers"].get("x-custom") == "keep-me", m
        assert m.get("body") == bodies[m["messageId"]].decode(), m
    wait_until(lambda: fx.amqp.depth("eventd.quotes.dlq") == 3, 5, what="the shown dead letters back in place")
    rc, out, err = d.eventctl("dlq", "show", "eventd.quotes")  # the work queue names its DLQ
    assert rc == 0 and len(out.splitlines()) == 3, (rc, out, err)
    # Looking must never cost a dead letter (a quorum DLQ counts returns as deliveries).
    for _ in range(21):
        assert d.eventctl("dlq", "show", "eventd.quotes.dlq", "--count", "1")[0] == 0
    wait_until(lambda: fx.amqp.depth("eventd.quotes.dlq") == 3, 5, what="3 dead letters after 23 shows")

    # Replay one by id, with eventd stopped, to see what is republished.
    assert d.stop() == 0
    redis("DEL", history_key("DLQA"))
    rc, out, err = d.eventctl("dlq", "replay", "eventd.quotes.dlq", "--id", "r2")
    assert rc == 0, err
    assert "r2" in out, out
    wait_until(lambda: fx.amqp.depth("eventd.quotes.dlq") == 2, 5, what="2 dead letters left")
    [(props, headers, body)] = peek(fx, "eventd.quotes")
    assert props.message_id == "r2" and body == bodies["r2"], (props.message_id, body)
    leftovers = [k for k in headers if k.startswith("x-error") or k in ("x-retry-count", "x-failed-at")
                 or k.startswith("x-original")]
    assert not leftovers, f"the replayed message still carries {leftovers}: {headers}"
    assert headers.get("x-custom") == "keep-me", f"replay dropped the producer's headers: {headers}"
    d.start().wait_ready()
    wait_until(lambda: redis("LRANGE", history_key("DLQA"), 0, -1) == ["22"], 15, what="r2 applied")

    rc, out, err = d.eventctl("dlq", "replay", "eventd.quotes.dlq", "--all")
    assert rc == 0, err
    wait_until(lambda: redis("LLEN", history_key("DLQA")) == 3, 15, what="all three applied")
    assert sorted(float(p) for p in redis("LRANGE", history_key("DLQA"), 0, -1)) == [11, 22, 33]
    assert fx.amqp.depth("eventd.quotes.dlq") == 0, "replay --all left dead letters"
    rc, out, err = d.eventctl("dlq", "replay", "eventd.quotes.dlq", "--id", "nope")
    assert rc == 1, f"replay of a missing id exited {rc}"

    # purge
    for i in range(2):
        fx.amqp.publish("market.quotes", "", b"{broken", message_id=f"broken-{i}")
    wait_until(lambda: fx.amqp.depth("eventd.quotes.dlq") == 2, 15, what="2 PARSE_ERROR dead letters")
    rc, out, err = d.eventctl("dlq", "purge", "eventd.quotes.dlq")
    assert rc == 0 and "2" in out, (rc, out, err)
    assert fx.amqp.depth("eventd.quotes.dlq") == 0

    # Unknown queues and bad usage: exit 2, one line.
    for args in (("show", "nosuch.dlq"), ("purge", "nosuch"), ("replay", "nosuch.dlq", "--all"),
                 ("replay", "eventd.quotes.dlq"), ("show",)):
        rc, out, err = d.eventctl("dlq", *args)
        assert rc == 2, f"dlq {args} exited {rc}"
        assert len(err.splitlines()) == 1, f"dlq {args}: stderr {err!r}"
    assert d.running() and d.stop() == 0
    assert redis("LLEN", history_key("DLQA")) == 3, "a replayed message was applied twice"


def test_dlq_show_prints_valid_json_for_binary_dead_letters(fx):
    # Dead letters are often not UTF-8 (that is why they are dead): `dlq show` must still
    # print one valid JSON document (UTF-8) per message.
    fx.start_daemon()
    fx.amqp.publish("market.quotes", "", b"\xff\xfe\x00garbage\xc3", message_id="bin-1")
    fx.amqp.publish("market.quotes", "", b'{"fine": "\xc3\xa9"', message_id="bin-2")
    wait_until(lambda: fx.amqp.depth("eventd.quotes.dlq") == 2, 15, what="2 dead letters")
    p = subprocess.run([os.path.join(BUILD_DIR, "src", "eventctl", "eventctl"), "dlq", "show", "eventd.quotes.dlq"],
                       env=fx.env, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.split(b"\n")
    assert lines[-1] == b"" and len(lines) == 3, f"expected 2 lines, got {p.stdout[:300]!r}"
    for raw in lines[:-1]:
        try:
            m = json.loads(raw.decode("utf-8"))
        except ValueError as e:
            raise AssertionError(f"dlq show printed a line that is not UTF-8 JSON ({e}): {raw[:200]!r}")
        assert m.get("messageId") in ("bin-1", "bin-2"), m
    assert fx.amqp.depth("eventd.quotes.dlq") == 2


# ---------------------------------------------------------------- eventctl topology

def test_topology_verify_names_a_missing_queue(fx):
    fx.topology_apply()
    rc, out, err = fx.eventctl("topology", "verify")
    assert rc == 0, f"verify after apply exited {rc}: {err}"
    mgmt("DELETE", f"queues/{fx.vq}/eventd.alerts.dlq")
    rc, out, err = fx.eventctl("topology", "verify")
    assert rc == 1, f"verify with eventd.alerts.dlq deleted exited {rc}"
    assert "eventd.alerts.dlq" in err, f"verify does not name the missing queue: {err!r}"
    mgmt("DELETE", f"exchanges/{fx.vq}/events")
    rc, out, err = fx.eventctl("topology", "verify")
    assert rc == 1 and "events" in err, (rc, err)
    fx.topology_apply()
    rc, out, err = fx.eventctl("topology", "verify")
    assert rc == 0, f"verify after a second apply exited {rc}: {err}"


def test_topology_verify_names_a_missing_binding(fx):
    fx.topology_apply()
    bindings = mgmt("GET", f"bindings/{fx.vq}/e/events/q/eventd.alerts")
    [b] = [b for b in bindings if b["routing_key"] == "alert.triggered.#"]
    mgmt("DELETE", f"bindings/{fx.vq}/e/events/q/eventd.alerts/{urllib.parse.quote(b['properties_key'], safe='')}")
    assert not [b for b in mgmt("GET", f"bindings/{fx.vq}/e/events/q/eventd.alerts")
                if b["routing_key"] == "alert.triggered.#"], "the binding is still there"
    rc, out, err = fx.eventctl("topology", "verify")
    assert rc != 0, "topology verify exited 0 although eventd.alerts is no longer bound to events"
    assert "eventd.alerts" in err and "alert.triggered.#" in err, f"verify does not name the binding: {err!r}"
    fx.topology_apply()
    rc, out, err = fx.eventctl("topology", "verify")
    assert rc == 0, err


# ---------------------------------------------------------------- logs

ISO_TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d)$")


def strict_log_lines(path):
    """Every stderr line, as bytes -> strict UTF-8 -> JSON object with ts, level, msg."""
    with open(path, "rb") as f:
        raw = f.read()
    assert raw.endswith(b"\n"), f"the log does not end with a newline: {raw[-200:]!r}"
    out = []
    for line in raw.split(b"\n")[:-1]:
        try:
            obj = json.loads(line.decode("utf-8"))
        except ValueError as e:  # UnicodeDecodeError is a ValueError
            raise AssertionError(f"stderr line is not UTF-8 JSON ({e}): {line[:300]!r}")
        assert isinstance(obj, dict), line
        assert isinstance(obj.get("ts"), str) and ISO_TS.match(obj["ts"]), f"bad ts: {line[:200]!r}"
        assert obj.get("level") in ("debug", "info", "warn", "error"), f"bad level: {line[:200]!r}"
        assert isinstance(obj.get("msg"), str) and obj["msg"], f"bad msg: {line[:200]!r}"
        out.append(obj)
    return out


def test_every_log_line_is_json(fx):
    hook = WebhookServer(fx, status=500)
    d = fx.start_daemon({"log": {"level": "debug"},
                         "retry": {"initialDelayMs": 200, "maxDelayMs": 400, "maxAttempts": 2},
                         "notify": {"channels": {"discord": {"sink": "webhook", "url": hook.url},
                                                 "email": {"sink": "file",
                                                           "path": os.path.join(fx.tmp, "mail", "e.jsonl")}}}})
    fx.amqp.publish("market.quotes", "", quote("LOG", 1.0), message_id="log-1")
    fx.amqp.publish("market.quotes", "", quote("LOG", 1.0), message_id="log-1")  # duplicate (debug line)
    fx.amqp.publish("market.quotes", "", b'{"type":"quote_update","symbol":"a \\"quoted\\"\\nline","price":-1}',
                    message_id='poison "1"\n')
    fx.amqp.publish("market.quotes", "", b"{not json", message_id="poison-2")
    rc, out, err = d.eventctl("publish", "notification",
                              '{"userId":"logu","channel":"discord","title":"t","body":"b"}', "--message-id", "log-n")
    assert rc == 0, err
    wait_until(lambda: fx.amqp.depth("eventd.quotes.dlq") == 2 and fx.amqp.depth("eventd.notify.discord.dlq") == 1,
               20, what="the poison messages and the failed notification dead-lettered")
    assert d.stop() == 0
    lines = strict_log_lines(d.log_path)
    levels = {l["level"] for l in lines}
    assert {"debug", "info", "warn"} <= levels, f"the run did not exercise the levels it should: {levels}"
    msgs = {l["msg"] for l in lines}
    for m in ("ready", "dead-lettering", "retrying", "stopped"):
        assert m in msgs, f"no {m!r} line in {sorted(msgs)}"
    assert any(l.get("message_id") == 'poison "1"\n' for l in lines), "a message id with quotes was mangled"

    # A daemon that cannot start (its HTTP port is taken) says so in JSON, too.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        d2 = fx.daemon({"http": {"enabled": True, "listen": f"127.0.0.1:{port}"}}, name="busyport")
        d2.start()
        try:
            rc = d2.proc.wait(30)
        except subprocess.TimeoutExpired:
            raise AssertionError("eventd kept running for 30 s although its HTTP port was taken")
    assert rc != 0, "eventd started although its HTTP port was taken"
    lines = strict_log_lines(d2.log_path)
    assert any(l["level"] == "error" and str(port) in json.dumps(l) for l in lines), lines


def test_invalid_utf8_is_rejected_and_logged_as_valid_json(fx):
    # JSON text is UTF-8 (RFC 8259). A body with invalid UTF-8 inside a string must be
    # dead-lettered (the symbol does not even match its schema pattern), and neither the
    # log line nor x-error-message may carry the raw bytes.
    d = fx.start_daemon()
    fx.amqp.publish("market.quotes", "", b'{"type":"quote_update","timestamp":%d,"symbol":"AB\xff\xfe","price":1,'
                    b'"change":0}' % now_ms(), message_id="utf8-1")
    fx.amqp.publish("market.quotes", "", b'{"type":"quote_update","timestamp":%d,"symbol":"\xc3","price":1,'
                    b'"change":0}' % now_ms(), message_id="utf8-2")
    fx.amqp.publish("market.quotes", "", quote("UTFOK", 1.0), message_id="utf8-ok")
    wait_until(lambda: redis("GET", idem_key("UTFOK", "utf8-ok")) == "1", 15, what="the valid quote processed")
    wait_until(lambda: fx.amqp.depth("eventd.quotes") == 0, 15, what="eventd.quotes drained")
    stored = redis("KEYS", "eventd:quote:*")
    assert stored == [quote_key("UTFOK")], f"a symbol with invalid UTF-8 was stored: {stored!r}"
    dead = wait_until(lambda: fx.amqp.depth("eventd.quotes.dlq") == 2 and fx.amqp.get_all("eventd.quotes.dlq"), 10,
                      what="both invalid messages dead-lettered")
    for m in dead:
        assert m.headers.get("x-error-code") in ("PARSE_ERROR", "VALIDATION_ERROR"), m.headers
        assert isinstance(m.headers.get("x-error-message"), str), \
            f"{m.props.message_id}: x-error-message is not valid UTF-8: {m.headers.get('x-error-message')!r}"
    assert d.stop() == 0
    strict_log_lines(d.log_path)


# ---------------------------------------------------------------- systemd unit

def unit_text():
    with open(os.path.join(BUILD_DIR, "eventd.service")) as f:
        return f.read()


def test_systemd_unit_verifies(fx):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return  # no systemd-analyze on this machine: nothing to check (counted as passed)
    text = unit_text()
    assert "ExecStart=/usr/local/bin/eventd" in text, "the built unit no longer names /usr/local/bin/eventd"
    text = text.replace("/usr/local/bin/eventd", EVENTD)
    text = text.replace("/etc/eventd/eventd.jsonc", os.path.join(SOURCE_DIR, "eventd.jsonc"))
    unit = os.path.join(fx.tmp, "eventd.service")
    with open(unit, "w") as f:
        f.write(text)
    p = subprocess.run([analyze, "verify", unit], capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, f"systemd-analyze verify exited {p.returncode}: {p.stderr.strip()[-800:]}"
    ours = [l for l in p.stderr.splitlines() if "eventd.service" in l]
    assert not ours, f"systemd-analyze complains about the unit: {ours}"
    # The unit's ExecStartPre really accepts the shipped config.
    p = subprocess.run([EVENTD, "--check-config", os.path.join(SOURCE_DIR, "eventd.jsonc")], capture_output=True,
                       text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr


def test_meson_install_puts_everything_in_place(fx):
    # What `meson install` gives an operator: binaries, unit, schemas, /etc/eventd config,
    # and a unit whose commands name the installed files.
    dest = os.path.join(fx.tmp, "dest")
    p = subprocess.run(["meson", "install", "-C", BUILD_DIR, "--no-rebuild", "--quiet", "--destdir", dest],
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, f"meson install exited {p.returncode}: {p.stderr[-800:]}"
    unit_path = os.path.join(dest, "usr/local/lib/systemd/system/eventd.service")
    expected = ["usr/local/bin/eventd", "usr/local/bin/eventctl", "etc/eventd/eventd.jsonc", unit_path,
                "usr/local/share/man/man8/eventd.8", "usr/local/share/man/man1/eventctl.1",
                "usr/local/share/bash-completion/completions/eventctl",
                "usr/local/share/eventd/prometheus/eventd-rules.yml"] + \
        [f"usr/local/share/eventd/schemas/{t}.schema.json"
         for t in ("config", "monitor", "quote_update", "alert_triggered", "analysis_request", "analysis_complete",
                   "notification")]
    missing = [f for f in expected if not os.path.isfile(os.path.join(dest, f))]
    assert not missing, f"meson install did not install {missing}"
    for binary in ("eventd", "eventctl"):
        assert os.access(os.path.join(dest, "usr/local/bin", binary), os.X_OK), f"{binary} is not executable"
    with open(unit_path) as f:
        unit = f.read()
    commands = re.findall(r"^ExecStart(?:Pre)?=(\S+)(.*)$", unit, re.M)
    assert len(commands) == 2, f"expected ExecStartPre and ExecStart in the unit: {commands}"
    for program, rest in commands:
        installed = os.path.join(dest, program.lstrip("/"))
        assert os.path.isfile(installed), f"the unit runs {program}, which meson did not install"
        config = rest.split()[-1]
        assert os.path.isfile(os.path.join(dest, config.lstrip("/"))), f"the unit reads {config}: not installed"
    # The installed binary accepts the installed config (the unit's ExecStartPre).
    p = subprocess.run([os.path.join(dest, "usr/local/bin/eventd"), "--check-config",
                        os.path.join(dest, "etc/eventd/eventd.jsonc")],
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr


def test_systemd_unit_lets_eventd_write_its_email_spool(fx):
    # The default config spools email notifications to a file under /var/lib/eventd; the
    # unit runs as a DynamicUser with ProtectSystem=strict, so that directory must be
    # granted (StateDirectory=), or every email notification fails.
    with open(os.path.join(SOURCE_DIR, "eventd.jsonc")) as f:
        config_text = f.read()
    m = re.search(r'"email"\s*:\s*\{[^}]*"path"\s*:\s*"([^"]+)"', config_text)
    assert m, "eventd.jsonc names no email spool path"
    spool_dir = os.path.dirname(m.group(1))
    settings = {}
    for line in unit_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            k, v = line.split("=", 1)
            settings.setdefault(k.strip(), []).append(v.strip())
    sandboxed = settings.get("ProtectSystem", [""])[-1] in ("strict", "full") or \
        settings.get("DynamicUser", ["no"])[-1] == "yes"
    if not sandboxed:
        return
    granted = []
    for v in settings.get("StateDirectory", []):
        granted += [os.path.join("/var/lib", d.split(":")[0]) for d in v.split()]
    if settings.get("DynamicUser", ["no"])[-1] != "yes":
        for v in settings.get("ReadWritePaths", []):
            granted += [p.lstrip("-+") for p in v.split()]
    assert any(spool_dir == g or spool_dir.startswith(g.rstrip("/") + "/") for g in granted), \
        f"the unit (ProtectSystem={settings.get('ProtectSystem')}, DynamicUser={settings.get('DynamicUser')}) " \
        f"gives eventd no writable {spool_dir} (StateDirectory={settings.get('StateDirectory')})"


# ---------------------------------------------------------------- README: Redis keys

def test_readme_documents_every_redis_key(fx):
    # DESIGN.md: "the README documents every key eventd writes". Run every handler,
    # then look at the key families in Redis.
    d = fx.start_daemon({"notify": {"channels": {
        "email": {"sink": "file", "path": os.path.join(fx.tmp, "email.jsonl")},
        "discord": {"sink": "file", "path": os.path.join(fx.tmp, "discord.jsonl")}}}})
    rc, out, err = d.eventctl("monitor", "start", "keys", json.dumps(
        {"rules": [{"alertId": 1, "symbol": "KEYS", "condition": "price_above", "threshold": 100}],
         "channels": ["push", "email"]}))
    assert rc == 0, err
    seen = set()

    def collect():
        seen.update(k for k in redis("KEYS", "eventd:*"))
    for i in range(55):
        fx.amqp.publish("market.quotes", "", quote("KEYS", 90 + i % 5), message_id=f"keys-{i}")
    fx.amqp.publish("market.quotes", "", b'{"type":"quote_update","timestamp":%d,"symbol":"KEYS","price":99,'
                    b'"change":0}' % now_ms())  # no message_id: hashed idempotency key
    wait_until(lambda: (collect() or True) and redis("LLEN", history_key("KEYS")) == 56, 20, what="56 quotes")
    fx.amqp.publish("market.quotes", "", quote("KEYS", 150), message_id="keys-cross")
    wait_until(lambda: (collect() or True) and redis("EXISTS", notifications_key("keys")), 20,
               what="the alert's push notification")
    rc, out, err = d.eventctl("publish", "analysis_request", '{"userId":"keys","symbol":"KEYS","analysisType":"full"}')
    assert rc == 0, err
    wait_until(lambda: (collect() or True) and redis("EXISTS", analysis_key("keys", "KEYS")), 20, what="the analysis")
    collect()
    families = {":".join(k.split(":")[:2]) for k in seen}
    assert {"eventd:monitor", "eventd:monitorsyms", "eventd:rules", "eventd:ruleidx", "eventd:ruleowners",
            "eventd:rulestate", "eventd:alerts", "eventd:notifications", "eventd:analysis"} <= families, families
    # Redis Cluster: every key but eventd:monitors carries a hash tag.
    untagged = sorted(k for k in seen if k != MONITORS_KEY and not re.search(r"\{[^}]+\}", k))
    assert not untagged, f"keys without a hash tag: {untagged}"
    with open(os.path.join(SOURCE_DIR, "README.md")) as f:
        readme = f.read()
    undocumented = sorted(f for f in families if not re.search(re.escape(f) + r"(?![A-Za-z0-9_-])", readme))
    assert not undocumented, f"Redis keys eventd writes that the README does not document: {undocumented}"
