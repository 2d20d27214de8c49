"""scripts/bench's driver: runs every measurement against the private RabbitMQ and
Redis that scripts/bench started (and its Redis Cluster, and a baseline build, when
given), prints one table row per measurement, each with its target, as Markdown for
the README. It prints figures and ratios and never asserts a threshold.

Run through scripts/bench (which builds, starts and stops the servers). Needs the
variables of $EVENTD_DEV_DIR/env and Debian's python3 (pika).

How each figure is measured (also in scripts/bench --help):
  ceiling      bench-ceiling (bench/ceiling.cpp): a bare rabbitmq-c consumer drains
               N pre-filled persistent messages, prefetch 500, acking each, and again
               with one multiple-ack per 250 (the broker's real limit); clock from its
               first delivery to its last ack.
  drain        the same N quote_update messages pre-filled (eventctl publish, one
               process per symbol, distinct message ids) while eventd is stopped; then
               eventd is started and the bench polls DBSIZE every 5 ms on one
               persistent connection per Redis master (eventd itself is not touched).
               Every message adds a key (its idempotency key), so the clock runs from
               the first poll that sees progress (minus half a poll interval) to the
               first poll that sees the final key count. Completion: the count has not
               moved for 1 s and the queue has no ready messages; afterwards eventd is
               stopped (SIGTERM), the queue must be empty and SCAN must find exactly N
               keys eventd:idem:* (the pattern matches the tagged keys,
               eventd:idem:{SYM}:<id>, and the untagged ones of older revisions).
  spread       the same drain over 200 symbols (SYM000..SYM199), pre-filled by
               bench-fill (bench/fill.cpp: one publisher, round-robin, confirms): a call
               then holds about one quote of each symbol, so the Redis function cannot
               store a symbol's quotes together (once per queue type, not repeated).
  redis        per master, INFO cpu / stats / commandstats at the start and the end of
               the drain, the bench's own commands subtracted by name: Redis CPU per
               quote = the used_cpu_sys + used_cpu_user delta (the whole process: I/O,
               parsing, calls, AOF) less the cost of the bench's DBSIZE polls
               (calibrated before the drains with eventd stopped), over the messages;
               commands per quote = total_commands_processed delta (it counts the
               commands run inside a function or script too); commandstats gives the
               usec of the script calls (FCALL or EVALSHA, inner commands included) and
               of each inner command. A separate small drain under MONITOR counts
               eventd's own requests (round trips) apart from the commands its
               functions run.
  rss / cpu    VmHWM from /proc/PID/status and utime+stime from /proc/PID/stat of
               the eventd process, read right before it is stopped.
  latency      bench-latency (bench/latency.cpp): fixed-rate publisher + Redis
               keyspace notification (SET of eventd:idem:{<SYMBOL>}:<message_id>) subscriber in
               one process, one monotonic clock. The reference: the same runs with
               bench-ceiling in eventd's place, SETting each message's key (pipelined)
               before acking it: the broker's and one Redis write's share.
  baseline     --baseline-build-dir: the eventd and eventctl of another revision, in a
               vhost of their own (their topology), drained next to this build's drain
               on the same servers (the two take turns at going first: AB, BA, ...),
               with the same figures.
  cluster      --cluster-url/--cluster-ports: the Redis Cluster of scripts/dev-services
               (3 masters, 1 replica each). The drain of N quotes over 30 symbols:
               against the standalone Redis, against the cluster with every symbol's
               slot on one master, and with 10 symbols on each master; Redis CPU per
               quote for each master (INFO cpu of each).
"""
import argparse
import base64
import concurrent.futures
import copy
import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pika
import pika.exceptions

ENV = os.environ
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AMQP_PORT = int(ENV["EVENTD_DEV_AMQP_PORT"])
MGMT_PORT = int(ENV["EVENTD_DEV_MGMT_PORT"])
REDIS_PORT = int(ENV["EVENTD_DEV_REDIS_PORT"])
DEV_DIR = ENV["EVENTD_DEV_DIR"]

SYMBOLS = [("AAPL", 187.12, -1.5), ("MSFT", 415.5, 2.25), ("GOOG", 140.25, 0.75),
           ("AMZN", 178.3, -0.4), ("NVDA", 880.1, 12.5)]
WORK_QUEUES = [
    ("eventd.quotes", "market.quotes", ""),
    ("eventd.analysis", "events", "analysis.request.#"),
    ("eventd.analysis-results", "events", "analysis.complete.#"),
    ("eventd.alerts", "events", "alert.triggered.#"),
    ("eventd.notify.discord", "events", "notification.discord.#"),
    ("eventd.notify.email", "events", "notification.email.#"),
    ("eventd.notify.push", "events", "notification.push.#"),
]
QUOTES = "eventd.quotes"
POLL_S = 0.005
PREFETCH = 500  # eventd's and the ceiling's; --prefetch changes it (the RSS target is at 500)
MONITORS = 1000
CLUSTER_SYMBOLS = 30
# The flat spread: so many symbols that a batch holds about one quote of each (the
# cheap function's three commands per quote), where the 5 symbols above let it store
# each symbol's quotes of a call together.
SPREAD_SYMBOLS = 200
IDEM_PATTERN = "eventd:idem:*"

# Targets of issue 10, printed next to the figures (benchmark figures, never asserted).
T_REDIS_US = "≤ 5 µs"
T_DRAIN = "≥ 0.5 × multiple-ack ceiling (quorum)"
T_P99 = "p99 ≤ 5 ms"
T_RSS = "≤ 32 MiB"

# Commands that are eventd's (or the bench's) requests, not commands run inside a
# function or script; subcommands ("function|list") go by their first part.
SCRIPT_CMDS = ("fcall", "fcall_ro", "evalsha", "evalsha_ro", "eval", "eval_ro")
TOP_LEVEL = {"ping", "info", "select", "hello", "auth", "client", "wait", "readonly", "asking", "command",
             "cluster", "function", "script", "dbsize", "scan", "config", "monitor", "flushdb", "flushall",
             "bgrewriteaof", "role"}
BENCH_CMDS = {"dbsize", "scan", "info"}  # the bench's; eventd sends at most an INFO at start


def history_key(symbol):
    """A symbol's price history (include/eventd/keys.hpp; the bench's symbols need no encoding)."""
    return "eventd:history:{" + symbol + "}"


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def crc16(data):
    """CRC16-CCITT (XMODEM), Redis Cluster's key hash."""
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def symbol_slot(symbol):
    """The slot of every key of a symbol's quotes (they carry the hash tag {SYMBOL})."""
    return crc16(symbol.encode()) % 16384


# ---------------------------------------------------------------- Redis (RESP)

class RedisError(Exception):
    pass


class Redis:
    """One persistent connection; counts the commands it sends, by name (they show up
    in Redis's own statistics and are subtracted from the deltas)."""

    def __init__(self, port=REDIS_PORT):
        self.port = port
        self.sock = None
        self.sent = {}
        self._connect()

    def _connect(self):
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.sock.makefile("rb")

    def addr(self):
        host, port = self.sock.getsockname()[:2]
        return f"{host}:{port}"

    def __call__(self, *args):
        if self.sock is None:
            self._connect()
        parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
        try:
            self.sock.sendall(b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts))
            name = parts[0].decode().lower()
            self.sent[name] = self.sent.get(name, 0) + 1
            return self._reply()
        except BaseException:
            # Interrupted between request and reply (a signal, a timeout): the stream
            # is out of step, so drop the connection rather than read a stale reply.
            self.close()
            self.sock = None
            raise

    def _reply(self):
        line = self.f.readline()
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
            return None if n < 0 else self.f.read(n + 2)[:-2].decode("utf-8", "surrogateescape")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RedisError(f"unexpected RESP reply {line!r}")

    def info(self):
        """INFO stats, cpu and commandstats: {"stats": {field: value}, "calls": {command:
        calls}, "usec": {command: usec}, "rejected": {command: rejected calls}} (a
        rejected call, e.g. CROSSSLOT, is not in calls)."""
        text = self("INFO", "stats", "cpu", "commandstats")
        stats, calls, usec, rejected = {}, {}, {}, {}
        for line in text.splitlines():
            if line.startswith("cmdstat_"):
                name, rest = line[len("cmdstat_"):].split(":", 1)
                calls[name] = int(re.search(r"calls=(\d+)", rest).group(1))
                usec[name] = int(re.search(r"usec=(\d+)", rest).group(1))
                m = re.search(r"rejected_calls=(\d+)", rest)
                rejected[name] = int(m.group(1)) if m else 0
            elif ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                stats[k] = v
        return {"stats": stats, "calls": calls, "usec": usec, "rejected": rejected}

    def cpu_s(self):
        s = self.info()["stats"]
        return float(s["used_cpu_sys"]) + float(s["used_cpu_user"])

    def count_keys(self, pattern):
        cursor, n = "0", 0
        while True:
            cursor, keys = self("SCAN", cursor, "MATCH", pattern, "COUNT", 10000)
            n += len(keys)
            if cursor == "0":
                return n

    def fresh(self):
        """Empty database and a fresh AOF, so no rewrite starts in the middle of a run."""
        self("FLUSHDB")
        try:
            self("BGREWRITEAOF")
        except RedisError:
            pass  # one already running
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = self("INFO", "persistence")
            if "aof_rewrite_in_progress:0" in text and "aof_rewrite_scheduled:0" in text:
                return
            time.sleep(0.1)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def cpu_of(stats, suffix=""):
    return float(stats["used_cpu_sys" + suffix]) + float(stats["used_cpu_user" + suffix])


class Window:
    """One Redis server's statistics over an interval, the bench's own commands on its
    connection subtracted by name. Open it before the interval, close() after."""

    def __init__(self, r):
        self.r = r
        self.sent0 = dict(r.sent)
        self.i0 = r.info()

    def close(self):
        self.i1 = self.r.info()
        own = {c: v - self.sent0.get(c, 0) for c, v in self.r.sent.items()}
        own["info"] -= 1  # the closing INFO is not in its own figures
        self.own = {c: v for c, v in own.items() if v}
        return self

    def result(self, poll_cost_s=0.0):
        s0, s1 = self.i0["stats"], self.i1["stats"]
        names = set(self.i0["calls"]) | set(self.i1["calls"])
        calls = {c: self.i1["calls"].get(c, 0) - self.i0["calls"].get(c, 0) - self.own.get(c, 0) for c in names}
        usec = {c: self.i1["usec"].get(c, 0) - self.i0["usec"].get(c, 0) for c in names if c not in BENCH_CMDS}
        rejected = {c: self.i1["rejected"].get(c, 0) - self.i0["rejected"].get(c, 0) for c in names}
        own = sum(self.own.values())
        polls = self.own.get("dbsize", 0)
        raw = cpu_of(s1) - cpu_of(s0)
        return {"port": self.r.port, "cpu_raw_s": raw, "poll_correction_s": polls * poll_cost_s,
                "cpu_s": raw - polls * poll_cost_s,
                "cpu_main_s": cpu_of(s1, "_main_thread") - cpu_of(s0, "_main_thread"),
                "commands": int(s1["total_commands_processed"]) - int(s0["total_commands_processed"]) - own,
                "reads": int(s1["total_reads_processed"]) - int(s0["total_reads_processed"]) - own,
                "calls": {c: v for c, v in calls.items() if v > 0},
                "usec": {c: v for c, v in usec.items() if v > 0},
                "rejected": {c: v for c, v in rejected.items() if v > 0}}


def merge(parts):
    """The sum of several servers' Window results."""
    out = {"cpu_raw_s": 0.0, "poll_correction_s": 0.0, "cpu_s": 0.0, "cpu_main_s": 0.0, "commands": 0,
           "reads": 0, "calls": {}, "usec": {}, "rejected": {}}
    for p in parts:
        for k in ("cpu_raw_s", "poll_correction_s", "cpu_s", "cpu_main_s", "commands", "reads"):
            out[k] += p[k]
        for k in ("calls", "usec", "rejected"):
            for c, v in p[k].items():
                out[k][c] = out[k].get(c, 0) + v
    return out


class Nodes:
    """The Redis servers eventd writes to, one connection each: the standalone server,
    or a cluster's masters (and its replicas, for their CPU only)."""

    def __init__(self, label, masters, replicas=()):
        self.label = label
        self.masters = masters
        self.replicas = list(replicas)
        self.poll_cost_s = [0.0] * len(masters)

    def dbsize(self):
        return sum(r("DBSIZE") for r in self.masters)

    def count_keys(self, pattern):
        return sum(r.count_keys(pattern) for r in self.masters)

    def fresh(self):
        for r in self.masters:
            r.fresh()

    def calibrate(self, polls=300):
        """Redis CPU per DBSIZE poll of the drain loop (with its share of Redis's idle
        cost), measured with nothing else writing, to subtract from the drains."""
        windows = [Window(r) for r in self.masters]
        for _ in range(polls):
            time.sleep(POLL_S)
            self.dbsize()
        for i, w in enumerate(windows):
            w.close()
            self.poll_cost_s[i] = max(w.result()["cpu_raw_s"], 0.0) / polls
        return self.poll_cost_s

    def close(self):
        for r in self.masters + self.replicas:
            r.close()



# ---------------------------------------------------------------- RabbitMQ

def mgmt(method, path, body=None, timeout=15):
    req = urllib.request.Request(f"http://127.0.0.1:{MGMT_PORT}/api/{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode())
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        raw = r.read()
    return json.loads(raw) if raw else None


def amqp_url(vhost):
    return f"amqp://guest:guest@127.0.0.1:{AMQP_PORT}/{vhost}"


class Broker:
    """A pika connection to one vhost, for queue depths and purges (never timed)."""

    def __init__(self, vhost):
        self.vhost = vhost
        self.conn = None

    def _channel(self):
        if self.conn is None or self.conn.is_closed:
            self.conn = pika.BlockingConnection(pika.URLParameters(amqp_url(self.vhost) + "?heartbeat=0"))
        return self.conn.channel()

    def depth(self, queue):
        ch = self._channel()
        try:
            return ch.queue_declare(queue, passive=True).method.message_count
        finally:
            if ch.is_open:
                ch.close()

    def purge(self, queue):
        ch = self._channel()
        try:
            ch.queue_purge(queue)
        finally:
            if ch.is_open:
                ch.close()

    def close(self):
        if self.conn is not None and self.conn.is_open:
            self.conn.close()


# ---------------------------------------------------------------- processes

def clean_env():
    env = dict(ENV)
    for k in ("EVENTD_AMQP_URL", "EVENTD_REDIS_URL", "EVENTD_CONFIG"):
        env.pop(k, None)
    return env


def proc_cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def pidfile(path):
    try:
        with open(path) as f:
            pid = int(f.read().split()[0])
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError, IndexError):
        return None


class ServerCpu:
    """CPU seconds RabbitMQ and Redis spend over an interval (read-only /proc)."""

    def __init__(self):
        self.pids = {"rabbitmq": pidfile(os.path.join(DEV_DIR, "rabbitmq", "rabbitmq.pid")),
                     "redis": pidfile(os.path.join(DEV_DIR, "redis", "redis.pid"))}
        self.start = self._now()

    def _now(self):
        out = {}
        for name, pid in self.pids.items():
            try:
                out[name] = proc_cpu_s(pid) if pid else None
            except OSError:
                out[name] = None
        return out

    def delta(self):
        end = self._now()
        return {k: (end[k] - self.start[k]) if end[k] is not None and self.start[k] is not None else None
                for k in end}


STARTED = []  # every eventd this driver started; main() stops any still running


class Eventd:
    def __init__(self, ctx, cfg, name, wrap=()):
        self.ctx = ctx
        self.log_path = os.path.join(ctx.work, f"{name}.log")
        self.logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen([*wrap, ctx.eventd, "--config", cfg], env=clean_env(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.logf)
        self.pid = self.proc.pid
        self.started = time.monotonic()
        STARTED.append(self)

    def alive(self):
        return self.proc.poll() is None

    def sample(self):
        return {"cpu_s": proc_cpu_s(self.pid), "hwm_kib": proc_status_kib(self.pid, "VmHWM"),
                "rss_kib": proc_status_kib(self.pid, "VmRSS")}

    def wait_ready(self, http_port, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"eventd exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return time.monotonic() - self.started
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"eventd not ready after {timeout} s; see {self.log_path}")

    def stop(self, timeout=20):
        """SIGTERM (eventd drains and exits 0); SIGKILL by PID if it does not."""
        if self.proc.returncode is None and self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.logf.closed:
            self.logf.close()
        return self.proc.returncode


# ---------------------------------------------------------------- set-up


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(ctx, vhost, qtype, redis_url=None, name=None):
    http_port = free_port()
    cfg = {
        "amqp": {"url": amqp_url(vhost), "prefetch": PREFETCH},
        "redis": {"url": redis_url or f"redis://127.0.0.1:{REDIS_PORT}/0",
                  **({"batchSize": ctx.batch_size} if ctx.batch_size else {})},
        "topology": {"queues": [{"name": n, "exchange": ex, "bindingKey": key, "type": qtype}
                                for n, ex, key in WORK_QUEUES]},
        "http": {"enabled": True, "listen": f"127.0.0.1:{http_port}"},
        "log": {"level": "info"},
        "shutdown": {"drainTimeoutMs": 5000},
        # The mix drives many notifications for one user: measure handling, not the limit.
        "notify": {"rateLimit": {"perMinute": 1000000, "burst": 1000000}},
    }
    path = os.path.join(ctx.work, f"{name or vhost}.jsonc")
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)
    return path, http_port


def run(cmd, timeout=120, check=True):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=clean_env(),
                       stdin=subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {p.returncode}: {p.stderr.strip()[-400:]}")
    return p


def make_vhost(ctx, vhost, qtype):
    """A fresh vhost whose topology ctx's eventctl declares (each build its own)."""
    delete_vhost(vhost)
    mgmt("PUT", f"vhosts/{vhost}")
    mgmt("PUT", f"permissions/{vhost}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    cfg, http_port = write_config(ctx, vhost, qtype)
    run([ctx.eventctl, "--config", cfg, "topology", "apply"])
    return cfg, http_port


def delete_vhost(vhost):
    try:
        mgmt("DELETE", f"vhosts/{vhost}")
    except (OSError, urllib.error.URLError):
        pass  # none (404) or the broker is going away


def wait_published(p):
    try:
        _, err = p.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise RuntimeError("eventctl publish did not finish in 600 s")
    if p.returncode != 0:
        raise RuntimeError(f"eventctl publish exited {p.returncode}: {err.decode().strip()[-300:]}")


def prefill(ctx, cfg, broker, n, symbols=SYMBOLS, spread=0):
    """N quote_update messages, split over the symbols, published in parallel by
    eventctl, one process per symbol (so the symbols interleave); returns msg/s.
    Or, with `spread` (a symbol count), by bench-fill: one publisher, round-robin over
    that many symbols."""
    # Start from an empty queue: acks a quorum queue lost at a consumer's close come back
    # as ready messages a moment later.
    time.sleep(0.5)
    left = broker.depth(QUOTES)
    if left:
        log(f"prefill: purging {left:,} message(s) left in {QUOTES}")
        broker.purge(QUOTES)
    started = time.monotonic()
    if spread:
        run([ctx.fill, "--url", amqp_url(broker.vhost), "--count", str(n), "--symbols", str(spread)], timeout=300)
        symbols = []
    per = [n // len(symbols) + (1 if i < n % len(symbols) else 0) for i in range(len(symbols))]
    procs = []
    try:
        for (sym, price, change), count in zip(symbols, per):
            if count == 0:
                continue
            body = json.dumps({"symbol": sym, "price": price, "change": change})
            procs.append(subprocess.Popen([ctx.eventctl, "--config", cfg, "publish", "quote_update", body,
                                           "--count", str(count)], env=clean_env(), stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        while procs:
            wait_published(procs.pop(0))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    secs = time.monotonic() - started
    depth = broker.depth(QUOTES)
    if depth != n:
        raise RuntimeError(f"prefill: {QUOTES} holds {depth} messages, expected {n}")
    return n / secs


def start_monitors(ctx, cfg, count):
    """COUNT users with a running monitor, 2 rules each on 2 of the symbols: 400 rules
    per symbol, thresholds the bench's constant prices never cross (evaluation, no firing)."""
    def one(i):
        s1, p1, _ = SYMBOLS[i % len(SYMBOLS)]
        s2, _, _ = SYMBOLS[(i + 1) % len(SYMBOLS)]
        spec = {"rules": [{"alertId": 1, "symbol": s1, "condition": "price_above", "threshold": round(p1 * 3, 2),
                           "cooldownSec": 300},
                          {"alertId": 2, "symbol": s2, "condition": "change_pct_below", "threshold": -50}],
                "channels": ["push"], "checkIntervalMs": 60000}
        p = subprocess.run([ctx.eventctl, "--config", cfg, "monitor", "start", f"bench-user-{i}", json.dumps(spec)],
                           capture_output=True, text=True, timeout=60, env=clean_env(), stdin=subprocess.DEVNULL)
        return p.returncode, p.stderr.strip()

    started = time.monotonic()
    pool = concurrent.futures.ThreadPoolExecutor(4)
    try:
        results = list(pool.map(one, range(count)))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    bad = [r for r in results if r[0] != 0]
    if bad:
        raise RuntimeError(f"eventctl monitor start failed {len(bad)} times: {bad[0][1][-300:]}")
    return time.monotonic() - started


MIX_USER = "bench-mix"          # has a running monitor (channel push): derived notifications
MIX_USER_QUIET = "bench-quiet"  # no monitor: its analysis_complete derives nothing


def mix_drain(ctx, cfg, broker, redis, n, name, timeout=None):
    """A realistic mix: 60 % quote_update, 10 % each analysis_request (full analysis on
    60 seeded prices), analysis_complete, alert_triggered and notification (push, redis
    sink). Derived messages are handled too (analysis_complete and a notification per
    request, a notification per alert), so eventd handles more messages than were sent.
    Pre-filled with eventd stopped; timed from eventd's start to the last Redis change,
    once every work queue is empty; then the idempotency keys are counted."""
    timeout = timeout or ctx.drain_timeout
    redis.fresh()
    for sym, price, _ in SYMBOLS:  # history for the analyses
        redis("RPUSH", history_key(sym), *[f"{price + (i % 7) - 3:.2f}" for i in range(60)])
    spec = {"rules": [{"alertId": 1, "symbol": SYMBOLS[0][0], "condition": "price_above",
                       "threshold": SYMBOLS[0][1] * 10}], "channels": ["push"]}
    run([ctx.eventctl, "--config", cfg, "monitor", "start", MIX_USER, json.dumps(spec)])
    share = {"quote_update": 0.6, "analysis_request": 0.1, "analysis_complete": 0.1,
             "alert_triggered": 0.1, "notification": 0.1}
    counts = {t: int(n * f) for t, f in share.items()}
    counts["quote_update"] += n - sum(counts.values())
    jobs = []
    for i, (sym, price, change) in enumerate(SYMBOLS):
        part = lambda total: total // len(SYMBOLS) + (1 if i < total % len(SYMBOLS) else 0)
        jobs += [
            ("quote_update", {"symbol": sym, "price": price, "change": change}, part(counts["quote_update"])),
            ("analysis_request", {"userId": MIX_USER, "symbol": sym, "analysisType": "full"},
             part(counts["analysis_request"])),
            ("analysis_complete", {"userId": MIX_USER_QUIET, "symbol": sym, "workflowId": "bench",
                                   "recommendation": "hold"}, part(counts["analysis_complete"])),
            ("alert_triggered", {"userId": MIX_USER, "alertId": 1, "symbol": sym, "condition": "price_above",
                                 "threshold": price, "currentValue": price + 1}, part(counts["alert_triggered"])),
            ("notification", {"userId": MIX_USER, "channel": "push", "title": "bench", "body": sym},
             part(counts["notification"])),
        ]
    procs = []
    started = time.monotonic()
    for type_, body, count in jobs:
        if count:
            procs.append(subprocess.Popen([ctx.eventctl, "--config", cfg, "publish", type_, json.dumps(body),
                                           "--count", str(count)], env=clean_env(), stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    for p in procs:
        _, err = p.communicate(timeout=600)
        if p.returncode != 0:
            raise RuntimeError(f"eventctl publish exited {p.returncode}: {err.decode().strip()[-300:]}")
    fill_rate = n / (time.monotonic() - started)
    handled = (counts["quote_update"] + 3 * counts["analysis_request"] + counts["analysis_complete"]
               + 2 * counts["alert_triggered"] + counts["notification"])
    queues = [q for q, _, _ in WORK_QUEUES]
    cpu = ServerCpu()
    ev = Eventd(ctx, cfg, name)
    k_prev, t_prev = redis("DBSIZE"), ev.started
    t_start = t_last = None
    stable_since = None
    try:
        while True:
            time.sleep(0.02)
            now = time.monotonic()
            if not ev.alive():
                raise RuntimeError(f"eventd exited with {ev.proc.returncode} during the mix; see {ev.log_path}")
            k = redis("DBSIZE")
            if k != k_prev:
                t_start = t_start or (t_prev + now) / 2
                t_last, stable_since = now, None
            elif t_start is not None:
                stable_since = stable_since or now
                if now - stable_since >= 1.0 and all(broker.depth(q) == 0 for q in queues):
                    break
            if now - ev.started > timeout:
                raise RuntimeError(f"the mix did not finish in {timeout:g} s; see {ev.log_path}")
            k_prev, t_prev = k, now
        sample = ev.sample()
    finally:
        server_cpu = cpu.delta()
        rc = ev.stop()
    idem = redis.count_keys(IDEM_PATTERN)
    dead = sum(broker.depth(q + ".dlq") for q in queues)
    secs = t_last - t_start
    return {"n": n, "handled_expected": handled, "idem_keys": idem, "dead_lettered": dead, "exit_code": rc,
            "seconds": secs, "rate": n / secs, "handled_rate": idem / secs, "fill_rate": fill_rate,
            "counts": counts, "cpu_s": sample["cpu_s"], "hwm_kib": sample["hwm_kib"], "server_cpu": server_cpu,
            "log": ev.log_path}


def monitors_supported(ctx, cfg):
    p = run([ctx.eventctl, "--config", cfg, "monitor", "list"], check=False)
    return p.returncode == 0


# ---------------------------------------------------------------- measurements

def ceiling(ctx, cfg, broker, n, ack_every):
    fill_rate = prefill(ctx, cfg, broker, n)
    cpu = ServerCpu()
    p = run([ctx.ceiling, "--url", amqp_url(broker.vhost), "--queue", QUOTES, "--count", str(n),
             "--prefetch", str(PREFETCH), "--ack-every", str(ack_every), "--timeout-s", str(ctx.drain_timeout)],
            timeout=ctx.drain_timeout + 30)
    out = json.loads(p.stdout)
    out["fill_rate"] = fill_rate
    out["server_cpu"] = cpu.delta()
    left = broker.depth(QUOTES)
    if left:
        broker.purge(QUOTES)
        out["left"] = left
    return out


def drain(ctx, cfg, broker, nodes, n, name, with_monitors=0, under_monitor=False, timeout=None,
          symbols=SYMBOLS, spread=0):
    """Pre-fill N, start eventd, time it to the last effect. See the module docstring."""
    timeout = timeout or ctx.drain_timeout
    partial = None
    nodes.fresh()
    setup_s = start_monitors(ctx, cfg, with_monitors) if with_monitors else 0.0
    fill_rate = prefill(ctx, cfg, broker, n, symbols, spread)
    mon = None
    if under_monitor:
        mon_path = os.path.join(ctx.work, f"{name}.monitor")
        mon_out = open(mon_path, "wb")
        mon = subprocess.Popen(["redis-cli", "-p", str(nodes.masters[0].port), "monitor"], stdout=mon_out,
                               stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while os.path.getsize(mon_path) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)  # "OK" once MONITOR is on
    base_keys = nodes.dbsize()
    windows = [Window(r) for r in nodes.masters]
    replica_windows = [Window(r) for r in nodes.replicas]
    cpu = ServerCpu()
    ev = Eventd(ctx, cfg, name)
    t_prev, k_prev = ev.started, base_keys
    t_start = t_final = None
    stalled_since = None
    timed_out = False
    sample = None
    try:
        while True:
            time.sleep(POLL_S)
            now = time.monotonic()
            k = nodes.dbsize()
            if not ev.alive():
                raise RuntimeError(f"eventd exited with {ev.proc.returncode} during the drain; see {ev.log_path}")
            if k != k_prev:
                if t_start is None:
                    t_start = (t_prev + now) / 2
                t_final = now
                stalled_since = None
            elif t_start is not None:
                stalled_since = stalled_since or now
                if now - stalled_since >= 1.0 and broker.depth(QUOTES) == 0:
                    break
            if now - ev.started > timeout:
                # Partial: the rate over what was done so far (SCAN before eventd stops).
                timed_out = True
                t_final = now
                partial = nodes.count_keys(IDEM_PATTERN)
                break
            t_prev, k_prev = now, k
        sample = ev.sample()
    finally:
        try:
            for w in windows + replica_windows:
                w.close()
            server_cpu = cpu.delta()
        finally:
            rc = ev.stop()
            if mon is not None:
                mon.terminate()
                mon.wait(10)
                mon_out.close()
    if t_start is None:
        raise RuntimeError(f"eventd made no progress in {timeout:g} s; see {ev.log_path}")
    per_master = [r.count_keys(IDEM_PATTERN) for r in nodes.masters]
    idem = sum(per_master)
    left = broker.depth(QUOTES)
    if left:
        broker.purge(QUOTES)
    secs = t_final - t_start
    done = n if not timed_out else partial
    masters = [w.result(cost) for w, cost in zip(windows, nodes.poll_cost_s)]
    for m, keys in zip(masters, per_master):
        m["keys"] = keys
    total = merge(masters)
    res = {
        "n": n, "done": done, "timed_out": timed_out, "idem_keys": idem, "left_in_queue": left,
        "exit_code": rc, "seconds": secs, "rate": (done - 1) / secs if secs > 0 else 0.0,
        "startup_s": t_start - ev.started, "fill_rate": fill_rate, "setup_s": setup_s,
        "cpu_s": sample["cpu_s"], "hwm_kib": sample["hwm_kib"], "rss_kib": sample["rss_kib"],
        "server_cpu": server_cpu, "log": ev.log_path, "nodes": nodes.label,
        "redis": total, "redis_masters": masters,
        "redis_replicas_cpu_s": sum(w.result()["cpu_raw_s"] for w in replica_windows),
        "redis_commands": total["commands"], "redis_reads": total["reads"],
        "redis_scripts": sum(total["calls"].get(c, 0) for c in SCRIPT_CMDS),
    }
    if under_monitor:
        res["monitor"] = parse_monitor(mon_path, nodes.masters[0].addr())
    return res


def callgrind_total(out):
    """The instruction total (Ir) of a callgrind output file."""
    with open(out) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError(f"no instruction total in {out}")


def callgrind_run(ctx, cfg, broker, nodes, n, name, timeout=300):
    """eventd's user-space instructions (callgrind's Ir total, start-up included) for a
    drain of N quotes under valgrind --tool=callgrind."""
    nodes.fresh()
    prefill(ctx, cfg, broker, n)
    out = os.path.join(ctx.work, f"{name}.callgrind")
    ev = Eventd(ctx, cfg, name, wrap=("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"))
    deadline = time.monotonic() + timeout
    try:
        while nodes.dbsize() < n:
            if not ev.alive():
                raise RuntimeError(f"eventd under callgrind exited with {ev.proc.returncode}; see {ev.log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"eventd under callgrind did not drain {n:,} in {timeout} s; see {ev.log_path}")
            time.sleep(0.2)
    finally:
        ev.stop(timeout=60)
    return callgrind_total(out)


def instructions_per_quote(ctx, cfg, broker, nodes, n, name):
    """Instructions per quote: the difference of a drain of 3 N and one of N, over 2 N, so
    that start-up and shut-down cancel. Counted, not timed: the same on a busy machine."""
    small = callgrind_run(ctx, cfg, broker, nodes, n, f"{name}-{n}")
    large = callgrind_run(ctx, cfg, broker, nodes, 3 * n, f"{name}-{3 * n}")
    return (large - small) / (2 * n)


def redis_callgrind_run(ctx, vhost, qtype, broker, n, name, timeout=300):
    """Redis's instructions (callgrind's Ir total, start-up included) while ctx's eventd
    drains N quotes into a scratch redis-server of its own under valgrind --tool=callgrind:
    AOF everysec as dev-services runs it, but --hz 1 and no active rehashing, so that
    Redis's timers, which run more often the longer a drain takes, add little."""
    port = free_port()
    rdir = os.path.join(ctx.work, f"{name}.redis")
    os.makedirs(rdir, exist_ok=True)
    out = os.path.join(ctx.work, f"{name}.callgrind")
    with open(os.path.join(ctx.work, f"{name}.redis.log"), "wb") as rlog:
        server = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "redis-server",
                                   "--bind", "127.0.0.1", "--port", str(port), "--dir", rdir, "--appendonly", "yes",
                                   "--appendfsync", "everysec", "--save", "", "--hz", "1", "--activerehashing", "no"],
                                  env=clean_env(), stdin=subprocess.DEVNULL, stdout=rlog, stderr=rlog)
    ev = None
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = Redis(port)
                r("PING")
                break
            except (OSError, RedisError):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server under callgrind did not come up; see {rdir}")
                time.sleep(0.2)
        cfg, _ = write_config(ctx, vhost, qtype, redis_url=f"redis://127.0.0.1:{port}/0", name=name)
        prefill(ctx, cfg, broker, n)
        ev = Eventd(ctx, cfg, name)
        deadline = time.monotonic() + timeout
        while r("DBSIZE") < n:
            if not ev.alive():
                raise RuntimeError(f"eventd exited with {ev.proc.returncode}; see {ev.log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"eventd did not drain {n:,} into Redis under callgrind in {timeout} s")
            time.sleep(0.2)
        ev.stop(timeout=60)
        try:
            r("SHUTDOWN", "NOSAVE")
        except (OSError, RedisError, ConnectionError):
            pass  # it closes the connection as it goes
        server.wait(timeout=60)
    finally:
        if ev is not None:
            ev.stop(timeout=60)
        if server.poll() is None:
            server.kill()  # ours, by its Popen (PID)
            server.wait()
    return callgrind_total(out)


def redis_instructions_per_quote(ctx, vhost, qtype, broker, n, name):
    """Redis's instructions per quote for ctx's eventd: drains of N and 3 N, the difference
    over 2 N. Redis is slow under valgrind, so eventd's calls are full (redis.batchSize)."""
    small = redis_callgrind_run(ctx, vhost, qtype, broker, n, f"{name}-{n}")
    large = redis_callgrind_run(ctx, vhost, qtype, broker, 3 * n, f"{name}-{3 * n}")
    return (large - small) / (2 * n)


def per_quote(d):
    """Redis figures of a drain per message handled: CPU, commands, script calls, the
    usec commandstats gives the script calls and each command inside them."""
    r, q = d["redis"], max(d["done"], 1)
    calls, usec = r["calls"], r["usec"]
    inner = {c: v for c, v in calls.items() if c not in SCRIPT_CMDS and c.split("|")[0] not in TOP_LEVEL}
    return {"cpu_us": 1e6 * r["cpu_s"] / q, "cpu_main_us": 1e6 * r["cpu_main_s"] / q,
            "poll_us": 1e6 * r["poll_correction_s"] / q,
            "commands": r["commands"] / q, "reads": r["reads"] / q,
            "script_calls": sum(calls.get(c, 0) for c in SCRIPT_CMDS) / q,
            "script_rejected": sum(r["rejected"].get(c, 0) for c in SCRIPT_CMDS) / q,
            "script_us": sum(usec.get(c, 0) for c in SCRIPT_CMDS) / q,
            "inner_us": sum(usec.get(c, 0) for c in inner) / q,
            "inner": {c: (v / q, usec.get(c, 0) / q) for c, v in inner.items()},
            "top": {c: v / q for c, v in calls.items() if c not in inner}}


MONITOR_LINE = re.compile(r'^\d+\.\d+ \[\d+ ([^\]]+)\] "([^"]*)"')


def parse_monitor(path, own_addr):
    """Counts top-level requests per client vs. commands run inside scripts and functions."""
    top, lua = {}, {}
    with open(path, "rb") as f:
        for raw in f:
            m = MONITOR_LINE.match(raw.decode("utf-8", "replace"))
            if not m:
                continue
            client, cmd = m.group(1), m.group(2).lower()
            if client == own_addr:
                continue
            bucket = lua if client == "lua" else top
            bucket[cmd] = bucket.get(cmd, 0) + 1
    return {"top": top, "lua": lua}


def latency_run(ctx, qtype, rate):
    p = run([ctx.latency, "--amqp-url", amqp_url(f"bench-{qtype}"), "--redis-port", str(REDIS_PORT),
             "--rate", str(rate), "--duration-s", str(ctx.latency_s), "--warmup-s", "1",
             "--grace-s", str(ctx.grace_s), "--symbol", "BENCHLAT"],
            timeout=ctx.latency_s + ctx.grace_s + 60)
    return json.loads(p.stdout)


def latency_reference(ctx, qtype, rates):
    """The same runs with bench-ceiling in eventd's place, marking each message in Redis
    with a SET (pipelined) before acking it: what the broker and one Redis write cost,
    no eventd."""
    out = {}
    for rate in rates:
        count = int((1 + ctx.latency_s) * rate)  # what bench-latency sends (its warm-up included)
        consumer = subprocess.Popen(
            [ctx.ceiling, "--url", amqp_url(f"bench-{qtype}"), "--queue", QUOTES, "--count", str(count),
             "--prefetch", str(PREFETCH), "--timeout-s", str(ctx.latency_s + ctx.grace_s + 30),
             "--mark-redis-port", str(REDIS_PORT), "--mark-symbol", "BENCHLAT"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(0.5)  # consuming before the first publish
            out[rate] = latency_run(ctx, qtype, rate)
            consumer.communicate(timeout=ctx.grace_s + 60)
        finally:
            if consumer.poll() is None:
                consumer.kill()
                consumer.wait()
    return out


def latency(ctx, cfg, http_port, qtype, rates):
    ev = Eventd(ctx, cfg, f"latency-{qtype}")
    out = {}
    try:
        ev.wait_ready(http_port)
        for rate in rates:
            out[rate] = latency_run(ctx, qtype, rate)
            if not ev.alive():
                raise RuntimeError(f"eventd exited during the latency run; see {ev.log_path}")
    finally:
        ev.stop()
    return out


# ---------------------------------------------------------------- the Redis Cluster

def cluster_layout(ports):
    """The cluster's masters (ordered by their first slot), its replicas, and the
    symbols of the two drains: all on the first master, and spread evenly (interleaved,
    so every loop pass has work for every master). Slots computed here, checked with
    CLUSTER KEYSLOT."""
    conns = {p: Redis(p) for p in ports}
    try:
        ranges = sorted((int(s[0]), int(s[1]), int(s[2][1])) for s in conns[ports[0]]("CLUSTER", "SLOTS"))
        masters = []
        for _, _, p in ranges:
            if p not in masters:
                masters.append(p)
        replicas = [p for p in ports if p not in masters]
        owner = {}
        by_master = {p: [] for p in masters}
        for i in range(3000):
            sym = f"C{i:03d}"
            slot = symbol_slot(sym)
            owner[sym] = next(p for a, b, p in ranges if a <= slot <= b)
            by_master[owner[sym]].append(sym)
        k = CLUSTER_SYMBOLS // len(masters)
        spread = [by_master[p][j] for j in range(k) for p in masters]
        one = by_master[masters[0]][:CLUSTER_SYMBOLS]
        for sym in set(spread) | set(one):
            got = conns[ports[0]]("CLUSTER", "KEYSLOT", f"eventd:idem:{{{sym}}}:x")
            if got != symbol_slot(sym):
                raise RuntimeError(f"slot of {sym}: Redis says {got}, the bench {symbol_slot(sym)}")
    finally:
        for c in conns.values():
            c.close()
    quote = lambda syms: [(s, 100.0 + i, 0.5) for i, s in enumerate(syms)]
    return masters, replicas, quote(spread), quote(one)


def cluster_bench(ctx, standalone, n):
    """The drain of N quotes over 30 symbols: standalone, cluster with one master
    serving every symbol, cluster with 10 symbols per master. One quorum vhost."""
    ports = [int(p) for p in ctx.cluster_ports.split(",")]
    masters, replicas, spread, one = cluster_layout(ports)
    log(f"[cluster] masters {masters}, replicas {replicas}; {len(spread)} symbols: "
        f"spread {', '.join(s for s, _, _ in spread[:6])}, ...; on the first master {', '.join(s for s, _, _ in one[:6])}, ...")
    out = {"masters": masters, "replicas": replicas, "symbols_spread": [s for s, _, _ in spread],
           "symbols_one": [s for s, _, _ in one]}
    vhost = "bench-cluster"
    cl = Nodes("cluster", [Redis(p) for p in masters], [Redis(p) for p in replicas])
    broker = Broker(vhost)
    try:
        cfg_s, _ = make_vhost(ctx, vhost, "quorum")
        cfg_c, _ = write_config(ctx, vhost, "quorum", redis_url=ctx.cluster_url, name="bench-cluster-rc")
        cl.fresh()
        out["poll_cost_us"] = [1e6 * c for c in cl.calibrate()]
        for i in range(ctx.repeat):
            for key, cfg, nodes, syms in (("standalone", cfg_s, standalone, spread), ("one", cfg_c, cl, one),
                                          ("spread", cfg_c, cl, spread)):
                log(f"[cluster] drain ({key}){'' if ctx.repeat == 1 else f' run {i + 1}'}: prefill {n:,} "
                    f"over {len(syms)} symbols")
                d = drain(ctx, cfg, broker, nodes, n, f"cluster-{key}-{i + 1}", symbols=syms)
                out.setdefault(key + "_runs", []).append(d)
                log(f"[cluster]   {fnum(d['rate'])} msg/s, Redis {per_quote(d)['cpu_us']:.2f} µs per quote")
        for key in ("standalone", "one", "spread"):
            out[key] = median_run(out[key + "_runs"], "rate")
            v = [per_quote(d)["cpu_us"] for d in out[key + "_runs"]]
            out[key]["cpu_range"] = (min(v), max(v))
            out[key]["cpu_median"] = median(v)
        out["paired"] = {"spread/one": median([a["rate"] / b["rate"] for a, b in zip(out["spread_runs"], out["one_runs"])]),
                         "spread/standalone": median([a["rate"] / b["rate"] for a, b in
                                                      zip(out["spread_runs"], out["standalone_runs"])])}
    finally:
        broker.close()
        cl.close()
        delete_vhost(vhost)
    return out


def median(values):
    v = sorted(values)
    return None if not v else (v[(len(v) - 1) // 2] + v[len(v) // 2]) / 2


def rate_of(run):
    return run["rate"] if "rate" in run else run["msgs_per_s"]


def median_run(runs, rate_key):
    m = dict(sorted(runs, key=lambda x: x[rate_key])[(len(runs) - 1) // 2])
    m["range"] = (min(x[rate_key] for x in runs), max(x[rate_key] for x in runs))
    return m


# ---------------------------------------------------------------- formatting

def fnum(x, digits=0):
    if x is None:
        return "n/a"
    return f"{x:,.{digits}f}"


def per_100k(value, n):
    return None if value is None or not n else value * 100000 / n


def lat_cell(r, grace):
    L = r["latency_ms"]
    text = f"p50 {fnum(L['p50'], 2)} / p99 {fnum(L['p99'], 2)} / p99.9 {fnum(L['p99_9'], 2)} ms"
    problems = []
    if r["achieved_rate"] < 0.95 * r["rate"]:
        problems.append(f"publisher reached only {fnum(r['achieved_rate'])} msg/s")
    if r["missing"]:
        problems.append(f"{fnum(r['missing'])} of {fnum(r['measured'])} not handled within {grace:g} s "
                        f"(percentiles over the rest)")
    tail = r["latency_last10pct_ms"]["p50"]
    if tail is not None and tail > 100:
        problems.append(f"backlog grew: p50 of the last 10 % = {fnum(tail)} ms")
    if problems:
        text += " — NOT SUSTAINED here: " + "; ".join(problems)
    return text


def inner_cell(pq, top=8):
    """Commands run inside the functions, per quote: calls and usec (commandstats)."""
    items = sorted(pq["inner"].items(), key=lambda kv: (-kv[1][1], kv[0]))[:top]
    return ", ".join(f"{c.upper()} {calls:.2f}× {us:.2f} µs" for c, (calls, us) in items)


def header(ctx):
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit = "unknown"
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        if dirty:
            commit += " (+ uncommitted changes)"
    except (OSError, subprocess.TimeoutExpired):
        pass
    versions = []
    try:
        versions.append("RabbitMQ " + mgmt("GET", "overview")["rabbitmq_version"])
    except (OSError, urllib.error.URLError, KeyError, ValueError):
        pass
    p = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
    m = re.search(r"v=(\S+)", p.stdout)
    if m:
        versions.append("Redis " + m.group(1))
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "nproc": os.cpu_count(), "cpu": model, "commit": commit, "load": os.getloadavg(),
            "versions": ", ".join(versions)}


def snapshot(build_dir, dst, names):
    """Copies of the binaries: a rebuild during the run (others share build/) must
    neither break it nor mix two versions into one table."""
    os.makedirs(dst, exist_ok=True)
    out = {}
    for attr, rel in names:
        out[attr] = os.path.join(dst, os.path.basename(rel))
        shutil.copy2(os.path.join(build_dir, rel), out[attr])
    return out


def set_prefetch(n):
    global PREFETCH
    PREFETCH = n


def main():
    # SIGTERM (scripts/bench's cleanup) unwinds like an exception, so every eventd
    # this driver started is stopped by its finally block.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--batch-size", type=int, default=0, help="redis.batchSize of eventd (default: its own)")
    ap.add_argument("--latency-s", type=float, default=10)
    ap.add_argument("--grace-s", type=float, default=20)
    ap.add_argument("--drain-timeout", type=float, default=180)
    ap.add_argument("--monitors-timeout", type=float, default=60,
                    help="the drain with monitors stops here and reports the rate so far")
    ap.add_argument("--accounting-n", type=int, default=5000)
    ap.add_argument("--instructions-n", type=int, default=5000,
                    help="eventd instructions per quote: drains of N and 3 N under callgrind")
    ap.add_argument("--types", default="quorum,classic")
    ap.add_argument("--repeat", type=int, default=1, help="ceiling and drain runs per queue type (median shown)")
    ap.add_argument("--rates", default="2000,10000")
    ap.add_argument("--skip", default="",
                    help="comma list of: ceiling,drain,spread,instructions,redis,latency,monitors,mix,micro,cluster,baseline")
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build"))
    ap.add_argument("--baseline-build-dir", help="a build of another revision: drained next to this one")
    ap.add_argument("--baseline-rev", default="baseline", help="its name in the table")
    ap.add_argument("--cluster-url", help="a Redis Cluster's seed URL (redis://h:p,h:p/0)")
    ap.add_argument("--cluster-ports", help="its nodes' ports, comma-separated")
    ap.add_argument("--cluster-error", help="why there is no cluster (printed instead of its rows)")
    ap.add_argument("--prefetch", type=int, default=PREFETCH, help="eventd's amqp.prefetch and the ceiling's")
    ap.add_argument("--quick", action="store_true")
    ctx = ap.parse_args()
    set_prefetch(ctx.prefetch)
    ctx.work = os.path.join(DEV_DIR, "runs", time.strftime("%Y%m%d-%H%M%S"))
    for attr, path in snapshot(ctx.build_dir, os.path.join(ctx.work, "bin"),
                               (("eventd", "src/eventd/eventd"), ("eventctl", "src/eventctl/eventctl"),
                                ("ceiling", "bench/bench-ceiling"), ("latency", "bench/bench-latency"),
                                ("micro", "bench/bench-micro"), ("fill", "bench/bench-fill"))).items():
        setattr(ctx, attr, path)
    skip = set(filter(None, ctx.skip.split(",")))
    base = None
    if ctx.baseline_build_dir and "baseline" not in skip and "drain" not in skip:
        base = copy.copy(ctx)
        for attr, path in snapshot(ctx.baseline_build_dir, os.path.join(ctx.work, "bin-baseline"),
                                   (("eventd", "src/eventd/eventd"), ("eventctl", "src/eventctl/eventctl"))).items():
            setattr(base, attr, path)
    types = [t for t in ctx.types.split(",") if t]
    rates = [int(r) for r in ctx.rates.split(",") if r]
    n = ctx.n

    info = header(ctx)
    log(f"N={n:,}, types {types}, logs and raw results in {ctx.work}")
    results = {}
    redis = Redis()
    standalone = Nodes("standalone", [redis])
    redis.fresh()
    log("calibrating the cost of the DBSIZE polls on Redis")
    results["_poll_cost_us"] = 1e6 * standalone.calibrate()[0]
    for qtype in types:
        vhost = f"bench-{qtype}"
        r = results[qtype] = {}
        broker = Broker(vhost)
        base_vhost, base_broker = f"bench-{qtype}-baseline", None
        try:
            log(f"[{qtype}] vhost {vhost}: topology")
            cfg, http_port = make_vhost(ctx, vhost, qtype)
            if base is not None:
                base_cfg, _ = make_vhost(base, base_vhost, qtype)
                base_broker = Broker(base_vhost)
            # With --repeat K, the ceiling and the drains alternate K times and the
            # median run is reported (with the range), which tames a noisy machine.
            for i in range(ctx.repeat):
                rep = f" (run {i + 1} of {ctx.repeat})" if ctx.repeat > 1 else ""
                if "ceiling" not in skip:
                    log(f"[{qtype}] ceiling{rep}: prefill {n:,}, drain with bench-ceiling (ack each)")
                    r.setdefault("ceiling_runs", []).append(ceiling(ctx, cfg, broker, n, 1))
                    log(f"[{qtype}]   {fnum(r['ceiling_runs'][-1]['msgs_per_s'])} msg/s")
                    log(f"[{qtype}] ceiling{rep}: prefill {n:,}, drain with bench-ceiling (multiple-ack every 250)")
                    r.setdefault("ceiling_multi_runs", []).append(ceiling(ctx, cfg, broker, n, 250))
                    log(f"[{qtype}]   {fnum(r['ceiling_multi_runs'][-1]['msgs_per_s'])} msg/s")
                def this_drain():
                    log(f"[{qtype}] eventd drain{rep}: prefill {n:,}, start eventd, poll DBSIZE")
                    d = drain(ctx, cfg, broker, standalone, n, f"drain-{qtype}-{i + 1}")
                    r.setdefault("drain_runs", []).append(d)
                    log(f"[{qtype}]   {fnum(d['rate'])} msg/s, Redis {per_quote(d)['cpu_us']:.2f} µs per quote")

                def baseline_drain():
                    log(f"[{qtype}] baseline {ctx.baseline_rev} drain{rep}: prefill {n:,}, start its eventd")
                    d = drain(base, base_cfg, base_broker, standalone, n, f"baseline-drain-{qtype}-{i + 1}")
                    r.setdefault("baseline_runs", []).append(d)
                    log(f"[{qtype}]   {fnum(d['rate'])} msg/s, Redis {per_quote(d)['cpu_us']:.2f} µs per quote")

                # The drain right after the ceilings can find the broker still busy with
                # their 2 N messages: this build and the baseline take turns at going first
                # (AB, BA, AB, ...), so that neither always gets that slot.
                pair = [f for f, wanted in ((this_drain, "drain" not in skip), (baseline_drain, base is not None))
                        if wanted]
                for f in (pair if i % 2 == 0 else pair[::-1]):
                    f()
                # After the pair above, so that this build's drain and the baseline's stay
                # one right after the other.
                if "spread" not in skip and i == 0:
                    log(f"[{qtype}] eventd drain over {SPREAD_SYMBOLS} symbols: prefill {n:,}, start eventd")
                    r["spread"] = drain(ctx, cfg, broker, standalone, n, f"spread-{qtype}", spread=SPREAD_SYMBOLS)
                    log(f"[{qtype}]   {fnum(r['spread']['rate'])} msg/s, "
                        f"Redis {per_quote(r['spread'])['cpu_us']:.2f} µs per quote")
            if "instructions" not in skip and qtype == types[0]:
                if shutil.which("valgrind") is None:
                    r["instructions"] = r["baseline_instructions"] = "not run: valgrind is not installed"
                else:
                    m = ctx.instructions_n
                    log(f"[{qtype}] eventd instructions per quote: drains of {m:,} and {3 * m:,} under callgrind")
                    r["instructions"] = instructions_per_quote(ctx, cfg, broker, standalone, m, f"callgrind-{qtype}")
                    log(f"[{qtype}]   {r['instructions']:,.0f}")
                    if base is not None:
                        log(f"[{qtype}] baseline {ctx.baseline_rev}: the same")
                        r["baseline_instructions"] = instructions_per_quote(base, base_cfg, base_broker, standalone, m,
                                                                            f"baseline-callgrind-{qtype}")
                        log(f"[{qtype}]   {r['baseline_instructions']:,.0f}")
                    log(f"[{qtype}] Redis instructions per quote: drains of {m:,} and {3 * m:,} into a Redis "
                        "under callgrind")
                    r["redis_instructions"] = redis_instructions_per_quote(ctx, vhost, qtype, broker, m,
                                                                           f"redis-callgrind-{qtype}")
                    log(f"[{qtype}]   {r['redis_instructions']:,.0f}")
                    if base is not None:
                        log(f"[{qtype}] baseline {ctx.baseline_rev}: the same")
                        r["baseline_redis_instructions"] = redis_instructions_per_quote(
                            base, base_vhost, qtype, base_broker, m, f"baseline-redis-callgrind-{qtype}")
                        log(f"[{qtype}]   {r['baseline_redis_instructions']:,.0f}")
            for key, rate_key in (("ceiling", "msgs_per_s"), ("ceiling_multi", "msgs_per_s"), ("drain", "rate"),
                                  ("baseline", "rate")):
                runs = r.get(key + "_runs")
                if runs:
                    r[key] = median_run(runs, rate_key)
            # Ratios of the runs made one right after the other, then their median: on a
            # noisy machine that is steadier than a ratio of two medians.
            pairs = {"multi": ("drain_runs", "ceiling_multi_runs"), "each": ("drain_runs", "ceiling_runs"),
                     "baseline": ("drain_runs", "baseline_runs")}
            r["paired"] = {k: median([rate_of(x) / rate_of(y) for x, y in zip(r[a], r[b])])
                           for k, (a, b) in pairs.items() if r.get(a) and r.get(b)}
            if "redis" not in skip:
                m = min(ctx.accounting_n, n)
                log(f"[{qtype}] Redis accounting: drain of {m:,} under MONITOR (not timed)")
                r["accounting"] = drain(ctx, cfg, broker, standalone, m, f"accounting-{qtype}", under_monitor=True)
            if "latency" not in skip:
                log(f"[{qtype}] latency at {rates} msg/s, {ctx.latency_s:g} s each (+1 s warm-up)")
                redis.fresh()
                r["latency_reference"] = latency_reference(ctx, qtype, rates)
                broker.purge(QUOTES)
                redis.fresh()
                r["latency"] = latency(ctx, cfg, http_port, qtype, rates)
                broker.purge(QUOTES)
            if "monitors" not in skip:
                if monitors_supported(ctx, cfg):
                    log(f"[{qtype}] drain with {MONITORS:,} running monitors: create them, prefill {n:,}")
                    r["monitors"] = drain(ctx, cfg, broker, standalone, n, f"monitors-{qtype}",
                                          with_monitors=MONITORS, timeout=ctx.monitors_timeout)
                    log(f"[{qtype}]   {fnum(r['monitors']['rate'])} msg/s")
                else:
                    r["monitors"] = None
            if "mix" not in skip:
                log(f"[{qtype}] drain of a realistic mix of all five types, {n:,} sent")
                r["mix"] = mix_drain(ctx, cfg, broker, redis, n, f"mix-{qtype}")
                log(f"[{qtype}]   {fnum(r['mix']['rate'])} msg/s sent, {fnum(r['mix']['handled_rate'])} handled; "
                    f"{r['mix']['idem_keys']} of {r['mix']['handled_expected']} applied")
        except Exception as e:  # report what ran; the table says what failed
            r["error"] = f"{type(e).__name__}: {e}"
            log(f"[{qtype}] FAILED: {r['error']}")
        finally:
            broker.close()
            delete_vhost(vhost)
            if base_broker is not None:
                base_broker.close()
            if base is not None:
                delete_vhost(base_vhost)
    if ctx.cluster_error:
        results["_cluster"] = {"error": ctx.cluster_error}
    elif ctx.cluster_url and "cluster" not in skip:
        try:
            results["_cluster"] = cluster_bench(ctx, standalone, n)
        except Exception as e:  # noqa: BLE001 - reported under the table
            results["_cluster"] = {"error": f"{type(e).__name__}: {e}"}
            log(f"[cluster] FAILED: {results['_cluster']['error']}")
    redis("FLUSHDB")
    redis.close()
    if "micro" not in skip:
        log("bench-micro: isolated per-message costs")
        p = run([ctx.micro, "--schema", os.path.join(ROOT, "schemas", "quote_update.schema.json"),
                 "--iterations", "50000"], check=False, timeout=300)
        results["_micro"] = p.stdout.strip() if p.returncode == 0 else f"bench-micro failed: {p.stderr.strip()}"
    with open(os.path.join(ctx.work, "results.json"), "w") as f:
        json.dump({"info": info, "n": n,
                   "results": {k: {str(kk): vv for kk, vv in v.items()} if isinstance(v, dict) else v
                               for k, v in results.items()}}, f, indent=2, default=str)
    report(ctx, info, n, types, rates, results, base is not None)


def report(ctx, info, n, types, rates, results, with_baseline):
    rows = []  # (measurement, {type: cell}, target)

    def row(label, fn, target=""):
        cells = {}
        for t in types:
            try:
                cells[t] = fn(results[t])
            except Exception:  # noqa: BLE001 - a missing measurement is a cell, not a crash
                cells[t] = "not run" if "error" not in results[t] else "failed"
        rows.append((label, cells, target))

    def ratio(r, key="drain", ceiling="ceiling"):
        paired = r.get("paired", {}).get("multi" if ceiling == "ceiling_multi" else "each")
        if key == "drain" and paired is not None:
            return paired
        return r[key]["rate"] / r[ceiling]["msgs_per_s"]

    def redis_us(r, key="drain"):
        """Redis CPU per quote: the median over the runs, with their range."""
        v = [per_quote(d)["cpu_us"] for d in r.get(key + "_runs", [r[key]])]
        return f"{median(v):.2f}" + (f" ({min(v):.2f}–{max(v):.2f})" if len(v) > 1 else "")

    def spread(d, key):
        lo, hi = d["range"]
        return fnum(d[key]) + (f" ({fnum(lo)}–{fnum(hi)})" if ctx.repeat > 1 else "")

    row(f"ceiling: bare rabbitmq-c drain, prefetch {PREFETCH}, multiple-ack every 250 (msg/s)",
        lambda r: spread(r["ceiling_multi"], "msgs_per_s"))
    row("ceiling variant: ack each (msg/s)", lambda r: spread(r["ceiling"], "msgs_per_s"))
    row("prefill: eventctl publish, one per symbol in parallel, confirms (msg/s)",
        lambda r: fnum(r["drain"]["fill_rate"]))
    row("eventd hot-path drain, quote_update (msg/s)", lambda r: spread(r["drain"], "rate") +
        (f" (timed out: {r['drain']['done']:,} of {n:,})" if r["drain"]["timed_out"] else ""))
    row("eventd / multiple-ack ceiling", lambda r: f"{ratio(r, ceiling='ceiling_multi'):.2f}", "≥ 0.5 (quorum)")
    row("eventd / ack-each ceiling", lambda r: f"{ratio(r):.2f}")
    row("eventd start → first effect (s)", lambda r: f"{r['drain']['startup_s']:.2f}")
    row("Redis CPU per quote: INFO cpu sys+user Δ / quotes (µs)",
        lambda r: redis_us(r), T_REDIS_US)
    row("… in script calls per quote, commandstats usec (FCALL/EVALSHA, inner commands included; of which inner)",
        lambda r: f"{per_quote(r['drain'])['script_us']:.2f} ({per_quote(r['drain'])['inner_us']:.2f})")
    row("… commands per quote (total_commands_processed Δ, inside functions included)",
        lambda r: f"{per_quote(r['drain'])['commands']:.2f}")
    row("… inside the functions, per quote: calls × and commandstats usec, by command",
        lambda r: inner_cell(per_quote(r["drain"])))
    row("… script calls per quote (FCALL or EVALSHA; < 1 = batched)",
        lambda r: f"{per_quote(r['drain'])['script_calls']:.4f} (1 per {1 / per_quote(r['drain'])['script_calls']:.0f})")
    row(f"drain over {SPREAD_SYMBOLS} symbols, about one quote of each per call (msg/s; / multiple-ack ceiling)",
        lambda r: f"{fnum(r['spread']['rate'])}; {r['spread']['rate'] / r['ceiling_multi']['msgs_per_s']:.2f}")
    row("  … Redis CPU per quote (µs); commands per quote",
        lambda r: f"{per_quote(r['spread'])['cpu_us']:.2f}; {per_quote(r['spread'])['commands']:.2f}", T_REDIS_US)
    row("Redis round trips per msg: eventd's requests (MONITOR, separate drain)",
        lambda r: f"{sum(r['accounting']['monitor']['top'].values()) / r['accounting']['n']:.3f} (" +
        ", ".join(f"{c} {v / r['accounting']['n']:.3f}" for c, v in
                  sorted(r["accounting"]["monitor"]["top"].items(), key=lambda kv: -kv[1])[:4]) + ")",
        "≤ 1")
    row("Redis socket reads per quote (total_reads_processed Δ; < 1 = pipelined)",
        lambda r: f"{per_quote(r['drain'])['reads']:.3f}")
    row(f"eventd peak RSS at prefetch {PREFETCH}, VmHWM (MiB)", lambda r: f"{r['drain']['hwm_kib'] / 1024:.1f}", T_RSS)
    row("eventd CPU s per 100,000 msgs (utime+stime)", lambda r: f"{per_100k(r['drain']['cpu_s'], n):.2f}")
    row("eventd instructions per quote (callgrind, user space: drains of N and 3 N, the difference / 2 N)",
        lambda r: fnum(r["instructions"]) if isinstance(r["instructions"], (int, float)) else r["instructions"])
    row("Redis instructions per quote (callgrind, a scratch Redis, full calls: drains of N and 3 N, the difference / 2 N)",
        lambda r: fnum(r["redis_instructions"]))
    row("eventd CPU while draining (% of one core)",
        lambda r: f"{100 * r['drain']['cpu_s'] / r['drain']['seconds']:.0f} %")
    row("RabbitMQ CPU s per 100,000 msgs, eventd drain (ceiling drain, multiple-ack)",
        lambda r: f"{per_100k(r['drain']['server_cpu']['rabbitmq'], n):.2f} "
                  f"({per_100k(r['ceiling_multi']['server_cpu']['rabbitmq'], n):.2f})")
    for rate in rates:
        row(f"latency publish → effect @ {rate:,} msg/s", lambda r, rate=rate: lat_cell(r["latency"][rate], ctx.grace_s),
            T_P99 if rate == 2000 else "")
        row(f"  … reference without eventd: bench-ceiling SETs each message's key, then acks, @ {rate:,} msg/s",
            lambda r, rate=rate: lat_cell(r["latency_reference"][rate], ctx.grace_s))
    mon_label = f"drain with {MONITORS:,} running monitors (2,000 rules, none crossing) (msg/s)"
    row(mon_label, lambda r: "not implemented yet" if r["monitors"] is None else
        fnum(r["monitors"]["rate"]) + (f" (stopped after {ctx.monitors_timeout:g} s: {r['monitors']['done']:,} of {n:,})"
                                       if r["monitors"]["timed_out"] else ""))
    row("  … / multiple-ack ceiling (/ ack-each)", lambda r: "not implemented yet" if r["monitors"] is None else
        f"{ratio(r, 'monitors', 'ceiling_multi'):.2f} ({ratio(r, 'monitors'):.2f})")
    row("  … Redis CPU per quote (µs); commands per quote", lambda r: "not implemented yet" if r["monitors"] is None else
        f"{per_quote(r['monitors'])['cpu_us']:.2f}; {per_quote(r['monitors'])['commands']:.2f}")
    mix_label = "drain of a realistic mix of all five types (sent msg/s; handled incl. derived)"
    row(mix_label, lambda r: "not run" if r.get("mix") is None else
        f"{fnum(r['mix']['rate'])}; {fnum(r['mix']['handled_rate'])} handled"
        + ("" if r["mix"]["idem_keys"] == r["mix"]["handled_expected"] and r["mix"]["dead_lettered"] == 0 else
           f" (CHECK: {r['mix']['idem_keys']} of {r['mix']['handled_expected']} applied, "
           f"{r['mix']['dead_lettered']} dead-lettered)"))
    row("  … sent / multiple-ack ceiling", lambda r: f"{ratio(r, 'mix', 'ceiling_multi'):.2f}")

    print()
    print(f"# eventd benchmarks — {info['date']}")
    print(f"nproc {info['nproc']} · CPU {info['cpu']} · commit {info['commit']} · {info['versions']} · "
          f"load average at start {info['load'][0]:.2f}")
    print(f"N = {n:,} per drain" + (f" · median of {ctx.repeat} runs (range)" if ctx.repeat > 1 else "") +
          f" · prefetch {PREFETCH} · latency {ctx.latency_s:g} s per rate after 1 s warm-up · "
          f"raw results: {ctx.work}/results.json")
    print()
    print("| measurement | " + " | ".join(types) + " | target |")
    print("|---|" + "---|" * len(types) + "---|")
    for label, cells, target in rows:
        print(f"| {label} | " + " | ".join(cells[t] for t in types) + f" | {target} |")
    print()
    if types and "drain" in results.get(types[0], {}):
        print(f"Redis CPU per quote has the bench's DBSIZE polls subtracted: {results['_poll_cost_us']:.1f} µs of "
              f"Redis CPU per 5 ms poll interval, measured before the drains (about "
              f"{per_quote(results[types[0]]['drain'])['poll_us']:.2f} µs per quote in the {types[0]} drain). "
              f"commandstats usec is wall-clock time inside the call: on a loaded machine it exceeds the CPU time.")
    print(f"Load average at the end: {os.getloadavg()[0]:.2f}.")

    if with_baseline:
        baseline_table(ctx, types, results, n)
    if "_cluster" in results:
        cluster_table(results, types)
    if "_micro" in results:
        print()
        print("Hot-path pieces in isolation (build/bench/bench-micro, same RapidJSON calls as eventd):")
        for line in results["_micro"].splitlines():
            print(f"    {line}")
    for t in types:
        r = results[t]
        notes = []
        if "error" in r:
            notes.append(f"error: {r['error']}")
        for key in ("drain", "baseline", "accounting", "monitors"):
            notes += drain_problems(key, r.get(key))
        for note in notes:
            print(f"! {t}: {note}")
    c = results.get("_cluster", {})
    if "error" in c:
        print(f"! cluster: error: {c['error']}")
    for key in ("standalone", "one", "spread"):
        for note in drain_problems(key, c.get(key)):
            print(f"! cluster: {note}")


def drain_problems(key, d):
    if d and (d["exit_code"] != 0 or d["left_in_queue"] or (not d["timed_out"] and d["idem_keys"] != d["n"])):
        return [f"{key}: eventd exit {d['exit_code']}, {d['left_in_queue']} left in queue, "
                f"{d['idem_keys']} idempotency keys for {d['n']} messages (see {d['log']})"]
    return []


def baseline_table(ctx, types, results, n):
    """This build and the baseline, drained alternately on the same servers."""
    rows = []

    def row(label, fn, fmt, target=""):
        for t in types:
            r = results[t]
            try:
                a = median([fn(d) for d in r.get("drain_runs", [r["drain"]])])
                b = median([fn(d) for d in r.get("baseline_runs", [r["baseline"]])])
                rel = r["paired"]["baseline"] if label.startswith("drain,") else (a / b) if b else float("nan")
                rows.append((label, t, fmt(a), fmt(b), f"{rel:.2f}", target))
            except Exception:  # noqa: BLE001 - a missing measurement is a cell
                rows.append((label, t, "n/a", "n/a", "", target))

    row("drain, quote_update (msg/s)", lambda d: d["rate"], fnum)
    for t in types:  # over the type's own ceiling
        r = results[t]
        try:
            a = median([rate_of(x) / rate_of(y) for x, y in zip(r["drain_runs"], r["ceiling_multi_runs"])])
            b = median([rate_of(x) / rate_of(y) for x, y in zip(r["baseline_runs"], r["ceiling_multi_runs"])])
            rows.append(("drain / multiple-ack ceiling", t, f"{a:.2f}", f"{b:.2f}", f"{a / b:.2f}", "≥ 0.5 (quorum)"))
        except Exception:  # noqa: BLE001
            pass
    row("Redis CPU per quote, INFO cpu Δ (µs)", lambda d: per_quote(d)["cpu_us"], lambda x: f"{x:.2f}", T_REDIS_US)
    row("… in script calls, commandstats usec per quote (µs)", lambda d: per_quote(d)["script_us"],
        lambda x: f"{x:.2f}")
    row("… in the commands inside them (µs)", lambda d: per_quote(d)["inner_us"], lambda x: f"{x:.2f}")
    row("Redis commands per quote (inside scripts included)", lambda d: per_quote(d)["commands"],
        lambda x: f"{x:.2f}")
    row("script calls per quote (FCALL / EVALSHA)", lambda d: per_quote(d)["script_calls"], lambda x: f"{x:.4f}")
    row("Redis socket reads per quote", lambda d: per_quote(d)["reads"], lambda x: f"{x:.3f}")
    row("eventd CPU s per 100,000 msgs", lambda d: per_100k(d["cpu_s"], n), lambda x: f"{x:.2f}")
    row("eventd peak RSS (MiB)", lambda d: d["hwm_kib"] / 1024, lambda x: f"{x:.1f}", T_RSS)
    for t in types:  # counted once per build, not per run
        a, b = results[t].get("instructions"), results[t].get("baseline_instructions")
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            rows.append(("eventd instructions per quote (callgrind)", t, fnum(a), fnum(b), f"{a / b:.2f}", ""))
        a, b = results[t].get("redis_instructions"), results[t].get("baseline_redis_instructions")
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            rows.append(("Redis instructions per quote (callgrind, scratch Redis)", t, fnum(a), fnum(b), f"{a / b:.2f}",
                         ""))
    order = {t: i for i, t in enumerate(types)}
    rows.sort(key=lambda x: order[x[1]])
    print()
    print(f"This build against {ctx.baseline_rev}, drained one after the other on the same servers"
          + (f" (medians of {ctx.repeat} runs; drain ratios: the median of each run's ratio)"
             if ctx.repeat > 1 else "") + ":")
    print()
    print(f"| measurement | queues | this build | {ctx.baseline_rev} | this / baseline | target |")
    print("|---|---|---|---|---|---|")
    for label, t, a, b, rel, target in rows:
        print(f"| {label} | {t} | {a} | {b} | {rel} | {target} |")
    for t in types:
        try:
            print(f"\n{t}, {ctx.baseline_rev} inside its scripts, per quote: {inner_cell(per_quote(results[t]['baseline']))}")
        except KeyError:
            pass


def cluster_table(results, types):
    c = results["_cluster"]
    if "error" in c and "spread" not in c:
        return
    cols = ("standalone", "one", "spread")
    heads = ("standalone Redis", "Redis Cluster, 1 master serves all", "Redis Cluster, 3 masters")
    ceil = None
    for t in types:
        if t == "quorum" and "ceiling_multi" in results.get(t, {}):
            ceil = results[t]["ceiling_multi"]["msgs_per_s"]
    rows = []

    def row(label, fn, target=""):
        cells = []
        for k in cols:
            try:
                cells.append(fn(c[k]))
            except Exception:  # noqa: BLE001
                cells.append("n/a")
        rows.append((label, cells, target))

    def masters_cell(d):
        parts = []
        for m in d["redis_masters"]:
            parts.append(f"{1e6 * m['cpu_s'] / m['keys']:.2f}" if m["keys"] else f"idle ({1e3 * m['cpu_s']:.0f} ms)")
        return " / ".join(parts)

    many = len(c.get("spread_runs", [])) > 1
    row(f"drain, quote_update over {CLUSTER_SYMBOLS} symbols, quorum (msg/s)", lambda d: fnum(d["rate"]) +
        (f" ({fnum(d['range'][0])}–{fnum(d['range'][1])})" if many else ""))
    row("… / multiple-ack ceiling (quorum, above)", lambda d: f"{d['rate'] / ceil:.2f}", "≥ 0.5")
    row("Redis CPU per quote, all masters (µs)", lambda d: f"{d.get('cpu_median', per_quote(d)['cpu_us']):.2f}"
        + (" (" + "–".join(f"{x:.2f}" for x in d["cpu_range"]) + ")" if many else ""), T_REDIS_US)
    row("Redis CPU per quote it served, per master (µs; master 1 / 2 / 3)", masters_cell)
    row("replicas' CPU per quote (µs)", lambda d: f"{1e6 * d['redis_replicas_cpu_s'] / d['done']:.2f}"
        if d["nodes"] == "cluster" else "—")
    row("Redis commands per quote (inside functions included)", lambda d: f"{per_quote(d)['commands']:.2f}")
    row("FCALLs per quote; rejected FCALLs per quote (CROSSSLOT: a batch over several slots)",
        lambda d: f"{per_quote(d)['script_calls']:.4f}; {per_quote(d)['script_rejected']:.4f}")
    row("eventd CPU s per 100,000 msgs", lambda d: f"{per_100k(d['cpu_s'], d['done']):.2f}")
    print()
    print(f"Redis Cluster (scripts/dev-services start-redis-cluster: 3 masters, 1 replica each, on this machine), "
          f"the drain of the same quotes against each, one after the other:")
    print()
    print("| measurement | " + " | ".join(heads) + " | target |")
    print("|---|---|---|---|---|")
    for label, cells, target in rows:
        print(f"| {label} | " + " | ".join(cells) + f" | {target} |")
    try:
        print(f"\n3 masters / 1 master: {c['paired']['spread/one']:.2f} × the drain; "
              f"cluster (3 masters) / standalone: {c['paired']['spread/standalone']:.2f}"
              + (" (medians of the ratios of runs made one after the other)." if many else "."))
    except (KeyError, ZeroDivisionError):
        pass


if __name__ == "__main__":
    try:
        main()
    finally:
        for ev in STARTED:
            if ev.proc.poll() is None:
                log(f"stopping eventd {ev.pid}")
                ev.stop()
