"""Faults on the real clusters (scripts/dev-services start-cluster), mid-stream, with two
eventd instances consuming the same queues (competing consumers): a RabbitMQ node stops,
a quorum queue's leader stops, a Redis master is killed (with and without
redis.minReplicas), a slot migrates between masters, one of the instances is killed.

Every test streams quotes of one symbol (QuoteStream: distinct message ids, strictly
increasing timestamps, each confirmed by the broker, sent again after a lost
connection, RATE per second) from before the fault until at least a block after it is
over, and ends with the same check (finish): each quote is in the symbol's history
exactly once (its price encodes its index), every monitor's user got exactly the
alerts and push notifications its rules should fire, and nothing is left in a work
queue or dead-lettered.

Why the alert counts are exact although two instances handle the quotes concurrently
and out of order: prices come in blocks of BLOCK quotes, alternately about 100 and
about 200, and only a quote newer (by timestamp) than the symbol's newest stored one is
evaluated, against that one. Every quote of a block is newer than every quote of the
block before, so the first quote of block k+1 to be evaluated compares against a price
of block k and crosses each threshold between them once, and the later ones compare
against their own side. That holds as long as no whole block is overtaken by a later
block, and a block is far longer than what the instances hold at once (2 x PREFETCH):
what a redelivery or a paused slot holds back.
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

BLOCK = 250        # quotes per price block
MAX_COUNT = 9750   # quotes per stream at most: a whole number of blocks, indexes < 10000
RATE = 400         # quotes/s
PREFETCH = 50      # per instance
LOW, HIGH = 100, 200
MIDDLE = (LOW + HIGH) / 2
BULK = 15000       # the backlog of the eventd kill test
WORK_QUEUES = ("eventd.quotes", "eventd.alerts", "eventd.notify.push")


# ---------------------------------------------------------------- the quote stream

def price_of(i):
    """Quote i's price: LOW or HIGH by its block, plus i / 10000 (i < 10000)."""
    return round((HIGH if (i // BLOCK) % 2 else LOW) + i / 10000, 4)


def index_of(price):
    price = float(price)
    return round((price - (HIGH if price > MIDDLE else LOW)) * 10000)


class QuoteStream(threading.Thread):
    """Publishes quotes 0, 1, ... of `symbol` to market.quotes at `rate` per second,
    through the first of `urls` that answers, until end_after() says where to stop (at
    most MAX_COUNT). Each waits for its confirm before the next goes; a lost connection
    or a nack sends the unconfirmed one again through the next URL (the copy has the
    same message id, so eventd drops whichever comes second). `sent`: how many are
    confirmed."""

    def __init__(self, urls, symbol, rate=RATE):
        super().__init__(daemon=True, name=f"quotes-{symbol}")
        self.urls, self.symbol, self.count, self.rate = list(urls), symbol, MAX_COUNT, rate
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
        started = time.monotonic()
        try:
            while self.sent < self.count and not self._halt.is_set():
                i = self.sent
                delay = started + i / self.rate - time.monotonic()
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

    def end_after(self, more=BLOCK):
        """The fault is over: ends the stream at least `more` quotes from now, with its
        last block complete."""
        sent = self.sent
        assert self.is_alive() and sent < MAX_COUNT - more, f"the stream ended ({sent} sent) before the fault did"
        self.count = -(-(sent + more) // BLOCK) * BLOCK

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
    all three; it starts at a random one). The topology is applied first (see
    topology()); returns the instances, not started."""
    c = fx.cluster
    # Each instance's amqp.url comes from its config: the cluster env without EVENTD_AMQP_URL.
    fx.env = {k: v for k, v in c.env.items() if k != "EVENTD_AMQP_URL"}
    out, ports = [], set()
    for k in range(n):
        listed = (nodes or [None] * n)[k] or (1, 2, 3)
        port = wait_until(lambda: (p := closed_port()) not in ports and p, 5, 0, what="a free port")
        ports.add(port)
        config = deep_merge({
            "amqp": {"url": ",".join(c.amqp_urls[m - 1] for m in listed), "prefetch": PREFETCH},
            "http": {"enabled": True, "listen": f"127.0.0.1:{port}"},
            "quotes": {"historyLength": BULK + MAX_COUNT},
            "notify": {"channels": {"push": {"sink": "redis"}},
                       "rateLimit": {"perMinute": 1000000, "burst": 1000000}},
        }, overrides)
        out.append(fx.daemon(config))
    topology(fx)
    return out


def topology(fx):
    """eventctl topology apply on the clusters; returns the node (1..3) leading eventd.quotes."""
    c = fx.cluster
    rc, _, err = fx.eventctl("topology", "apply", env=c.env)
    assert rc == 0, f"eventctl topology apply exited {rc}: {err.strip()}"
    leader = wait_until(lambda: c.queue_leader(c.vhost, "eventd.quotes"), 30, 0.2, what="a leader for eventd.quotes")
    return c.node_index(leader)


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


def monitors(d, symbol):
    """Starts two monitors on symbol, every rule with cooldown 0; returns {user: (the
    alert ids that fire on each HIGH block, those that fire on each LOW block)}. A rule
    above MIDDLE fires on the first evaluated quote of each HIGH block, one below it on
    that of each LOW block but the first (the first quote of a symbol only sets the
    reference); one above HIGH never fires."""
    specs = {
        f"up-{symbol}": ([(1, "price_above", MIDDLE)], (1,), ()),
        f"both-{symbol}": ([(1, "price_above", MIDDLE - 10), (2, "price_below", MIDDLE + 10),
                            (3, "price_above", HIGH * 10)], (1,), (2,)),
    }
    for user, (rules, _, _) in specs.items():
        spec = {"rules": [{"alertId": a, "symbol": symbol, "condition": cond, "threshold": t, "cooldownSec": 0}
                          for a, cond, t in rules], "channels": ["push"]}
        rc, _, err = d.eventctl("monitor", "start", user, json.dumps(spec))
        assert rc == 0, f"monitor start {user} exited {rc}: {err.strip()}"
    return {user: (high, low) for user, (_, high, low) in specs.items()}


def expected_alerts(fires, count):
    """(alertId, block) of every alert that `count` quotes fire, sorted; fires: (on HIGH, on LOW)."""
    on_high, on_low = fires
    return sorted([(a, b) for b in range(1, count // BLOCK) for a in (on_high if b % 2 else on_low)])


# ---------------------------------------------------------------- the end of every test

def applied(fx, symbol):
    """Counter: quote index -> how many times it is in the symbol's history."""
    return collections.Counter(index_of(p) for p in fx.cluster.redis("LRANGE", history_key(symbol), 0, -1))


def finish(fx, daemons, quotes, users, via, lossy=False, timeout=90):
    """Waits for the stream to end and every instance still running to finish its work,
    stops them (each must exit 0), then checks: each quote applied exactly once (lossy:
    at most once), the users' alerts and notifications exactly as expected, nothing left
    in a work queue or its DLQ. via: a RabbitMQ node (1..3) that is up."""
    c = fx.cluster
    quotes.wait_done(timeout)
    expected = {user: expected_alerts(fires, quotes.count) for user, fires in users.items()}
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
                all(c.redis("XLEN", notifications_key(u)) >= len(e) for u, e in expected.items()))
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
    for user, want in expected.items():
        alerts = [json.loads(a) for a in c.redis("LRANGE", alerts_key(user), 0, -1)]
        fired = sorted((a["alertId"], index_of(a["currentValue"]) // BLOCK) for a in alerts)
        assert fired == want, f"{user}: alerts fired (alertId, block) {fired}, expected {want}"
        entries = c.redis("XRANGE", notifications_key(user), "-", "+") or []
        ids = [dict(zip(f[::2], f[1::2])).get("messageId") for _, f in entries]
        assert len(ids) == len(want) == len(set(ids)), \
            f"{user}: {len(ids)} notifications ({len(set(ids))} distinct), expected {len(want)}"
    return missing


def no_errors_logged(daemons):
    for d in daemons:
        bad = [l for l in d.log_lines() if l["level"] == "error" or l["msg"] in ("retrying", "dead-lettering")]
        assert not bad, f"{d.name} logged {len(bad)} error/retry line(s), e.g. {bad[:3]}"


def under_way(fx, quotes, want=2 * BLOCK + BLOCK // 2):
    """Waits until `want` quotes of the stream are applied."""
    wait_until(lambda: fx.cluster.redis("LLEN", history_key(quotes.symbol)) >= want, 60, 0.02,
               what=f"{want} quotes of {quotes.symbol} applied")


# ---------------------------------------------------------------- RabbitMQ cluster

def connected_node(d):
    """The node (host:port) /metrics says the instance is connected to, or None."""
    on = [k for k, v in metrics(d).items() if k.startswith("eventd_amqp_connected_node{") and v == 1]
    return on[0].split('node="')[1].split('"')[0] if on else None


def test_cluster_rabbitmq_node_of_an_instance_stops_mid_stream(fx):
    # The node instance A is connected to stops (stop_app). A loses its connection, the
    # broker takes back what A held unacked, A connects to the other node of its list,
    # declares the topology and consumes again, and B goes on (or moves too, if it was on
    # that node). A lists only nodes that do not lead eventd.quotes, so the queue keeps
    # its leader: this is the connection's failover alone (the next test loses a leader).
    c = fx.cluster
    symbol = "NODE"
    leader = topology(fx)
    a_nodes = [n for n in (1, 2, 3) if n != leader]
    daemons = instances(fx, nodes=[a_nodes, None])
    users = monitors(daemons[0], symbol)
    start_all(daemons)
    a = daemons[0]
    lost = amqp_node(fx, a)
    [other] = [n for n in a_nodes if n != lost]
    assert connected_node(a) == f"127.0.0.1:{c.amqp_ports[lost - 1]}", metrics(a)
    quotes = stream(fx, symbol, nodes=[n for n in (1, 2, 3) if n != lost])
    under_way(fx, quotes)
    c.stop_app(lost)
    a.wait_log("amqp connection lost", timeout=30)
    a.wait_log("amqp connected", count=2, timeout=30)
    assert amqp_node(fx, a) == other, f"{a.name} did not move to node {other}"
    a.wait_log("consuming", count=2, timeout=30)
    assert connected_node(a) == f"127.0.0.1:{c.amqp_ports[other - 1]}", metrics(a)
    assert c.queue_leader(c.vhost, "eventd.quotes") == c.nodes[leader - 1], "eventd.quotes changed leader"
    quotes.end_after()
    finish(fx, daemons, quotes, users, via=other)
    c.start_app(lost)


test_cluster_rabbitmq_node_of_an_instance_stops_mid_stream.timeout = 180


def test_cluster_quorum_queue_leader_stops_mid_stream(fx):
    # The node leading eventd.quotes stops (stop_app): the queue's other two members
    # elect a new leader, which must deliver what the old one had not, and take the acks
    # of what it had delivered. Both instances list only the other two nodes, so their
    # connections stay up: the queue moves under them. The other queues' leaders on that
    # node (alerts, notifications) move too.
    c = fx.cluster
    symbol = "LEAD"
    leader = topology(fx)
    others = [n for n in (1, 2, 3) if n != leader]
    daemons = instances(fx, nodes=[others, others])
    users = monitors(daemons[0], symbol)
    start_all(daemons)
    quotes = stream(fx, symbol, nodes=others)
    under_way(fx, quotes)
    c.stop_app(leader)
    new = wait_until(lambda: c.queue_leader(c.vhost, "eventd.quotes") not in (None, c.nodes[leader - 1]) and
                     c.queue_leader(c.vhost, "eventd.quotes"), 30, 0.2, what="a new leader for eventd.quotes")
    assert c.node_index(new) in others
    quotes.end_after()
    finish(fx, daemons, quotes, users, via=others[0])
    for d in daemons:
        assert len(d.logged("amqp connected")) == 1, f"{d.name} lost its connection: the test meant only the leader"
    c.start_app(leader)


test_cluster_quorum_queue_leader_stops_mid_stream.timeout = 180


# ---------------------------------------------------------------- Redis Cluster

def test_cluster_redis_master_killed_with_min_replicas(fx):
    # redis.minReplicas 1: a message is acked only once WAIT says a replica has its
    # effects, so the failover loses no acked effect. The promoted replica has no replica
    # of its own until the killed node is back, so the symbol's slot pauses (its
    # messages wait, using no attempt) and resumes once the old master rejoins.
    c = fx.cluster
    symbol = "RKILL"
    daemons = instances(fx, {"redis": {"minReplicas": 1, "replicaTimeoutMs": 500}})
    users = monitors(daemons[0], symbol)
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
    wait_until(lambda: any(d.logged("redis replicas confirm again") for d in daemons), 15, 0.2,
               what="the promoted master's messages to go on")
    quotes.end_after()
    finish(fx, daemons, quotes, users, via=1)


test_cluster_redis_master_killed_with_min_replicas.timeout = 150


def test_cluster_redis_master_killed_without_min_replicas(fx):
    # Without minReplicas a message is acked once its master has applied it, before any
    # replica has: replication is asynchronous. A write the master acknowledged but had
    # not yet sent to its replica dies with it, and the promoted replica never had it:
    # that quote was acked, so nothing brings it back (and the restarted old master
    # resyncs from the new one, dropping its own copy). What can be lost is therefore
    # the tail of the replication stream the replica had not received at the kill: the
    # last writes, at most those of the quotes the instances had in flight (2 x
    # PREFETCH) while the replica keeps up. Here, on loopback, a kill -9 usually loses
    # nothing: what the master wrote to its replica's socket is delivered even after the
    # process died. A crash of the master's host, or a replica lagging behind, loses
    # more. A quote is still never applied twice: its effects and its idempotency key
    # are written by one function call (a batch is one call too), replicated or lost
    # together, and a quote whose effects are lost was acked, so it is never
    # redelivered; one not acked is redelivered and finds its key, or runs once on the
    # new master. Alerts are not counted here: a lost quote write rolls the symbol's
    # newest quote and rule state back, so a crossing can fire again (or, with its
    # alert's write lost, not at all).
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
    quotes.end_after()
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
    users = monitors(daemons[0], symbol)
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
    quotes.end_after()
    finish(fx, daemons, quotes, users, via=1)
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
    users = monitors(daemons[0], symbol)
    start_all(daemons)
    victim, survivor = daemons
    quotes = stream(fx, symbol)
    under_way(fx, quotes, BLOCK)
    backlog = fx.publish_stream(victim, bulk, BULK)
    wait_until(lambda: c.redis("LLEN", history_key(bulk)) >= BULK // 10, 30, 0.01, what="the backlog under way")
    victim.kill9()
    # A backlog in the queue: the broker kept the victim's prefetch window full.
    assert c.amqp(1).depth("eventd.quotes") > 0, "the backlog was drained before the kill"
    quotes.end_after()
    wait_publisher(backlog)
    finish(fx, [survivor], quotes, users, via=1)
    assert c.redis("LLEN", history_key(bulk)) == BULK, f"{c.redis('LLEN', history_key(bulk))} of {BULK} " \
                                                      "backlog quotes applied"
