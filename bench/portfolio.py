"""scripts/bench-portfolio's driver: portfolio checks per second with many running
monitors, and what they cost Redis. Prints one row per figure and, last, the lines for
the README; asserts nothing. Needs the variables of $EVENTD_DEV_DIR/env (the private
servers scripts/bench-portfolio started) and Debian's python3 (pika is not needed).

Set-up: S symbols with a quote each (written as quote_update stores them); M monitors
started with `eventctl monitor start` (P positions each, with a costBasis, drawn from
the S symbols; four portfolio rules each: portfolio_value_below, portfolio_change_pct_below,
position_pnl_pct_below, quote_stale, none of them true, so nothing fires and the figures
are those of the checks themselves, not of alert delivery); checkIntervalMs I. One
eventd runs throughout; a first round gives every monitor its state.

  burst       every monitor made due now (between two rounds, none claimed): the clock
              runs until every member is rescheduled (polling ZCOUNT and HLEN of the 16
              shards every 20 ms), so it includes up to one pollMs before the first
              claim; checks/s = M / that time, median of R rounds. Redis: INFO cpu
              (used_cpu_sys + used_cpu_user) and INFO commandstats deltas over the
              rounds, the bench's own polls subtracted, per check (commands inside
              functions included). eventd's CPU from /proc/PID/stat.
  steady      the due times spread at random over one interval, as monitors started at
              different times are; for T seconds: checks applied per second (eventd's
              /metrics) against the demand M / I, Redis and eventd CPU in % of one core,
              and the lag: members due more than 1 s ago and not claimed, sampled.
  round trips MONITOR for a few seconds of the steady state: eventd's own requests per
              check (what crosses the network; a batched FCALL counts once), apart from
              the commands run inside its functions ("lua" client).
"""
import argparse
import datetime
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ENV = os.environ
AMQP_PORT = int(ENV["EVENTD_DEV_AMQP_PORT"])
MGMT_PORT = int(ENV["EVENTD_DEV_MGMT_PORT"])
REDIS_PORT = int(ENV["EVENTD_DEV_REDIS_PORT"])
SHARDS = 16


class Redis:
    """One persistent RESP connection."""

    def __init__(self, port=REDIS_PORT):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.f = self.sock.makefile("rb")

    def __call__(self, *args):
        self.send(args)
        return self.reply()

    def send(self, args):
        parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
        self.sock.sendall(b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts))

    def pipeline(self, commands):
        for c in commands:
            self.send(c)
        return [self.reply() for _ in commands]

    def reply(self):
        line = self.f.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.f.read(n + 2)[:-2].decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise RuntimeError(f"unexpected reply {line!r}")

    def cpu(self):
        text = self("INFO", "cpu")
        v = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        return float(v["used_cpu_sys"]) + float(v["used_cpu_user"])

    def calls(self):
        out = {}
        for line in self("INFO", "commandstats").splitlines():
            if line.startswith("cmdstat_"):
                name, rest = line[len("cmdstat_"):].split(":", 1)
                out[name] = int(re.search(r"calls=(\d+)", rest).group(1))
        return out


def schedule(shard):
    return f"eventd:schedule:{{s{shard}}}"


def proc_cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = tempfile.mkdtemp(prefix="eventd-bench-portfolio-")
        self.eventd = os.path.join(args.build_dir, "src", "eventd", "eventd")
        self.eventctl = os.path.join(args.build_dir, "src", "eventctl", "eventctl")
        self.http = free_port()
        self.config = os.path.join(self.work, "eventd.jsonc")
        with open(self.config, "w") as f:
            json.dump({"http": {"enabled": True, "listen": f"127.0.0.1:{self.http}"}, "log": {"level": "warn"},
                       "notify": {"channels": {"email": {"sink": "file", "path": os.path.join(self.work, "e.jsonl")}}}},
                      f)
        self.env = {k: v for k, v in ENV.items() if not k.startswith("EVENTD_") or k.startswith("EVENTD_DEV_")}
        self.env.update(EVENTD_AMQP_URL=f"amqp://guest:guest@127.0.0.1:{AMQP_PORT}/%2f",
                        EVENTD_REDIS_URL=f"redis://127.0.0.1:{REDIS_PORT}/0", EVENTD_CONFIG=self.config)
        self.redis = Redis()
        self.proc = None
        self.rows = []

    # ------------------------------------------------------------ eventd
    def start_eventd(self):
        self.log = open(os.path.join(self.work, f"eventd-{len(self.rows)}.log"), "ab")
        self.proc = subprocess.Popen([self.eventd, "--config", self.config], env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"eventd exited {self.proc.returncode}")
            time.sleep(0.05)
        raise RuntimeError("eventd not ready in 60 s")

    def stop_eventd(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def metric(self, name):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.rsplit(" ", 1)[1])
        return 0.0

    # ------------------------------------------------------------ set-up
    def setup(self, monitors, interval_ms):
        a = self.args
        rng = random.Random(7)
        symbols = [f"S{i:04d}" for i in range(a.symbols)]
        now = int(time.time() * 1000)
        # Stored quotes as quote_update writes them (include/eventd/stored_quote.hpp).
        self.redis.pipeline([("SET", f"eventd:quote:{{{s}}}", f"{now} {100 + i % 50} 0.5")
                             for i, s in enumerate(symbols)])
        started = time.monotonic()
        procs, users = [], []
        for u in range(monitors):
            held = rng.sample(symbols, a.positions)
            spec = {"rules": [{"alertId": 1, "condition": "portfolio_value_below", "threshold": 1},
                              {"alertId": 2, "condition": "portfolio_change_pct_below", "threshold": -50},
                              {"alertId": 3, "symbol": held[0], "condition": "position_pnl_pct_below", "threshold": -90},
                              {"alertId": 4, "symbol": held[0], "condition": "quote_stale", "thresholdSec": 86400}],
                    "channels": ["push"], "checkIntervalMs": interval_ms,
                    "positions": [{"symbol": s, "quantity": 1 + rng.randrange(100), "costBasis": 90 + rng.randrange(20)}
                                  for s in held]}
            user = f"bench-{u}"
            users.append(user)
            procs.append(subprocess.Popen([self.eventctl, "monitor", "start", user, json.dumps(spec)], env=self.env,
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL))
            if len(procs) >= 8:
                for p in procs:
                    if p.wait() != 0:
                        raise RuntimeError("eventctl monitor start failed")
                procs = []
        for p in procs:
            if p.wait() != 0:
                raise RuntimeError("eventctl monitor start failed")
        return users, time.monotonic() - started

    def all_due_now(self):
        """Every member of every shard due now (none is claimed: all are due in an hour)."""
        now = int(time.time() * 1000)
        members = self.redis.pipeline([("ZRANGE", schedule(s), 0, -1) for s in range(SHARDS)])
        self.redis.pipeline([("ZADD", schedule(s), *[x for u in m for x in (now, u)])
                             for s, m in enumerate(members) if m])
        return now

    def outstanding(self, before_ms):
        replies = self.redis.pipeline([("ZCOUNT", schedule(s), "-inf", before_ms) for s in range(SHARDS)])
        return sum(replies)

    # ------------------------------------------------------------ measurements
    def run(self):
        """One set-up, one eventd: burst rounds, then the steady state, then MONITOR."""
        a = self.args
        interval = a.interval_ms
        self.redis("FLUSHALL")
        _, setup_s = self.setup(a.monitors, interval)
        self.row(f"set-up: eventctl monitor start of {a.monitors:,} monitors, 8 at a time (s)", f"{setup_s:.0f}")
        t0 = int(time.time() * 1000)
        self.start_eventd()
        # The first round gives every monitor its state; the measured ones are like any later.
        self.wait_round(t0, 120)
        self.burst(a.monitors, interval, a.repeat)
        self.steady(a.monitors, interval, a.steady_s)
        self.round_trips(a.sample_s)
        self.stop_eventd()

    def wait_round(self, t0, timeout):
        """Until every member is due after t0 + interval / 2 and none is claimed (a claimed
        member's score is its lease): each was checked after t0. Returns the time it took
        and the polls it made, or None after `timeout` s."""
        started = time.monotonic()
        polls = 0
        while self.outstanding(t0 + self.args.interval_ms // 2) > 0 or self.claimed() > 0:
            polls += 1
            if time.monotonic() - started > timeout:
                return None, polls
            time.sleep(0.02)
        return time.monotonic() - started, polls + 1

    def claimed(self):
        return sum(self.redis.pipeline([("HLEN", f"eventd:schedclaims:{{s{s}}}") for s in range(SHARDS)]))

    def quiet(self):
        """Waits until no check is claimed (between two rounds)."""
        while self.claimed() > 0:
            time.sleep(0.05)

    def spread(self):
        """Every member due at a random time within the next interval, as monitors started
        at different times are (none is claimed: call after quiet())."""
        rng = random.Random(11)
        now = int(time.time() * 1000)
        members = self.redis.pipeline([("ZRANGE", schedule(s), 0, -1) for s in range(SHARDS)])
        self.redis.pipeline([("ZADD", schedule(s), *[x for u in m for x in (now + rng.randrange(self.args.interval_ms), u)])
                             for s, m in enumerate(members) if m])

    def burst(self, monitors, interval, repeat):
        rates, polls = [], 0
        self.quiet()
        cpu0, calls0, ecpu0 = self.redis.cpu(), self.redis.calls(), proc_cpu_s(self.proc.pid)
        for _ in range(repeat):
            self.quiet()
            t0 = self.all_due_now()
            took, n = self.wait_round(t0, interval / 2000)
            polls += n + SHARDS  # the quiet() polls, roughly
            if took is None:
                self.row("burst: not sustained", f"a round took more than {interval / 2000:g} s")
                return
            rates.append(monitors / took)  # includes up to one pollMs (250) before the first claim
        ecpu = proc_cpu_s(self.proc.pid) - ecpu0
        cpu1, calls1 = self.redis.cpu(), self.redis.calls()
        checks = monitors * repeat
        own = {"zcount": polls * SHARDS, "hlen": 2 * polls * SHARDS, "zrange": SHARDS * repeat,
               "zadd": SHARDS * repeat, "info": 2}
        delta = {k: calls1.get(k, 0) - calls0.get(k, 0) - own.get(k, 0) for k in calls1}
        delta = {k: v for k, v in delta.items() if v > 0}
        self.row(f"burst: {monitors:,} monitors x {self.args.positions} positions over {self.args.symbols} symbols, "
                 f"all due at once (checks/s; median of {repeat} rounds)", f"{sorted(rates)[len(rates) // 2]:,.0f}")
        self.row("burst: the rounds (checks/s)", ", ".join(f"{r:,.0f}" for r in rates))
        self.row("burst: Redis CPU per check (us)", f"{(cpu1 - cpu0) / checks * 1e6:.0f}")
        self.row("burst: eventd CPU per check (us)", f"{ecpu / checks * 1e6:.0f}")
        self.row("burst: Redis commands per check, inside functions included", f"{sum(delta.values()) / checks:.1f}")
        self.row("burst: ... by command", ", ".join(f"{k} {v / checks:.2f}" for k, v in
                                                  sorted(delta.items(), key=lambda kv: -kv[1])))

    def steady(self, monitors, interval_ms, seconds):
        self.quiet()
        self.spread()
        time.sleep(interval_ms / 1000)
        a0 = self.metric('eventd_portfolio_checks_total{outcome="applied"}')
        cpu0, ecpu0, t0 = self.redis.cpu(), proc_cpu_s(self.proc.pid), time.monotonic()
        lags = []
        while time.monotonic() - t0 < seconds:
            now = int(time.time() * 1000)
            lags.append(self.outstanding(now - 1000))  # due more than a second ago, not claimed
            time.sleep(0.5)
        t = time.monotonic() - t0
        applied = self.metric('eventd_portfolio_checks_total{outcome="applied"}') - a0
        cpu, ecpu = self.redis.cpu() - cpu0, proc_cpu_s(self.proc.pid) - ecpu0
        self.row(f"steady: {monitors:,} monitors every {interval_ms / 1000:g} s (demand {monitors * 1000 / interval_ms:,.0f}"
                 f" checks/s): checks applied/s", f"{applied / t:,.0f}")
        self.row("steady: Redis CPU (% of one core); eventd CPU (%)", f"{cpu / t * 100:.1f}; {ecpu / t * 100:.1f}")
        self.row("steady: due > 1 s ago and not yet claimed, median / max of samples",
                 f"{sorted(lags)[len(lags) // 2]:,} / {max(lags):,}")

    def round_trips(self, seconds):
        """eventd's own requests per check in the steady state, under MONITOR."""
        mon_path = os.path.join(self.work, "monitor.txt")
        with open(mon_path, "w") as out:
            mon = subprocess.Popen(["redis-cli", "-p", str(REDIS_PORT), "monitor"], stdout=out,
                                   stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            a0 = self.metric('eventd_portfolio_checks_total{outcome="applied"}')
            time.sleep(seconds)
            applied = self.metric('eventd_portfolio_checks_total{outcome="applied"}') - a0
            mon.send_signal(signal.SIGTERM)
            mon.wait(10)
        network, inside = {}, 0
        with open(mon_path, errors="replace") as f:
            for line in f:
                m = re.match(r'^[\d.]+ \[\d+ ([^\]]+)\] "([^"]+)"', line)
                if not m:
                    continue
                client, cmd = m.group(1), m.group(2).lower()
                if client == "lua":
                    inside += 1
                elif cmd not in ("info", "ping", "monitor"):
                    network[cmd] = network.get(cmd, 0) + 1
        n = max(applied, 1)
        self.row(f"round trips per check: eventd's requests under MONITOR for {seconds} s ({applied:,.0f} checks; "
                 "a batched FCALL counts once)", f"{sum(network.values()) / n:.2f}")
        self.row("... by command", ", ".join(f"{k} {v / n:.3f}" for k, v in sorted(network.items(),
                                                                                   key=lambda kv: -kv[1])))
        self.row("... commands inside functions per check", f"{inside / n:.1f}")

    def row(self, what, value):
        self.rows.append((what, value))
        print(f"{what:<100} {value}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build-dir", required=True)
    p.add_argument("--monitors", type=int, default=10_000)
    p.add_argument("--positions", type=int, default=10)
    p.add_argument("--symbols", type=int, default=500)
    p.add_argument("--interval-ms", type=int, default=10_000)
    p.add_argument("--steady-s", type=int, default=30)
    p.add_argument("--sample-s", type=int, default=3)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    b = Bench(a)
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"{datetime.date.today()}, {os.cpu_count()} CPUs ({cpu}), commit {commit}", flush=True)
    try:
        b.run()
    finally:
        b.stop_eventd()
    print("\nFor the README:")
    print("| measurement | value |\n|---|---|")
    for what, value in b.rows:
        print(f"| {what} | {value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
