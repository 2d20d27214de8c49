"""Fixtures and helpers for eventd's integration tests (see run.py).

Every test gets a Fixture: its own RabbitMQ vhost (created through the management
API, deleted afterwards) and an empty Redis (FLUSHALL: the private Redis is ours).
Helpers talk to the servers the way a user or operator would: eventd and eventctl
as processes, RabbitMQ through pika and the management API, Redis through RESP.
Tests of the scale-out setup use fx.cluster instead (cluster.py).
"""
import base64
import collections
import copy
import errno
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import pika
import pika.exceptions

ENV = os.environ
AMQP_PORT = int(ENV["EVENTD_DEV_AMQP_PORT"])
MGMT_PORT = int(ENV["EVENTD_DEV_MGMT_PORT"])
REDIS_PORT = int(ENV["EVENTD_DEV_REDIS_PORT"])
RABBIT_NODE = ENV["EVENTD_DEV_RABBIT_NODE"]
REDIS_URL = ENV.get("EVENTD_REDIS_URL", f"redis://127.0.0.1:{REDIS_PORT}/0")
BUILD_DIR = ENV["EVENTD_BUILD_DIR"]
SOURCE_DIR = ENV["EVENTD_SOURCE_DIR"]
EVENTD = os.path.join(BUILD_DIR, "src", "eventd", "eventd")
EVENTCTL = os.path.join(BUILD_DIR, "src", "eventctl", "eventctl")
DEV_SERVICES = os.path.join(SOURCE_DIR, "scripts", "dev-services")

# The daemon's default work queues (DESIGN.md, "Default topology").
WORK_QUEUES = {
    "eventd.quotes": ("market.quotes", ""),
    "eventd.analysis": ("events", "analysis.request.#"),
    "eventd.analysis-results": ("events", "analysis.complete.#"),
    "eventd.alerts": ("events", "alert.triggered.#"),
    "eventd.notify.discord": ("events", "notification.discord.#"),
    "eventd.notify.email": ("events", "notification.email.#"),
    "eventd.notify.push": ("events", "notification.push.#"),
}

# Merged under every test's overrides: no HTTP listener (port 9464 may be taken on
# this machine), fast retries, a drain deadline shorter than the harness's patience.
DEFAULT_CONFIG = {
    "http": {"enabled": False},
    "retry": {"initialDelayMs": 200, "maxDelayMs": 1600, "maxAttempts": 5},
    "shutdown": {"drainTimeoutMs": 5000},
}


class TestTimeout(BaseException):
    """Raised by the runner's alarm; a BaseException so `except Exception` never eats it."""


class RedisError(Exception):
    pass


# ---------------------------------------------------------------- generic helpers

def wait_until(condition, timeout=10.0, interval=0.05, what="condition"):
    """Polls condition() until it returns something truthy; returns that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def holds_for(condition, seconds, interval=0.05):
    """True if condition() stays truthy for `seconds` (checked every `interval`)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not condition():
            return False
        time.sleep(interval)
    return bool(condition())


def deep_merge(base, overrides):
    out = copy.deepcopy(base)
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def now_ms():
    return int(time.time() * 1000)


def quote(symbol, price, change=0.0, timestamp=None, **extra):
    """A quote_update body (camelCase, as on the wire)."""
    body = {"type": "quote_update", "timestamp": now_ms() if timestamp is None else timestamp,
            "symbol": symbol, "price": price, "change": change}
    body.update(extra)
    return body


def closed_port():
    """A loopback TCP port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_publisher(p, timeout=60):
    """Waits for a background eventctl publish; it must have exited 0."""
    rc = p.wait(timeout)
    p.output.seek(0)
    assert rc == 0, f"eventctl publish exited {rc}: {p.output.read().strip()[-500:]}"


def finish_and_count(fx, d, symbol, n, timeout=60, start=True):
    """(Re)starts d, waits for every message, stops it: the history of symbol must hold
    exactly n prices (nothing lost, nothing applied twice) and nothing be left over."""
    if start:
        d.start().wait_ready()
    done = lambda: history_len(symbol) >= n and fx.amqp.depth("eventd.quotes") == 0  # noqa: E731
    wait_until(done, timeout, 0.2, what=f"{n} quotes of {symbol} applied")
    # Redelivered duplicates may still be in flight for a moment: let them settle, so
    # the stop below finds nothing in flight.
    wait_until(lambda: holds_for(done, 0.5), 10, 0, what="the queue to stay drained")
    assert d.stop() == 0, "eventd did not exit 0"
    assert history_len(symbol) == n, f"history holds {history_len(symbol)} prices, expected exactly {n}"
    assert fx.amqp.depth("eventd.quotes") == 0, "messages left in eventd.quotes after the stop"
    assert fx.amqp.depth("eventd.quotes.dlq") == 0, "messages were dead-lettered"


def while_binary_is_relinked(start, patience=60):
    """start(), retried while the binary cannot be executed because a build in this
    shared tree is replacing it (EACCES, ENOENT, ETXTBSY for a moment)."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return start()
        except (PermissionError, FileNotFoundError, OSError) as e:
            if isinstance(e, OSError) and e.errno not in (errno.EACCES, errno.ENOENT, errno.ETXTBSY):
                raise
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


def run(cmd, timeout=60, env=None, check=True):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                       stdin=subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.strip()[-500:]}")
    return p


# ---------------------------------------------------------------- Redis (RESP)

def resp_command(args):
    """args as one RESP request (arguments: bytes, or anything str() makes text of)."""
    parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


def redis(*args):
    """One Redis command on a fresh connection; bulk strings come back as str."""
    with socket.create_connection(("127.0.0.1", REDIS_PORT), timeout=10) as s:
        s.sendall(resp_command(args))
        return _read_reply(s.makefile("rb"))


def _read_reply(f):
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("Redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:-2].decode("utf-8", "surrogateescape")
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_read_reply(f) for _ in range(n)]
    raise RedisError(f"unexpected RESP reply {line!r}")


def redis_up():
    try:
        return redis("PING") == "PONG"
    except (OSError, RedisError):
        return False


def history(symbol):
    return [float(p) for p in redis("LRANGE", history_key(symbol), 0, -1)]


def history_len(symbol):
    return redis("LLEN", history_key(symbol))


# The stored quote (include/eventd/stored_quote.hpp): "<timestamp> <price> <change>",
# then " rules" while the symbol has rules; "rules" alone with rules and no quote yet.
QUOTE_MARK = "rules"


def stored_quote(price, change, timestamp, rules=False):
    """The value quote_update stores for this quote."""
    return f"{timestamp} {price} {change}" + (f" {QUOTE_MARK}" if rules else "")


def parse_stored_quote(value):
    """{"timestamp", "price", "change"} (strings; none without a quote), and "rules": True while marked."""
    if value is None:
        return {}
    words = value.split(" ")
    out = dict(zip(("timestamp", "price", "change"), words[:3])) if len(words) >= 3 else {}
    if words[-1] == QUOTE_MARK:
        out["rules"] = True
    return out


def latest_quote(symbol, r=None):
    return parse_stored_quote((r or redis)("GET", quote_key(symbol)))


# ---------------------------------------------------------------- Redis keys (include/eventd/keys.hpp)
# The README's key table, for the tests: a message's keys carry its hash tag, the symbol
# for quote_update and analysis_request, the userId for the other types.

def tag(value):
    """The hash tag of a symbol or user id, braces included (keys::Tag)."""
    text = value.replace("%", "%25").replace("{", "%7B").replace("}", "%7D") if value else "%"
    return "{" + text + "}"


def idem_key(tag_of, message_id):
    """The idempotency key of a message with that id, whose tag is the symbol or user `tag_of`."""
    return f"eventd:idem:{tag(tag_of)}:{message_id}"


def outbox_key(tag_of, message_id):
    return f"eventd:outbox:{tag(tag_of)}:{message_id}"


def lease_key(user, message_id):
    return f"eventd:lease:{tag(user)}:{message_id}"


def quote_key(symbol):
    return f"eventd:quote:{tag(symbol)}"


def history_key(symbol):
    return f"eventd:history:{tag(symbol)}"


def rules_key(symbol):
    return f"eventd:rules:{tag(symbol)}"


CONDITIONS = ("price_above", "price_below", "change_pct_above", "change_pct_below")


def rule_index_key(symbol, condition):
    return f"eventd:ruleidx:{tag(symbol)}:{condition}"


def rule_state_key(symbol):
    return f"eventd:rulestate:{tag(symbol)}"


def rule_owners_key(symbol):
    return f"eventd:ruleowners:{tag(symbol)}"


def monitor_key(user):
    return f"eventd:monitor:{tag(user)}"


def monitor_symbols_key(user):
    return f"eventd:monitorsyms:{tag(user)}"


def alerts_key(user):
    return f"eventd:alerts:{tag(user)}"


def analysis_key(user, symbol):
    return f"eventd:analysis:{tag(user)}:{symbol}"


def notifications_key(user):
    return f"eventd:notifications:{tag(user)}"


def rate_limit_key(user, channel):
    return f"eventd:ratelimit:{tag(user)}:{channel}"


MONITORS_KEY = "eventd:monitors"


def portfolio_state_key(user):
    return f"eventd:portfoliostate:{tag(user)}"


def portfolio_outbox_key(user):
    return f"eventd:portfoliooutbox:{tag(user)}"


SCHEDULE_SHARDS = 16


def schedule_key(shard):
    return f"eventd:schedule:{{s{shard}}}"


def schedule_claims_key(shard):
    return f"eventd:schedclaims:{{s{shard}}}"


def schedule_entry(user, call=None):
    """(shard, score, claimed due or None) of the user in the check schedule, or None. The
    shard is a hash of the user id (keys.cpp): found here by looking in each."""
    call = call or redis
    for shard in range(SCHEDULE_SHARDS):
        score = call("ZSCORE", schedule_key(shard), user)
        if score is not None:
            claimed = call("HGET", schedule_claims_key(shard), user)
            return shard, float(score), None if claimed is None else int(claimed)
    return None


# ---------------------------------------------------------------- RabbitMQ management API

def mgmt(method, path, body=None, timeout=10, port=MGMT_PORT):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode())
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    if body is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        raw = r.read()
    return json.loads(raw) if raw else None


def mgmt_up():
    try:
        mgmt("GET", "overview", timeout=3)
        return True
    except (OSError, urllib.error.URLError, ValueError):
        return False


def rabbitmqctl(*args, timeout=120):
    return run(["rabbitmqctl", "-n", RABBIT_NODE, *args], timeout=timeout)


def stop_redis(fx):
    """Stops the private Redis for the rest of this test; teardown starts it again."""
    def start_again():
        if not redis_up():
            dev_services("start-redis")
    fx.on_teardown(start_again)
    dev_services("stop-redis")


def dev_services(*args, timeout=120):
    return run([DEV_SERVICES, *args], timeout=timeout, env=dict(ENV))


# ---------------------------------------------------------------- AMQP (pika)

Message = collections.namedtuple("Message", "body props headers exchange routing_key")


class Amqp:
    """A pika connection to one vhost; reconnects when the broker dropped it."""

    def __init__(self, url):
        self.url = url + ("&" if "?" in url else "?") + "heartbeat=0&connection_attempts=3&retry_delay=1"
        self.conn = None
        self.ch = None

    def channel(self):
        if self.conn is None or not self.conn.is_open:
            self.conn = pika.BlockingConnection(pika.URLParameters(self.url))
            self.ch = None
        if self.ch is None or not self.ch.is_open:
            self.ch = self.conn.channel()
            self.ch.confirm_delivery()
        return self.ch

    def close(self):
        try:
            if self.conn is not None and self.conn.is_open:
                self.conn.close()
        except Exception:
            pass
        self.conn = self.ch = None

    def publish(self, exchange, routing_key, body, headers=None, **props):
        """Publishes with publisher confirms and mandatory; body: bytes, str or a dict (JSON)."""
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        props.setdefault("delivery_mode", 2)
        props.setdefault("content_type", "application/json")
        properties = pika.BasicProperties(headers=headers, **props)
        self.channel().basic_publish(exchange, routing_key, body, properties, mandatory=True)

    def depth(self, queue):
        """Ready messages in queue (passive declare); None if it does not exist."""
        for attempt in (1, 2):
            try:
                return self.channel().queue_declare(queue, passive=True).method.message_count
            except pika.exceptions.ChannelClosedByBroker as e:
                if e.reply_code == 404:
                    return None
                raise
            except (pika.exceptions.AMQPConnectionError, pika.exceptions.ConnectionWrongStateError,
                    pika.exceptions.ChannelWrongStateError):
                self.close()  # the broker restarted under us: reconnect once
                if attempt == 2:
                    raise

    def declare_exchange(self, name, kind):
        self.channel().exchange_declare(name, kind, durable=True)

    def get_all(self, queue):
        """Every ready message of queue (basic.get + ack), in queue order."""
        out = []
        ch = self.channel()
        while True:
            method, props, body = ch.basic_get(queue, auto_ack=False)
            if method is None:
                return out
            out.append(Message(body, props, dict(props.headers or {}), method.exchange, method.routing_key))
            ch.basic_ack(method.delivery_tag)


# ---------------------------------------------------------------- eventd

class Daemon:
    """One eventd configuration; start() may be called again after stop()/kill9()."""

    def __init__(self, fx, overrides=None, name="eventd"):
        self.fx = fx
        self.name = name
        self.config = deep_merge(DEFAULT_CONFIG, overrides)
        self.config_path = os.path.join(fx.tmp, f"{name}.jsonc")
        with open(self.config_path, "w") as f:
            f.write(f"// {name} for integration test {fx.name}\n" + json.dumps(self.config, indent=2) + "\n")
        self.proc = None
        self.runs = 0
        self.log_path = None

    def start(self):
        assert not self.running(), f"{self.name} is already running"
        self.runs += 1
        self.log_path = os.path.join(self.fx.tmp, f"{self.name}-{self.runs}.stderr")
        self.fx.logs.append(self.log_path)
        with open(self.log_path, "wb") as err:
            self.proc = while_binary_is_relinked(lambda: subprocess.Popen(
                [EVENTD, "--config", self.config_path], env=self.fx.env,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err))
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log_lines(self, complete_only=False):
        """Every stderr line of the current run, parsed; a line that is not JSON fails."""
        with open(self.log_path, "rb") as f:
            raw = f.read().decode("utf-8", "replace")
        lines = raw.split("\n")
        tail = lines.pop()  # text after the last newline: "" or a line still being written
        if tail and not complete_only:
            lines.append(tail)
        out = []
        for line in lines:
            try:
                obj = json.loads(line)
            except ValueError:
                raise AssertionError(f"{self.name} wrote a stderr line that is not JSON: {line[:300]!r}")
            if not isinstance(obj, dict) or "msg" not in obj or "level" not in obj or "ts" not in obj:
                raise AssertionError(f"{self.name} log line lacks ts/level/msg: {line[:300]!r}")
            out.append(obj)
        return out

    def logged(self, msg, **fields):
        return [l for l in self.log_lines(complete_only=True)
                if l["msg"] == msg and all(l.get(k) == v for k, v in fields.items())]

    def wait_log(self, msg, count=1, timeout=30, **fields):
        def seen():
            found = self.logged(msg, **fields)
            if len(found) >= count:
                return found
            if not self.running():
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}) before logging {msg!r}")
            return None
        return wait_until(seen, timeout, what=f"{count} log line(s) {msg!r} {fields or ''}")

    def wait_ready(self, timeout=30):
        self.wait_log("ready", timeout=timeout)
        return self

    def stop(self, timeout=20):
        """SIGTERM; returns the exit code. A daemon that does not exit is killed and fails the test."""
        assert self.proc is not None, "not started"
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"{self.name} did not exit within {timeout} s of SIGTERM; killed")

    def kill9(self):
        self.proc.kill()
        return self.proc.wait(10)

    def eventctl(self, *args, **kw):
        """eventctl with this daemon's config file."""
        return self.fx.eventctl("--config", self.config_path, *args, **kw)


# ---------------------------------------------------------------- per-test fixture

class Fixture:
    def __init__(self, name):
        self.name = name
        self.tmp = tempfile.mkdtemp(prefix=f"eventd-it-{name}-")
        self.logs = []  # stderr files of every daemon run, for failure reports
        self.daemons = []
        self.cleanups = []
        self.background = []
        self.vhost = f"it-{name}-{secrets.token_hex(3)}"
        self.vq = urllib.parse.quote(self.vhost, safe="")
        self.amqp_url = f"amqp://guest:guest@127.0.0.1:{AMQP_PORT}/{self.vq}"
        if not redis_up():
            raise AssertionError("the private Redis is not answering (a previous test left it down?)")
        redis("FLUSHALL")
        mgmt("PUT", f"vhosts/{self.vq}", {})
        mgmt("PUT", f"permissions/{self.vq}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
        # eventctl without --config reads EVENTD_CONFIG: point it at the test defaults,
        # never at a config installed on this machine.
        self.config_path = os.path.join(self.tmp, "eventctl.jsonc")
        with open(self.config_path, "w") as f:
            json.dump(DEFAULT_CONFIG, f)
        self.env = dict(ENV, EVENTD_AMQP_URL=self.amqp_url, EVENTD_REDIS_URL=REDIS_URL,
                        EVENTD_MANAGEMENT_URL=f"http://127.0.0.1:{MGMT_PORT}", EVENTD_CONFIG=self.config_path)
        self.amqp = Amqp(self.amqp_url)
        self._cluster = None

    @property
    def cluster(self):
        """The test clusters (cluster.Cluster), set up for this test on first use."""
        if self._cluster is None:
            import cluster  # noqa: E402 - only tests that use the clusters need them
            self._cluster = cluster.Cluster(self)
        return self._cluster

    def daemon(self, overrides=None, name=None):
        d = Daemon(self, overrides, name or f"eventd{len(self.daemons) + 1}")
        self.daemons.append(d)
        return d

    def start_daemon(self, overrides=None):
        return self.daemon(overrides).start().wait_ready()

    def eventctl(self, *args, input=None, env=None, timeout=60):
        p = while_binary_is_relinked(lambda: subprocess.run(
            [EVENTCTL, *args], input=input, capture_output=True, text=True, timeout=timeout,
            env=self.env if env is None else env, stdin=subprocess.DEVNULL if input is None else None))
        return p.returncode, p.stdout, p.stderr

    def eventctl_background(self, *args):
        """eventctl running on its own (e.g. a rate-limited publish); wait with .wait()."""
        out = open(os.path.join(self.tmp, f"eventctl-bg-{len(self.background)}.out"), "w+")
        p = while_binary_is_relinked(lambda: subprocess.Popen(
            [EVENTCTL, *args], env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, text=True))
        p.output = out
        self.background.append(p)
        return p

    def close_eventd_connection(self):
        """Closes eventd's AMQP connection the way an operator would (management API)."""
        def eventd_connections():
            return [c["name"] for c in mgmt("GET", f"vhosts/{self.vq}/connections")
                    if c.get("client_properties", {}).get("connection_name") == "eventd"]
        [name] = wait_until(eventd_connections, 30, 0.5, what="eventd's connection in the management API")
        mgmt("DELETE", f"connections/{urllib.parse.quote(name, safe='')}")

    def topology_apply(self, config=None):
        args = (["--config", config] if config else []) + ["topology", "apply"]
        rc, out, err = self.eventctl(*args)
        assert rc == 0, f"eventctl topology apply exited {rc}: {err.strip()}"

    def queues(self):
        return {q["name"]: q for q in mgmt("GET", f"queues/{self.vq}")}

    def consumers_per_queue(self):
        """Consumers listed by /api/consumers, counted per queue."""
        return collections.Counter(c["queue"]["name"] for c in mgmt("GET", f"consumers/{self.vq}"))

    def queue_consumers(self):
        """The consumer count each queue reports (/api/queues; stats lag about a second)."""
        return {name: q.get("consumers") or 0 for name, q in self.queues().items()}

    def publish_stream(self, daemon, symbol, count, rate=None, price=1):
        """eventctl publishing `count` quotes of `symbol` (distinct ids) in the background,
        at `rate` messages/s if given. Check it with wait_publisher()."""
        args = ["--config", daemon.config_path, "publish", "quote_update",
                json.dumps({"symbol": symbol, "price": price, "change": 0}), "--count", str(count)]
        return self.eventctl_background(*args, *(["--rate", str(rate)] if rate else []))

    def on_teardown(self, fn):
        self.cleanups.append(fn)

    def close(self):
        errors = []
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception as e:  # keep cleaning up
                errors.append(f"cleanup {getattr(fn, '__name__', fn)}: {e}")
        for p in self.background:
            if p.poll() is None:
                p.kill()
                p.wait(10)
            p.output.close()
        for d in self.daemons:
            if d.running():
                d.proc.send_signal(signal.SIGTERM)
                try:
                    d.proc.wait(15)
                except subprocess.TimeoutExpired:
                    d.proc.kill()
                    d.proc.wait(10)
        self.amqp.close()
        try:
            mgmt("DELETE", f"vhosts/{self.vq}")
        except Exception as e:
            errors.append(f"deleting vhost {self.vhost}: {e}")
        if not ENV.get("EVENTD_IT_KEEP"):
            shutil.rmtree(self.tmp, ignore_errors=True)
        return errors

    def log_tails(self, n=8):
        out = []
        for path in self.logs:
            try:
                with open(path, "rb") as f:
                    lines = f.read().decode("utf-8", "replace").splitlines()
            except OSError:
                continue
            out.append((os.path.basename(path), lines[-n:]))
        return out
