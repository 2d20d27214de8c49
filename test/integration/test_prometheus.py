"""Prometheus: the alert rules pass promtool (check and unit tests), /metrics passes
`promtool check metrics`, and a real Prometheus scraping a real eventd fires the Redis
alert when Redis stops and resolves it when Redis is back."""
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request

from harness import SOURCE_DIR, closed_port, dev_services, quote, redis_up, run, stop_redis, wait_until
from test_operations import http_daemon, http_get, wait_metric

RULES = os.path.join(SOURCE_DIR, "scripts", "prometheus", "eventd-rules.yml")
RULE_TESTS = os.path.join(SOURCE_DIR, "scripts", "prometheus", "eventd-rules.test.yml")
PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
ALERTS = ["EventdDown", "EventdAmqpDown", "EventdRedisDown", "EventdNotConsuming", "EventdDeadLetters",
          "EventdSinkCircuitOpen", "EventdHandlerSlow", "EventdRetriesClimbing"]


def test_promtool_checks_and_unit_tests_the_rules(fx):
    p = run([PROMTOOL, "check", "rules", RULES], timeout=60)
    assert f"SUCCESS: {len(ALERTS)} rules found" in p.stdout, p.stdout
    p = run([PROMTOOL, "test", "rules", RULE_TESTS], timeout=60)
    assert "SUCCESS" in p.stdout, p.stdout
    # Each rule has a unit test (one test group named after it), with a case where it
    # fires and one where it does not.
    with open(RULES) as f:
        rules = re.findall(r"^\s+- alert: (\w+)$", f.read(), re.M)
    assert sorted(rules) == sorted(ALERTS), rules
    with open(RULE_TESTS) as f:
        tests = f.read()
    for alert in ALERTS:
        assert re.search(rf"^  - name: {alert} ", tests, re.M), f"no unit test for {alert}"
        cases = re.findall(rf"alertname: {alert}\n\s+exp_alerts:(.*)", tests)
        assert "" in cases and " []" in cases, f"{alert}: unit tests lack a firing or a silent case: {cases}"


def promtool_check_metrics(port):
    status, body = http_get(port, "/metrics")
    assert status == 200, f"/metrics answered {status}"
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and p.stdout == "" and p.stderr == "", \
        f"promtool check metrics: rc {p.returncode}: {(p.stdout + p.stderr).strip()[:800]}"
    return body


def test_metrics_pass_promtool_check_metrics(fx):
    d, port = http_daemon(fx, {"notify": {"channels": {
        "discord": {"sink": "webhook", "url": f"http://127.0.0.1:{closed_port()}/hook"}}}})
    promtool_check_metrics(port)  # before any message: families without series
    fx.amqp.publish("market.quotes", "", quote("PROM", 10.0), message_id="prom-1")
    fx.amqp.publish("market.quotes", "", "{broken", message_id="prom-2")
    wait_metric(port, "eventd_messages_dead_lettered_total", 1, queue="eventd.quotes", type="unknown")
    body = promtool_check_metrics(port)
    for family in ("eventd_messages_consumed_total", "eventd_handler_duration_seconds_bucket",
                   "eventd_sink_circuit_state", "eventd_reconnects_total"):
        assert family + "{" in body, f"/metrics lacks {family} series"
    assert d.stop() == 0


# ---------------------------------------------------------------- a real Prometheus

class Prometheus:
    """/usr/bin/prometheus on 127.0.0.1, its own config and storage in fx.tmp; stopped by PID."""

    def __init__(self, fx, target_port, rules):
        self.port = closed_port()
        base = os.path.join(fx.tmp, "prometheus")
        os.makedirs(os.path.join(base, "data"))
        rules_path = os.path.join(base, "rules.yml")
        with open(rules_path, "w") as f:
            f.write(rules)
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [rules_path],
            "scrape_configs": [{"job_name": "eventd", "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}],
        }
        config_path = os.path.join(base, "prometheus.yml")
        with open(config_path, "w") as f:
            json.dump(config, f)  # JSON is YAML
        self.log = os.path.join(base, "prometheus.stderr")
        fx.logs.append(self.log)
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(
                [PROMETHEUS, f"--config.file={config_path}", f"--storage.tsdb.path={os.path.join(base, 'data')}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        fx.on_teardown(self.stop)
        wait_until(lambda: self.ready(), 60, 0.2, what="Prometheus /-/ready")

    def ready(self):
        assert self.proc.poll() is None, f"prometheus exited {self.proc.returncode}"
        return http_get(self.port, "/-/ready", timeout=2)[0] == 200

    def api(self, path, **params):
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as r:
            reply = json.loads(r.read())
        assert reply["status"] == "success", reply
        return reply["data"]

    def value(self, query):
        result = self.api("query", query=query)["result"]
        return float(result[0]["value"][1]) if result else None

    def alert_state(self, name):
        states = [a["state"] for a in self.api("alerts")["alerts"] if a["labels"].get("alertname") == name]
        return states[0] if states else None

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)  # only the Prometheus this test started
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def short_rules(seconds):
    """The shipped rules with every `for:` cut to `seconds`, for a test that cannot wait minutes."""
    with open(RULES) as f:
        text = f.read()
    out, n = re.subn(r"^(\s+for:) \S+$", rf"\1 {seconds}s", text, flags=re.M)
    assert n >= 6, f"expected a for: in most rules, replaced {n}"
    return out


def test_prometheus_fires_and_resolves_the_redis_alert(fx):
    started = time.monotonic()
    d, port = http_daemon(fx)
    prom = Prometheus(fx, port, short_rules(3))
    # Every rule evaluates without error against what eventd exports.
    wait_until(lambda: prom.value('up{job="eventd"}') == 1, 20, 0.2, what="Prometheus scraping eventd")
    wait_until(lambda: prom.value("eventd_redis_up") == 1, 20, 0.2, what="eventd_redis_up == 1 in Prometheus")

    def rule_health():
        groups = prom.api("rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        if len(rules) == len(ALERTS) and all(not r.get("lastEvaluation", "0001").startswith("0001") for r in rules):
            return rules
        return None
    rules = wait_until(rule_health, 20, 0.2, what="every rule evaluated once")
    bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not bad, f"rules failing in Prometheus: {bad}"
    assert prom.alert_state("EventdRedisDown") is None, "EventdRedisDown active with Redis up"

    stop_redis(fx)
    try:
        seen = set()

        def firing():
            state = prom.alert_state("EventdRedisDown")
            seen.add(state)
            return state == "firing"
        wait_until(firing, 30, 0.2, what="EventdRedisDown firing in Prometheus")
        assert "pending" in seen, f"EventdRedisDown fired without being pending first (for: 3s): {seen}"
        [alert] = [a for a in prom.api("alerts")["alerts"] if a["labels"]["alertname"] == "EventdRedisDown"]
        assert alert["labels"]["instance"] == f"127.0.0.1:{port}" and alert["labels"]["severity"] == "critical", alert
        assert d.running(), "eventd exited while Redis was down"
    finally:
        dev_services("start-redis")
    wait_until(lambda: prom.alert_state("EventdRedisDown") is None, 45, 0.2,
               what="EventdRedisDown resolved after Redis is back")
    assert prom.value("eventd_redis_up") == 1
    prom.stop()
    assert d.stop() == 0
    assert time.monotonic() - started < 90, f"the Prometheus test took {time.monotonic() - started:.0f} s"


test_prometheus_fires_and_resolves_the_redis_alert.timeout = 150
