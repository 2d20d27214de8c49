"""Faults on the real clusters (scripts/dev-services start-cluster), mid-stream, with two
eventd instances consuming the same queues (competing consumers): a RabbitMQ node stops,
a quorum queue's leader stops, a Redis master is killed (with and without
redis.minReplicas), a slot migrates between masters, one of the instances is killed.

Every test streams COUNT quotes of one symbol (QuoteStream: distinct message ids,
strictly increasing timestamps, each confirmed by the broker, sent again after a lost
connection) and ends with the same check (finish): each quote is in the symbol's
history exactly once (its price encodes its index), every monitor's user got exactly
the alerts and push notifications its rules should fire, and nothing is left in a work
queue or dead-lettered.

Why the alert counts are exact although two instances handle the quotes concurrently
and out of order: prices come in blocks of BLOCK quotes, alternately about 100 and
about 200, and only a quote newer (by timestamp) than the symbol's newest stored one is
evaluated, against that one. Every quote of a block is newer than every quote of the
block before, so the first quote of block k+1 to be evaluated compares against a price
of block k and crosses each threshold between them once, and the later ones compare
against their own side. That holds as long as no whole block is overtaken by a later
block, and a block is far longer than what the instances hold at once (2 x PREFETCH),
which a redelivery or a paused slot can hold back.
"""
import collections
import json
import threading
import time
import urllib.request

import pika
import pika.exceptions

from cluster import key_slot
from harness import (alerts_key, closed_port, deep_merge, history_key, holds_for, notifications_key, now_ms,
                     wait_publisher, wait_until)

COUNT = 3000
BLOCK = 250        # quotes per price block; COUNT / BLOCK blocks
RATE = 400         # quotes/s after the backlog, if any
PREFETCH = 50      # per instance: what a redelivery or a paused slot can hold back
LOW, HIGH = 100, 200
BULK = 15000      # the backlog of the eventd kill test
MULTI_NODE = False  # TEMPORARY until the amqp branch is in main
WORK_QUEUES = ("eventd.quotes", "eventd.alerts", "eventd.notify.push")


# ---------------------------------------------------------------- the quote stream

def price_of(i):
    """Quote i's price: LOW or HIGH by its block, plus i / 10000 (COUNT < 10000)."""
    return round((HIGH if (i // BLOCK) % 2 else LOW) + i / 10000, 4)


def index_of(price):
    price = float(price)
    return round((price - (HIGH if price > (LOW + HIGH) / 2 else LOW)) * 10000)


class QuoteStream(threading.Thread):
    """Publishes quotes 0..count-1 of `symbol` to market.quotes through the first of `urls`
    that answers: the first `backlog` at once, the rest at `rate` per second. Each waits
    for its confirm before the next goes; a lost connection or a nack sends the
    unconfirmed one again through the next URL (the copy has the same message id, so
    eventd drops whichever comes second). `sent`: how many are confirmed."""

    def __init__(self, urls, symbol, count=COUNT, rate=RATE, backlog=0):
        super().__init__(daemon=True, name=f"quotes-{symbol}")
        self.urls, self.symbol, self.count, self.rate, self.backlog = list(urls), symbol, count, rate, backlog
        self.base_ts = now_ms()
        self.sent = 0
        self.resends = 0
        self.error = None
        self._halt = threading.Event()

    def body(self, i):
        return json.dumps({"type": "quote_update", "timestamp": self.base_ts + i, "symbol": self.symbol,
                           "price": price_of(i), "change": 0}).encode()

    def run(self):
        conn = ch = None
        node = 0
        paced_from = None
        try:
            while self.sent < self.count and not self._halt.is_set():
                i = self.sent
                if i >= self.backlog:
                    paced_from = paced_from or time.monotonic()
                    delay = paced_from + (i - self.backlog) / self.rate - time.monotonic()
                    if delay > 0:
                        self._halt.wait(delay)
                        continue
                try:
                    if ch is None:
                        params = pika.URLParameters(self.urls[node % len(self.urls)] +
                                                    "?heartbeat=0&connection_attempts=1&socket_timeout=5")
                        conn = pika.BlockingConnection(params)
                        ch = conn.channel()
                        ch.confirm_delivery()
                    props = pika.BasicProperties(content_type="application/json", delivery_mode=2,
                                                 message_id=f"{self.symbol}-{i}", type="quote_update")
                    ch.basic_publish("market.quotes", self.symbol, self.body(i), props, mandatory=True)
                    self.sent += 1
                except (pika.exceptions.AMQPError, OSError):
                    self.resends += 1
                    if self.resends > 200:
                        raise
                    try:
                        if conn is not None and conn.is_open:
                            conn.close()
                    except Exception:
                        pass
                    conn = ch = None
                    node += 1
                    self._halt.wait(0.2)
        except BaseException as e:  # noqa: B902 - reported by wait_done
            self.error = e
        finally:
            try:
                if conn is not None and conn.is_open:
                    conn.close()
            except Exception:
                pass

    def halt(self):
        self._halt.set()
        self.join(10)

    def wait_done(self, timeout=60):
        self.join(timeout)
        assert not self.is_alive(), f"the quote stream is still publishing after {timeout} s ({self.sent} sent)"
        assert self.error is None, f"the quote stream failed after {self.sent} quotes: {self.error!r}"
        assert self.sent == self.count, f"the quote stream stopped at {self.sent} of {self.count}"


def stream(fx, symbol, nodes=None, **kw):
    """A started QuoteStream through the given RabbitMQ nodes (1..3; default all), halted at teardown."""
    c = fx.cluster
    s = QuoteStream([c.amqp_urls[n - 1] for n in (nodes or (1, 2, 3))], symbol, **kw)
    fx.on_teardown(s.halt)
    s.start()
    return s


# ---------------------------------------------------------------- eventd instances and monitors

def instances(fx, overrides=None, nodes=None, n=2):
    """n eventd instances on the clusters, each with its own HTTP port, consuming the same
    queues. nodes: per instance, the RabbitMQ nodes (1..3) its amqp.url lists (default
    all three). The topology is applied first; returns the instances, not started."""
    c = fx.cluster
    # Each instance's amqp.url comes from its config: the cluster env without EVENTD_AMQP_URL.
    fx.env = {k: v for k, v in c.env.items() if k != "EVENTD_AMQP_URL"}
    out = []
    for k in range(n):
        listed = (nodes or [None] * n)[k] or ((1, 2, 3) if MULTI_NODE else (k + 1,))
        config = deep_merge({
            "amqp": {"url": ",".join(c.amqp_urls[m - 1] for m in listed), "prefetch": PREFETCH},
            "http": {"enabled": True, "listen": f"127.0.0.1:{closed_port()}"},
            "quotes": {"historyLength": BULK + COUNT},
            "notify": {"channels": {"push": {"sink": "redis"}},
                       "rateLimit": {"perMinute": 1000000, "burst": 1000000}},
        }, overrides)
        out.append(fx.daemon(config))
    rc, _, err = out[0].eventctl("topology", "apply")
    assert rc == 0, f"eventctl topology apply exited {rc}: {err.strip()}"
    return out


def start_all(daemons):
    for d in daemons:
        d.start()
    for d in daemons:
        d.wait_ready()


def metrics(d):
    """The instance's /metrics as {series: value}."""
    with urllib.request.urlopen(f"http://{d.config['http']['listen']}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            out[series] = float(value)
    return out


def amqp_node(fx, d):
    """The RabbitMQ node (1..3) the instance's current run connected to last (its log)."""
    [*_, last] = d.wait_log("amqp connected")
    return fx.cluster.amqp_ports.index(last["port"]) + 1


def monitors(fx, d, symbol):
    """Starts two monitors on symbol; returns {user: the alerts expected, as sorted
    (alertId, block of the quote that fires it)}. A rule above the middle fires on the
    first evaluated quote of each HIGH block, one below it on each LOW block after the
    first (the first quote of a symbol only sets the reference); one never fires."""
    blocks = range(COUNT // BLOCK)
    up = [(1, b) for b in blocks if b % 2]
    down = [(2, b) for b in blocks if b and not b % 2]
    middle = (LOW + HIGH) / 2
    specs = {
        f"up-{symbol}": ([(1, "price_above", middle)], up),
        f"both-{symbol}": ([(1, "price_above", middle - 10), (2, "price_below", middle + 10),
                            (3, "price_above", HIGH * 10)], sorted(up + down)),
    }
    for user, (rules, _) in specs.items():
        spec = {"rules": [{"alertId": a, "symbol": symbol, "condition": cond, "threshold": t, "cooldownSec": 0}
                          for a, cond, t in rules], "channels": ["push"]}
        rc, _, err = d.eventctl("monitor", "start", user, json.dumps(spec))
        assert rc == 0, f"monitor start {user} exited {rc}: {err.strip()}"
    return {user: expected for user, (_, expected) in specs.items()}


# ---------------------------------------------------------------- the end of every test

def applied(fx, symbol):
    """Counter: quote index -> how many times it is in the symbol's history."""
    return collections.Counter(index_of(p) for p in fx.cluster.redis("LRANGE", history_key(symbol), 0, -1))


def finish(fx, daemons, quotes, expected_alerts, via, lossy=False, timeout=90):
    """Waits for the stream to end and every instance still running to finish its work,
    stops them (each must exit 0), then checks: each quote applied exactly once (lossy:
    at most once), the users' alerts and notifications exactly as expected, nothing left
    in a work queue or its DLQ. via: a RabbitMQ node (1..3) that is up."""
    c = fx.cluster
    quotes.wait_done(timeout)
    amqp = c.amqp(via)
    running = [d for d in daemons if d.running()]

    def settled():
        if any(amqp.depth(q) for q in WORK_QUEUES):
            return False
        if any(metrics(d).get("eventd_in_flight_messages") for d in running):
            return False
        if lossy:
            return True
        return (c.redis("LLEN", history_key(quotes.symbol)) >= quotes.count and
                all(c.redis("XLEN", notifications_key(u)) >= len(e) for u, e in expected_alerts.items()))
    wait_until(settled, timeout, 0.2, what="every quote, alert and notification handled")
    wait_until(lambda: holds_for(settled, 1.0), 20, 0, what="the work queues to stay drained")
    for d in running:
        assert d.stop() == 0, f"{d.name} did not exit 0"

    counts = applied(fx, quotes.symbol)
    twice = sorted(i for i, n in counts.items() if n > 1)
    missing = sorted(set(range(quotes.count)) - set(counts))
    assert not twice, f"{len(twice)} quotes applied more than once, e.g. {twice[:10]}"
    if not lossy:
        assert not missing, f"{len(missing)} of {quotes.count} quotes never applied, e.g. {missing[:10]}"
    for q in WORK_QUEUES:
        assert amqp.depth(q) == 0, f"messages left in {q} after the stop (unacked)"
        assert amqp.depth(q + ".dlq") == 0, f"messages were dead-lettered to {q}.dlq"
    for user, expected in expected_alerts.items():
        alerts = [json.loads(a) for a in c.redis("LRANGE", alerts_key(user), 0, -1)]
        fired = sorted((a["alertId"], index_of(a["currentValue"]) // BLOCK) for a in alerts)
        assert fired == expected, f"{user}: alerts fired (alertId, block) {fired}, expected {expected}"
        entries = c.redis("XRANGE", notifications_key(user), "-", "+") or []
        ids = [dict(zip(f[::2], f[1::2])).get("messageId") for _, f in entries]
        assert len(ids) == len(expected) == len(set(ids)), \
            f"{user}: {len(ids)} notifications ({len(set(ids))} distinct), expected {len(expected)}"
    return missing


def no_errors_logged(daemons):
    for d in daemons:
        bad = [l for l in d.log_lines() if l["level"] == "error" or l["msg"] in ("retrying", "dead-lettering")]
        assert not bad, f"{d.name} logged {len(bad)} error/retry line(s), e.g. {bad[:3]}"


def under_way(fx, quotes, fraction=0.2):
    """Waits until a fraction of the stream is applied; it must not be over yet."""
    want = int(quotes.count * fraction)
    wait_until(lambda: fx.cluster.redis("LLEN", history_key(quotes.symbol)) >= want, 60, 0.02,
               what=f"{want} quotes of {quotes.symbol} applied")
    assert quotes.is_alive(), "the stream was over before the fault: the test would test nothing"


# ---------------------------------------------------------------- Redis Cluster

def test_cluster_redis_master_killed_with_min_replicas(fx):
    # redis.minReplicas 1: a message is acked only once WAIT says a replica has its
    # effects, so the failover loses no acked effect. The promoted replica has no replica
    # of its own until the killed node is back, so the symbol's slot pauses (its
    # messages wait, using no attempt) and resumes once the old master rejoins.
    c = fx.cluster
    symbol = "RKILL"
    daemons = instances(fx, {"redis": {"minReplicas": 1, "replicaTimeoutMs": 500}})
    expected = monitors(fx, daemons[0], symbol)
    start_all(daemons)
    master = c.master_of_key(history_key(symbol))
    quotes = stream(fx, symbol)
    under_way(fx, quotes)
    replica = c.kill_master(master)
    c.wait_cluster_ok(timeout=30)
    assert c.master_of_key(history_key(symbol)) == replica, "the replica did not take the slot over"
    wait_until(lambda: any(d.logged("redis replicas did not confirm; messages wait") for d in daemons), 15, 0.2,
               what="the messages of the promoted master to wait for a replica")
    c.restart_node(master)
    wait_until(lambda: c.role(master) == "slave", 15, 0.2, what=f"{master} back as a replica")
    finish(fx, daemons, quotes, expected, via=1)


test_cluster_redis_master_killed_with_min_replicas.timeout = 150


def test_cluster_redis_master_killed_without_min_replicas(fx):
    # Without minReplicas a message is acked once its master has applied it, before any
    # replica has: replication is asynchronous. A write the master acknowledged but had
    # not yet sent to its replica dies with it, and the promoted replica never had it:
    # that quote was acked, so nothing brings it back (and the restarted old master
    # resyncs from the new one, dropping its own copy). What can be lost is therefore
    # the tail of the replication stream at the kill: the quotes the instances had in
    # flight then (at most 2 x PREFETCH). Here, on loopback, a kill -9 usually loses
    # nothing (what the master wrote to the socket is in the replica's kernel buffer
    # already); across hosts, a crash of the master's host loses what was in flight on
    # the wire too. A quote is still never applied twice: its effects and its
    # idempotency key are one script, replicated (or lost) together, and a quote whose
    # effects are lost was acked, so it is never redelivered; one not acked is
    # redelivered and finds its key, or runs once on the new master. Alerts are not
    # counted here: a lost quote write rolls the symbol's newest quote and rule state
    # back, so a crossing can fire again (or, with its alert's write lost, not at all).
    c = fx.cluster
    symbol = "RLOSS"
    daemons = instances(fx)
    start_all(daemons)
    master = c.master_of_key(history_key(symbol))
    quotes = stream(fx, symbol)
    under_way(fx, quotes)
    replica = c.kill_master(master)
    published_at_kill = quotes.sent + 1  # the one being published may be in eventd already
    c.wait_cluster_ok(timeout=30)
    assert c.master_of_key(history_key(symbol)) == replica, "the replica did not take the slot over"
    c.restart_node(master)
    missing = finish(fx, daemons, quotes, {}, via=1, lossy=True)
    assert len(missing) <= 2 * PREFETCH, f"{len(missing)} acked quotes lost, more than were in flight"
    assert all(i < published_at_kill for i in missing), \
        f"quotes published after the kill were lost: {[i for i in missing if i >= published_at_kill][:10]}"


test_cluster_redis_master_killed_without_min_replicas.timeout = 150


def test_cluster_slot_migrates_mid_stream(fx):
    # The symbol's slot moves to another master by hand while quotes stream: while its
    # keys move, a script whose keys are split gets TRYAGAIN and waits; once they are
    # all on the target, the source answers ASK (eventd sends ASKING there); after
    # SETSLOT NODE, MOVED. None of it may fail a message: no retry, no dead letter, no
    # error line.
    c = fx.cluster
    symbol = "MIGR"
    daemons = instances(fx)
    expected = monitors(fx, daemons[0], symbol)
    start_all(daemons)
    slot = key_slot(history_key(symbol))
    src = c.master_of_slot(slot)
    dst = next(m for m in c.masters() if m != src)
    quotes = stream(fx, symbol)
    under_way(fx, quotes)

    def importing():
        # The keys are on dst, src still owns the slot: src answers ASK, and dst, asked,
        # answers TRYAGAIN, as every quote's script has a key dst does not (its new
        # idempotency key) while others are there: the slot's quotes wait until it is
        # dst's. Held here for a while, within the ~5 s eventd waits out a TRYAGAIN.
        time.sleep(1.5)
    c.migrate_slots([slot], src, dst, during=importing)
    assert c.master_of_slot(slot) == dst
    assert quotes.is_alive(), "the stream ended before the migration did"
    finish(fx, daemons, quotes, expected, via=1)
    no_errors_logged(daemons)
    c.migrate_slots([slot], dst, src)  # the layout the other tests started from


test_cluster_slot_migrates_mid_stream.timeout = 120


# ---------------------------------------------------------------- eventd

def test_cluster_eventd_instance_killed_mid_stream(fx):
    # Behind the stream, a backlog of another symbol (eventctl, as fast as it goes), so
    # that both instances hold a full prefetch window of unacked quotes when one is
    # killed: the broker gives those to the other one, which applies each exactly once
    # (one the killed instance applied but had not acked yet finds its idempotency key).
    c = fx.cluster
    symbol, bulk = "EKILL", "EBULK"
    daemons = instances(fx)
    expected = monitors(fx, daemons[0], symbol)
    start_all(daemons)
    victim, survivor = daemons
    quotes = stream(fx, symbol)
    under_way(fx, quotes, 0.1)
    backlog = fx.publish_stream(victim, bulk, BULK)
    wait_until(lambda: c.redis("LLEN", history_key(bulk)) >= BULK // 10, 30, 0.01, what="the backlog under way")
    victim.kill9()
    # A backlog in the queue: the broker kept the victim's prefetch window full.
    assert c.amqp(1).depth("eventd.quotes") > 0, "the backlog was drained before the kill"
    wait_publisher(backlog)
    finish(fx, [survivor], quotes, expected, via=1)
    assert c.redis("LLEN", history_key(bulk)) == BULK, f"{c.redis('LLEN', history_key(bulk))} of {BULK} " \
                                                      "backlog quotes applied"
