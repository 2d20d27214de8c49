"""scripts/bench's driver: runs every measurement against the private RabbitMQ and
Redis that scripts/bench started, prints one table row per measurement and, last,
the lines to paste into the README. It prints figures and ratios and never asserts
a wall-clock threshold: targets are printed next to the figures.

Run through scripts/bench (which builds, starts and stops the servers). Needs the
variables of $EVENTD_DEV_DIR/env and Debian's python3 (pika).

How each figure is measured (also in scripts/bench --help):
  ceiling      bench-ceiling (bench/ceiling.cpp): a bare rabbitmq-c consumer drains
               N pre-filled persistent messages, prefetch 500, one ack per message;
               clock from its first delivery to its last ack.
  drain        the same N quote_update messages pre-filled (eventctl publish, 5
               symbols, distinct message ids) while eventd is stopped; then eventd is
               started and the bench polls Redis DBSIZE every 5 ms on one persistent
               connection (O(1), ~1 us of Redis time per poll; eventd itself is not
               touched). Every message adds a key (its idempotency key), so
               the clock runs from the first poll that sees progress (minus half a
               poll interval) to the first poll that sees the final key count.
               Completion: the count has not moved for 1 s and the queue has no
               ready messages; afterwards eventd is stopped (SIGTERM), the queue must
               be empty and SCAN must find exactly N idempotency keys.
  redis        INFO stats / commandstats deltas over the timed drain, less the
               bench's own DBSIZE/INFO calls; and a separate small drain under
               MONITOR that counts eventd's own requests (round trips) apart from
               the commands its Lua scripts run ("lua" client in MONITOR).
  rss / cpu    VmHWM from /proc/PID/status and utime+stime from /proc/PID/stat of
               the eventd process, read right before it is stopped.
  latency      bench-latency (bench/latency.cpp): fixed-rate publisher + Redis
               keyspace notification (SET of eventd:idem:{<SYMBOL>}:<message_id>) subscriber in
               one process, one monotonic clock.
"""
import argparse
import base64
import concurrent.futures
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
PREFETCH = 500
MONITORS = 1000


def history_key(symbol):
    """A symbol's price history (include/eventd/keys.hpp; the bench's symbols need no encoding)."""
    return "eventd:history:{" + symbol + "}"


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- Redis (RESP)

class RedisError(Exception):
    pass


class Redis:
    """One persistent connection; counts the commands it sends (they show up in
    Redis's own statistics and are subtracted from the deltas)."""

    def __init__(self):
        self.sock = None
        self.sent = 0
        self._connect()

    def _connect(self):
        self.sock = socket.create_connection(("127.0.0.1", REDIS_PORT), timeout=30)
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
            self.sent += 1
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
        """INFO stats + commandstats as {field: value} and {command: calls}."""
        text = self("INFO", "stats", "commandstats")
        stats, calls = {}, {}
        for line in text.splitlines():
            if line.startswith("cmdstat_"):
                name, rest = line[len("cmdstat_"):].split(":", 1)
                calls[name] = int(re.search(r"calls=(\d+)", rest).group(1))
            elif ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                stats[k] = v
        return stats, calls

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
    def __init__(self, ctx, cfg, name):
        self.ctx = ctx
        self.log_path = os.path.join(ctx.work, f"{name}.log")
        self.logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen([ctx.eventd, "--config", cfg], env=clean_env(), stdin=subprocess.DEVNULL,
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


def write_config(ctx, vhost, qtype):
    http_port = free_port()
    cfg = {
        "amqp": {"url": amqp_url(vhost), "prefetch": PREFETCH},
        "redis": {"url": f"redis://127.0.0.1:{REDIS_PORT}/0"},
        "topology": {"queues": [{"name": n, "exchange": ex, "bindingKey": key, "type": qtype}
                                for n, ex, key in WORK_QUEUES]},
        "http": {"enabled": True, "listen": f"127.0.0.1:{http_port}"},
        "log": {"level": "info"},
        "shutdown": {"drainTimeoutMs": 5000},
        # The mix drives many notifications for one user: measure handling, not the limit.
        "notify": {"rateLimit": {"perMinute": 1000000, "burst": 1000000}},
    }
    path = os.path.join(ctx.work, f"{vhost}.jsonc")
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
    try:
        mgmt("DELETE", f"vhosts/{vhost}")
    except urllib.error.HTTPError:
        pass
    mgmt("PUT", f"vhosts/{vhost}")
    mgmt("PUT", f"permissions/{vhost}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    cfg, http_port = write_config(ctx, vhost, qtype)
    run([ctx.eventctl, "--config", cfg, "topology", "apply"])
    return cfg, http_port


def prefill(ctx, cfg, broker, n):
    """N quote_update messages, split over the symbols, published in parallel by
    eventctl (so the symbols interleave); returns msg/s of the prefill."""
    # Start from an empty queue: acks a quorum queue lost at a consumer's close come back
    # as ready messages a moment later.
    time.sleep(0.5)
    left = broker.depth(QUOTES)
    if left:
        log(f"prefill: purging {left:,} message(s) left in {QUOTES}")
        broker.purge(QUOTES)
    started = time.monotonic()
    per = [n // len(SYMBOLS) + (1 if i < n % len(SYMBOLS) else 0) for i in range(len(SYMBOLS))]
    procs = []
    for (sym, price, change), count in zip(SYMBOLS, per):
        if count == 0:
            continue
        body = json.dumps({"symbol": sym, "price": price, "change": change})
        procs.append(subprocess.Popen([ctx.eventctl, "--config", cfg, "publish", "quote_update", body,
                                       "--count", str(count)], env=clean_env(), stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    try:
        for p in procs:
            _, err = p.communicate(timeout=600)
            if p.returncode != 0:
                raise RuntimeError(f"eventctl publish exited {p.returncode}: {err.decode().strip()[-300:]}")
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
    idem = redis.count_keys("eventd:idem:*")
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


def drain(ctx, cfg, broker, redis, n, name, with_monitors=0, under_monitor=False, timeout=None):
    """Pre-fill N, start eventd, time it to the last effect. See the module docstring."""
    timeout = timeout or ctx.drain_timeout
    partial = None
    redis.fresh()
    setup_s = start_monitors(ctx, cfg, with_monitors) if with_monitors else 0.0
    fill_rate = prefill(ctx, cfg, broker, n)
    mon = None
    if under_monitor:
        mon_path = os.path.join(ctx.work, f"{name}.monitor")
        mon_out = open(mon_path, "wb")
        mon = subprocess.Popen(["redis-cli", "-p", str(REDIS_PORT), "monitor"], stdout=mon_out,
                               stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while os.path.getsize(mon_path) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)  # "OK" once MONITOR is on
    base_keys = redis("DBSIZE")
    sent_before = redis.sent
    stats0, calls0 = redis.info()
    cpu = ServerCpu()
    ev = Eventd(ctx, cfg, name)
    t_prev, k_prev = ev.started, base_keys
    t_start = t_final = None
    final = base_keys
    stalled_since = None
    polls = 0
    timed_out = False
    sample = None
    try:
        while True:
            time.sleep(POLL_S)
            now = time.monotonic()
            k = redis("DBSIZE")
            polls += 1
            if not ev.alive():
                raise RuntimeError(f"eventd exited with {ev.proc.returncode} during the drain; see {ev.log_path}")
            if k != k_prev:
                if t_start is None:
                    t_start = (t_prev + now) / 2
                final, t_final = k, now
                stalled_since = None
            elif t_start is not None:
                stalled_since = stalled_since or now
                if now - stalled_since >= 1.0 and broker.depth(QUOTES) == 0:
                    break
            if now - ev.started > timeout:
                # Partial: the rate over what was done so far (SCAN before eventd stops).
                timed_out = True
                t_final = now
                partial = redis.count_keys("eventd:idem:*")
                break
            t_prev, k_prev = now, k
        sample = ev.sample()
    finally:
        try:
            stats1, calls1 = redis.info()
            redis.sent_at_info = redis.sent
            server_cpu = cpu.delta()
        finally:
            rc = ev.stop()
            if mon is not None:
                mon.terminate()
                mon.wait(10)
                mon_out.close()
    # Our own commands inside the INFO-to-INFO window: the DBSIZE polls, the SCANs of a
    # partial run and one of the two INFOs (passive declares go to RabbitMQ).
    own = redis.sent_at_info - sent_before - 1
    scans = own - polls - 1
    if t_start is None:
        raise RuntimeError(f"eventd made no progress in {timeout:g} s; see {ev.log_path}")
    idem = redis.count_keys("eventd:idem:*")
    left = broker.depth(QUOTES)
    if left:
        broker.purge(QUOTES)
    secs = t_final - t_start
    done = n if not timed_out else partial
    res = {
        "n": n, "done": done, "timed_out": timed_out, "idem_keys": idem, "left_in_queue": left,
        "exit_code": rc, "seconds": secs, "rate": (done - 1) / secs if secs > 0 else 0.0,
        "startup_s": t_start - ev.started, "fill_rate": fill_rate, "setup_s": setup_s,
        "cpu_s": sample["cpu_s"], "hwm_kib": sample["hwm_kib"], "rss_kib": sample["rss_kib"],
        "server_cpu": server_cpu, "log": ev.log_path,
    }
    dcalls = {c: calls1.get(c, 0) - calls0.get(c, 0) for c in set(calls1) | set(calls0)}
    dcalls["dbsize"] = dcalls.get("dbsize", 0) - polls
    dcalls["info"] = dcalls.get("info", 0) - 1
    dcalls["scan"] = dcalls.get("scan", 0) - scans
    res["redis_calls"] = {c: v for c, v in dcalls.items() if v > 0}
    res["redis_commands"] = int(stats1["total_commands_processed"]) - int(stats0["total_commands_processed"]) - own
    res["redis_reads"] = int(stats1["total_reads_processed"]) - int(stats0["total_reads_processed"]) - own
    res["redis_scripts"] = dcalls.get("evalsha", 0) + dcalls.get("eval", 0)
    if under_monitor:
        res["monitor"] = parse_monitor(mon_path, redis.addr())
    return res


MONITOR_LINE = re.compile(r'^\d+\.\d+ \[\d+ ([^\]]+)\] "([^"]*)"')


def parse_monitor(path, own_addr):
    """Counts top-level requests per client vs. commands run inside Lua scripts."""
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


def latency(ctx, cfg, http_port, qtype, rates):
    ev = Eventd(ctx, cfg, f"latency-{qtype}")
    out = {}
    try:
        ev.wait_ready(http_port)
        for rate in rates:
            p = run([ctx.latency, "--amqp-url", amqp_url(f"bench-{qtype}"), "--redis-port", str(REDIS_PORT),
                     "--rate", str(rate), "--duration-s", str(ctx.latency_s), "--warmup-s", "1",
                     "--grace-s", str(ctx.grace_s), "--symbol", "BENCHLAT"],
                    timeout=ctx.latency_s + ctx.grace_s + 60)
            out[rate] = json.loads(p.stdout)
            if not ev.alive():
                raise RuntimeError(f"eventd exited during the latency run; see {ev.log_path}")
    finally:
        ev.stop()
    return out


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


def main():
    # SIGTERM (scripts/bench's cleanup) unwinds like an exception, so every eventd
    # this driver started is stopped by its finally block.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--latency-s", type=float, default=10)
    ap.add_argument("--grace-s", type=float, default=20)
    ap.add_argument("--drain-timeout", type=float, default=180)
    ap.add_argument("--monitors-timeout", type=float, default=60,
                    help="the drain with monitors stops here and reports the rate so far")
    ap.add_argument("--accounting-n", type=int, default=5000)
    ap.add_argument("--types", default="quorum,classic")
    ap.add_argument("--repeat", type=int, default=1, help="ceiling and drain runs per queue type (median shown)")
    ap.add_argument("--rates", default="2000,10000")
    ap.add_argument("--skip", default="", help="comma list of: ceiling,drain,redis,latency,monitors,mix,micro")
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build"))
    ap.add_argument("--quick", action="store_true")
    ctx = ap.parse_args()
    ctx.work = os.path.join(DEV_DIR, "runs", time.strftime("%Y%m%d-%H%M%S"))
    # A snapshot of the binaries: a rebuild during the run (others share build/) must
    # neither break it nor mix two versions into one table.
    bin_dir = os.path.join(ctx.work, "bin")
    os.makedirs(bin_dir, exist_ok=True)
    for attr, rel in (("eventd", "src/eventd/eventd"), ("eventctl", "src/eventctl/eventctl"),
                      ("ceiling", "bench/bench-ceiling"), ("latency", "bench/bench-latency"),
                      ("micro", "bench/bench-micro")):
        dst = os.path.join(bin_dir, os.path.basename(rel))
        shutil.copy2(os.path.join(ctx.build_dir, rel), dst)
        setattr(ctx, attr, dst)
    skip = set(filter(None, ctx.skip.split(",")))
    types = [t for t in ctx.types.split(",") if t]
    rates = [int(r) for r in ctx.rates.split(",") if r]
    n = ctx.n

    info = header(ctx)
    log(f"N={n:,}, types {types}, logs and raw results in {ctx.work}")
    results = {}
    redis = Redis()
    for qtype in types:
        vhost = f"bench-{qtype}"
        r = results[qtype] = {}
        broker = Broker(vhost)
        try:
            log(f"[{qtype}] vhost {vhost}: topology")
            cfg, http_port = make_vhost(ctx, vhost, qtype)
            # With --repeat K, the ceiling and the drain alternate K times and the
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
                if "drain" not in skip:
                    log(f"[{qtype}] eventd drain{rep}: prefill {n:,}, start eventd, poll DBSIZE")
                    r.setdefault("drain_runs", []).append(drain(ctx, cfg, broker, redis, n, f"drain-{qtype}-{i + 1}"))
                    log(f"[{qtype}]   {fnum(r['drain_runs'][-1]['rate'])} msg/s")
            for key, rate_key in (("ceiling", "msgs_per_s"), ("ceiling_multi", "msgs_per_s"), ("drain", "rate")):
                runs = r.get(key + "_runs")
                if runs:
                    r[key] = sorted(runs, key=lambda x: x[rate_key])[(len(runs) - 1) // 2]
                    r[key]["range"] = (min(x[rate_key] for x in runs), max(x[rate_key] for x in runs))
            if "redis" not in skip:
                m = min(ctx.accounting_n, n)
                log(f"[{qtype}] Redis accounting: drain of {m:,} under MONITOR (not timed)")
                r["accounting"] = drain(ctx, cfg, broker, redis, m, f"accounting-{qtype}", under_monitor=True)
            if "latency" not in skip:
                log(f"[{qtype}] latency at {rates} msg/s, {ctx.latency_s:g} s each (+1 s warm-up)")
                redis.fresh()
                r["latency"] = latency(ctx, cfg, http_port, qtype, rates)
                broker.purge(QUOTES)
            if "monitors" not in skip:
                if monitors_supported(ctx, cfg):
                    log(f"[{qtype}] drain with {MONITORS:,} running monitors: create them, prefill {n:,}")
                    r["monitors"] = drain(ctx, cfg, broker, redis, n, f"monitors-{qtype}", with_monitors=MONITORS,
                                          timeout=ctx.monitors_timeout)
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
            try:
                mgmt("DELETE", f"vhosts/{vhost}")
            except (OSError, urllib.error.URLError):
                pass
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
    report(ctx, info, n, types, rates, results)


def report(ctx, info, n, types, rates, results):
    rows = []  # (measurement, {type: cell}, target)

    def row(label, fn, target=""):
        cells = {}
        for t in types:
            try:
                cells[t] = fn(results[t])
            except Exception:  # noqa: BLE001 - a missing measurement is a cell, not a crash
                cells[t] = "not run" if "error" not in results[t] else "failed"
        rows.append((label, cells, target))

    def ratio(r, key="drain"):
        return r[key]["rate"] / r["ceiling"]["msgs_per_s"]

    def spread(d, key):
        lo, hi = d["range"]
        return fnum(d[key]) + (f" ({fnum(lo)}–{fnum(hi)})" if ctx.repeat > 1 else "")

    row("ceiling: bare rabbitmq-c drain, prefetch 500, ack each (msg/s)", lambda r: spread(r["ceiling"], "msgs_per_s"))
    row("ceiling variant: multiple-ack every 250 (msg/s)", lambda r: spread(r["ceiling_multi"], "msgs_per_s"))
    row("prefill: eventctl publish, 5 in parallel, confirms (msg/s)", lambda r: fnum(r["drain"]["fill_rate"]))
    row("eventd hot-path drain, quote_update (msg/s)", lambda r: spread(r["drain"], "rate") +
        (f" (timed out: {r['drain']['done']:,} of {n:,})" if r["drain"]["timed_out"] else ""))
    row("eventd / ceiling (ack each)", lambda r: f"{ratio(r):.2f}", "≥ 0.80")
    row("eventd start → first effect (s)", lambda r: f"{r['drain']['startup_s']:.2f}")
    row("Redis round trips per msg: eventd's requests (MONITOR, separate drain)",
        lambda r: f"{sum(r['accounting']['monitor']['top'].values()) / r['accounting']['n']:.3f} (" +
        ", ".join(f"{c} {v / r['accounting']['n']:.3f}" for c, v in
                  sorted(r["accounting"]["monitor"]["top"].items(), key=lambda kv: -kv[1])[:4]) + ")",
        "≤ 1")
    row("Redis script calls per msg (cmdstat evalsha+eval Δ)",
        lambda r: f"{r['drain']['redis_scripts'] / n:.3f}")
    row("Redis commands per msg (total_commands_processed Δ, incl. inside Lua)",
        lambda r: f"{r['drain']['redis_commands'] / n:.2f}")
    row("Redis socket reads per msg (total_reads_processed Δ; < 1 = pipelined)",
        lambda r: f"{r['drain']['redis_reads'] / n:.3f}")
    row("eventd peak RSS, VmHWM (MiB)", lambda r: f"{r['drain']['hwm_kib'] / 1024:.1f}", "≤ 32 MiB")
    row("eventd CPU s per 100,000 msgs (utime+stime)", lambda r: f"{per_100k(r['drain']['cpu_s'], n):.2f}")
    row("eventd CPU while draining (% of one core)",
        lambda r: f"{100 * r['drain']['cpu_s'] / r['drain']['seconds']:.0f} %")
    row("RabbitMQ CPU s per 100,000 msgs, eventd drain (ceiling drain)",
        lambda r: f"{per_100k(r['drain']['server_cpu']['rabbitmq'], n):.2f} "
                  f"({per_100k(r['ceiling']['server_cpu']['rabbitmq'], n):.2f})")
    row("Redis CPU s per 100,000 msgs, eventd drain", lambda r: f"{per_100k(r['drain']['server_cpu']['redis'], n):.2f}")
    for rate in rates:
        row(f"latency publish → effect @ {rate:,} msg/s", lambda r, rate=rate: lat_cell(r["latency"][rate], ctx.grace_s),
            "p99 ≤ 10 ms" if rate == 2000 else "")
    mon_label = f"drain with {MONITORS:,} running monitors (2,000 rules, none crossing) (msg/s)"
    row(mon_label, lambda r: "not implemented yet" if r["monitors"] is None else
        fnum(r["monitors"]["rate"]) + (f" (stopped after {ctx.monitors_timeout:g} s: {r['monitors']['done']:,} of {n:,})"
                                       if r["monitors"]["timed_out"] else ""))
    row("  … / ceiling", lambda r: "not implemented yet" if r["monitors"] is None else f"{ratio(r, 'monitors'):.2f}")
    row("  … Redis commands per msg (incl. inside Lua)", lambda r: "not implemented yet" if r["monitors"] is None else
        f"{r['monitors']['redis_commands'] / max(r['monitors']['done'], 1):.1f}")
    row("  … Redis CPU s per 100,000 msgs", lambda r: "not implemented yet" if r["monitors"] is None else
        f"{per_100k(r['monitors']['server_cpu']['redis'], r['monitors']['done']):.2f}")
    mix_label = "drain of a realistic mix of all five types (sent msg/s; handled incl. derived)"
    row(mix_label, lambda r: "not run" if r.get("mix") is None else
        f"{fnum(r['mix']['rate'])}; {fnum(r['mix']['handled_rate'])} handled"
        + ("" if r["mix"]["idem_keys"] == r["mix"]["handled_expected"] and r["mix"]["dead_lettered"] == 0 else
           f" (CHECK: {r['mix']['idem_keys']} of {r['mix']['handled_expected']} applied, "
           f"{r['mix']['dead_lettered']} dead-lettered)"))

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
        for key in ("drain", "accounting", "monitors"):
            d = r.get(key)
            if d and (d["exit_code"] != 0 or d["left_in_queue"] or (not d["timed_out"] and d["idem_keys"] != d["n"])):
                notes.append(f"{key}: eventd exit {d['exit_code']}, {d['left_in_queue']} left in queue, "
                             f"{d['idem_keys']} idempotency keys for {d['n']} messages (see {d['log']})")
        for note in notes:
            print(f"! {t}: {note}")

    # The lines to paste into the README.
    def cell(label_start, t):
        for label, cells, _ in rows:
            if label.startswith(label_start):
                return cells[t]
        return "n/a"

    ts = " / ".join(types)
    print()
    print("README (paste under \"## Benchmarks\"):")
    print()
    print(f"`scripts/bench` on {info['date'][:10]}, {info['nproc']} × {info['cpu']}, commit {info['commit']}, "
          f"N = {n:,}, prefetch {PREFETCH}; figures are {ts} queues. Targets in brackets.")
    print()

    def both(label_start, first_word=False):
        cells = [cell(label_start, t) for t in types]
        if first_word:
            cells = [c.split(" ")[0] if c[:1].isdigit() else c for c in cells]
        return " / ".join(cells)

    print(f"- Hot-path drain (quote_update): {both('eventd hot-path drain')} msg/s = "
          f"{both('eventd / ceiling')} × the bare rabbitmq-c ceiling of {both('ceiling: bare')} msg/s [≥ 0.8].")
    print(f"- Redis: {both('Redis round trips', True)} round trips per message [≤ 1]; "
          f"{both('Redis commands per msg (total')} commands per message including those inside the Lua script.")
    print(f"- eventd peak RSS {both('eventd peak RSS')} MiB [≤ 32 MiB]; CPU {both('eventd CPU s per')} s "
          f"per 100,000 messages.")
    for rate in rates:
        label = f"latency publish → effect @ {rate:,}"
        print(f"- Latency publish → effect at {rate:,} msg/s: {both(label)}" +
              (" [p99 ≤ 10 ms]." if rate == 2000 else "."))
    print(f"- With {MONITORS:,} running monitors: {both(mon_label[:30])} msg/s "
          f"({both('  … / ceiling')} × ceiling).")
    print(f"- Realistic mix of all five types (60 % quotes): {both(mix_label[:30])} msg/s sent.")


if __name__ == "__main__":
    try:
        main()
    finally:
        for ev in STARTED:
            if ev.proc.poll() is None:
                log(f"stopping eventd {ev.pid}")
                ev.stop()
