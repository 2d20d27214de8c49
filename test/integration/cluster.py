"""The test clusters of scripts/dev-services start-cluster, for the tests: a 3-node
RabbitMQ cluster and a Redis Cluster of 3 masters with one replica each.

A test reaches them through fx.cluster, set up on first use: nodes an earlier test left
stopped or killed run again, the Redis Cluster is ok, every master is flushed, and the
test has its own vhost on the RabbitMQ cluster (deleted afterwards). Every wait is
bounded. Nodes are named by Redis port and by RabbitMQ index (1..3).
"""
import collections
import json
import os
import socket
import time
import urllib.error
import urllib.parse

import harness
from harness import RedisError, wait_until

ENV = os.environ
SLOTS = 16384


def _env_list(name):
    return [x for x in ENV.get(name, "").split(",") if x]


# ---------------------------------------------------------------- slots

def _crc16_table():
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1) & 0xFFFF
        table.append(crc)
    return table


_CRC16 = _crc16_table()


def crc16(data):
    """CRC16/XMODEM, the checksum Redis Cluster maps keys to slots with."""
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[(crc >> 8) ^ b]
    return crc


def key_slot(key):
    """The slot of key: only its hash tag counts, the text between the first '{' and
    the next '}', when that is not empty."""
    k = key if isinstance(key, bytes) else str(key).encode()
    start = k.find(b"{")
    if start >= 0:
        end = k.find(b"}", start + 1)
        if end > start + 1:
            k = k[start + 1:end]
    return crc16(k) % SLOTS


def _port(address):
    """The port of 'ip:port@bus' or 'ip:port' (CLUSTER NODES, MOVED, ASK)."""
    return int(address.split("@")[0].rsplit(":", 1)[1])


# ---------------------------------------------------------------- Redis Cluster client

class RedisCluster:
    """A cluster-aware RESP client, as eventd's router works: a command goes to the master
    of its key's slot (the argument after the command name, or key=), MOVED updates that
    slot and reloads the map, ASK sends one ASKING plus the command to the named node and
    leaves the map alone. Connections stay open; replies come back as harness.redis's do.
    `redirects` counts the MOVED and ASK replies followed."""

    MAX_TRIES = 8

    def __init__(self, ports):
        self.ports = list(ports)
        self.conns = {}
        self.slots = [None] * SLOTS
        self.redirects = collections.Counter()
        self.refresh()

    def node(self, port, *args):
        """One command to the node on port; no redirect followed."""
        conn = self.conns.get(port)
        try:
            if conn is None:
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                conn = self.conns[port] = (sock, sock.makefile("rb"))
            conn[0].sendall(harness.resp_command(args))
            return harness._read_reply(conn[1])
        except OSError:
            self.drop(port)
            raise

    def drop(self, port):
        conn = self.conns.pop(port, None)
        if conn is not None:
            conn[1].close()
            conn[0].close()

    def close(self):
        for port in list(self.conns):
            self.drop(port)

    def refresh(self):
        """Reloads the slot map from the first node that answers CLUSTER SLOTS."""
        for port in self.ports:
            try:
                ranges = self.node(port, "CLUSTER", "SLOTS")
            except (OSError, RedisError):
                continue
            table = [None] * SLOTS
            for start, end, master, *_ in ranges:
                table[start:end + 1] = [master[1]] * (end - start + 1)
            self.slots = table
            return
        raise ConnectionError("no Redis Cluster node answered CLUSTER SLOTS")

    def __call__(self, *args, key=None):
        slot = key_slot(args[1] if key is None else key)
        port, asking = self.slots[slot], False
        for _ in range(self.MAX_TRIES):
            try:
                if port is None:
                    raise ConnectionError(f"no master serves slot {slot}")
                if asking:
                    self.node(port, "ASKING")
                return self.node(port, *args)
            except RedisError as e:
                kind, _, rest = str(e).partition(" ")
                if kind == "MOVED":
                    self.redirects["MOVED"] += 1
                    port, asking = _port(rest.split()[1]), False
                    self.slots[slot] = port
                    self.refresh()
                elif kind == "ASK":
                    self.redirects["ASK"] += 1
                    port, asking = _port(rest.split()[1]), True
                elif kind == "TRYAGAIN":  # a multi-key command while its slot migrates
                    time.sleep(0.1)
                else:
                    raise
            except OSError:
                # A lost node: its slots have a new master after a failover.
                time.sleep(0.3)
                try:
                    self.refresh()
                except ConnectionError:
                    pass
                port, asking = self.slots[slot], False
        raise RedisError(f"{args[0]} on slot {slot}: still redirected or unreachable after {self.MAX_TRIES} tries")


# ---------------------------------------------------------------- the clusters

class Cluster:
    """fx.cluster: the URLs (amqp_url and redis_url, with this test's vhost), env (the
    fixture's env pointing eventd at the clusters: `fx.env = fx.cluster.env` before starting
    daemons), redis (a RedisCluster), and the helpers below."""

    def __init__(self, fx):
        if not ENV.get("EVENTD_CLUSTER_AMQP_URL"):
            raise AssertionError(ENV.get("EVENTD_CLUSTER_ERROR") or
                                 "the test clusters are not running (scripts/dev-services start-cluster, "
                                 "then export $EVENTD_DEV_DIR/cluster.env)")
        self.fx = fx
        self.nodes = _env_list("EVENTD_CLUSTER_RABBIT_NODES")
        self.amqp_ports = [int(p) for p in _env_list("EVENTD_CLUSTER_AMQP_PORTS")]
        self.mgmt_ports = [int(p) for p in _env_list("EVENTD_CLUSTER_MGMT_PORTS")]
        self.redis_ports = [int(p) for p in _env_list("EVENTD_CLUSTER_REDIS_PORTS")]
        self.redis_url = ENV["EVENTD_CLUSTER_REDIS_URL"]
        self.vhost, self.vq = fx.vhost, fx.vq
        self.amqp_urls = [f"amqp://guest:guest@127.0.0.1:{p}/{self.vq}" for p in self.amqp_ports]
        self.amqp_url = ",".join(self.amqp_urls)
        self.env = dict(fx.env, EVENTD_AMQP_URL=self.amqp_url, EVENTD_REDIS_URL=self.redis_url,
                        EVENTD_MANAGEMENT_URL=f"http://127.0.0.1:{self.mgmt_ports[0]}")
        self._amqp = {}
        self._vhost_made = False
        self.redis = None
        fx.on_teardown(self.close)
        self.restore()
        self.redis = RedisCluster(self.redis_ports)
        self.wait_cluster_ok()
        for port in self.masters():
            self.redis.node(port, "FLUSHALL")
        self.mgmt("PUT", f"vhosts/{self.vq}", {})
        self._vhost_made = True
        self.mgmt("PUT", f"permissions/{self.vq}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
        wait_until(lambda: set(self.mgmt("GET", f"vhosts/{self.vq}").get("cluster_state", {}).values()) == {"running"},
                   30, 0.2, what=f"vhost {self.vhost} running on every cluster node")

    def close(self):
        for conn in self._amqp.values():
            conn.close()
        if self._vhost_made:
            self.mgmt("DELETE", f"vhosts/{self.vq}")
        self.restore()
        if self.redis is not None:
            self.redis.close()

    def restore(self):
        """Starts what an earlier test stopped: killed Redis nodes, stopped RabbitMQ apps;
        clears slots a migration left open."""
        for port in self.redis_ports:
            if not self._answers(port):
                harness.dev_services("redis-node-start", str(port), timeout=30)
        for node in self.mgmt("GET", "nodes?columns=name,running"):
            if not node.get("running"):
                self.start_app(self.node_index(node["name"]))
        for port in self.redis_ports:
            for line in self._cluster_nodes(port):
                if "myself" in line.split()[2]:
                    for slot in [f[1:].split("-")[0] for f in line.split()[8:] if f.startswith("[")]:
                        self._node(port, "CLUSTER", "SETSLOT", slot, "STABLE")

    # ------------------------------------------------------------ Redis Cluster

    def _node(self, port, *args):
        return self.redis.node(port, *args) if self.redis is not None else _one_shot(port, *args)

    def _answers(self, port):
        try:
            return self._node(port, "PING") == "PONG"
        except (OSError, RedisError):
            return False

    def _cluster_nodes(self, port):
        """CLUSTER NODES of the node on port, one line per node; [] if it does not answer."""
        try:
            return self._node(port, "CLUSTER", "NODES").splitlines()
        except (OSError, RedisError):
            return []

    def _any_cluster_nodes(self):
        for port in self.redis_ports:
            lines = self._cluster_nodes(port)
            if lines:
                return lines
        raise ConnectionError("no Redis Cluster node answers")

    def _slot_ranges(self, port=None):
        """[(start, end, master port)] sorted, as the node on port (or the first answering) sees them."""
        for p in [port] if port else self.redis_ports:
            try:
                return sorted((r[0], r[1], r[2][1]) for r in self._node(p, "CLUSTER", "SLOTS"))
            except (OSError, RedisError):
                continue
        raise ConnectionError("no Redis Cluster node answers CLUSTER SLOTS")

    def masters(self):
        """Ports of the masters serving slots, in slot order."""
        return list(dict.fromkeys(m for _, _, m in self._slot_ranges()))

    def master_of_slot(self, slot):
        for start, end, master in self._slot_ranges():
            if start <= slot <= end:
                return master
        return None

    def master_of_key(self, key):
        return self.master_of_slot(key_slot(key))

    def replica_of(self, master_port):
        """The port of a replica of the master on master_port not marked failed, or None."""
        lines = [line.split() for line in self._any_cluster_nodes()]
        ids = [f[0] for f in lines if _port(f[1]) == master_port]
        for f in lines:
            if ids and f[3] == ids[0] and "fail" not in f[2]:
                return _port(f[1])
        return None

    def role(self, port):
        """'master' or 'slave' (ROLE of the node on port)."""
        return self._node(port, "ROLE")[0]

    def kill_master(self, port):
        """kill -9 of the master on port; returns the port of its replica, which should take over."""
        assert port in self.masters(), f"{port} is not a master serving slots"
        replica = self.replica_of(port)
        harness.dev_services("redis-node-kill", str(port), timeout=30)
        self.redis.drop(port)
        return replica

    def restart_node(self, port, timeout=30):
        """Starts the node on port again (same config, nodes.conf, AOF) and waits until it is
        back in an ok cluster that every node agrees on."""
        harness.dev_services("redis-node-start", str(port), timeout=30)
        self.wait_cluster_ok(timeout, need=(port,))

    def _ok_view(self, need):
        """The slot ranges when every answering node (and all of `need`) says ok, sees the
        same ranges, all served by answering masters, marks no answering node failed, and
        every answering replica is in sync; else None."""
        live = [p for p in self.redis_ports if self._answers(p)]
        if not set(need) <= set(live):
            return None
        views = set()
        for port in live:
            try:
                if "cluster_state:ok" not in self._node(port, "CLUSTER", "INFO"):
                    return None
                views.add(tuple(self._slot_ranges(port)))
                for f in (line.split() for line in self._cluster_nodes(port)):
                    if _port(f[1]) in live and "fail" in f[2]:
                        return None
                replication = self._node(port, "INFO", "replication")
                if "role:slave" in replication and "master_link_status:up" not in replication:
                    return None
            except (OSError, RedisError):
                return None
        if len(views) != 1:
            return None
        ranges = views.pop()
        if sum(end - start + 1 for start, end, _ in ranges) != SLOTS or any(m not in live for _, _, m in ranges):
            return None
        return ranges

    def wait_cluster_ok(self, timeout=30, need=()):
        """Waits until the nodes that answer form an ok cluster (see _ok_view); returns its slot ranges."""
        ranges = wait_until(lambda: self._ok_view(need), timeout, 0.2, what="the Redis Cluster ok, every node agreeing")
        self.redis.refresh()
        return ranges

    def migrate_slots(self, slots, from_port, to_port, during=None):
        """Moves slots from the master on from_port to the one on to_port by hand: SETSLOT
        IMPORTING/MIGRATING, MIGRATE of their keys, then during() (if given; the keys are
        on to_port while from_port still owns the slots, so a request there gets ASK),
        then SETSLOT NODE everywhere (afterwards from_port answers MOVED)."""
        src = self._node(from_port, "CLUSTER", "MYID")
        dst = self._node(to_port, "CLUSTER", "MYID")
        try:
            for slot in slots:
                self._node(to_port, "CLUSTER", "SETSLOT", slot, "IMPORTING", src)
                self._node(from_port, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst)
            for slot in slots:
                for _ in range(10000):
                    keys = self._node(from_port, "CLUSTER", "GETKEYSINSLOT", slot, 100)
                    if not keys:
                        break
                    self._node(from_port, "MIGRATE", "127.0.0.1", to_port, "", 0, 5000, "KEYS", *keys)
            if during is not None:
                during()
            others = [p for p in self.masters() if p not in (from_port, to_port)]
            for slot in slots:
                for port in [to_port, from_port, *others]:  # the order the Redis manual gives
                    self._node(port, "CLUSTER", "SETSLOT", slot, "NODE", dst)
        except BaseException:
            for slot in slots:
                for port in (to_port, from_port):
                    try:
                        self._node(port, "CLUSTER", "SETSLOT", slot, "STABLE")
                    except (OSError, RedisError):
                        pass
            raise
        self.wait_cluster_ok()

    def keys(self, pattern="*"):
        """Every key matching pattern, over all masters (SCAN)."""
        out = []
        for port in self.masters():
            cursor = "0"
            for _ in range(100000):
                cursor, batch = self._node(port, "SCAN", cursor, "MATCH", pattern, "COUNT", 10000)
                out.extend(batch)
                if cursor == "0":
                    break
        return out

    def count_keys(self, pattern="*"):
        return len(self.keys(pattern))

    # ------------------------------------------------------------ RabbitMQ cluster

    def mgmt(self, method, path, body=None, timeout=10):
        """The management API of the first node that answers (node 1 unless its app is stopped)."""
        error = None
        for port in self.mgmt_ports:
            try:
                return harness.mgmt(method, path, body, timeout, port=port)
            except urllib.error.HTTPError:
                raise
            except (OSError, urllib.error.URLError) as e:
                error = e
        raise AssertionError(f"no RabbitMQ cluster node's management API answers: {error}")

    def node_index(self, node_name):
        """1..3 for a cluster node's name."""
        return self.nodes.index(node_name) + 1

    def stop_app(self, n):
        harness.dev_services("rabbit-node-stop-app", str(n), timeout=150)

    def start_app(self, n):
        harness.dev_services("rabbit-node-start-app", str(n), timeout=210)

    def cluster_status(self, n):
        """rabbitmqctl cluster_status of node n, parsed."""
        return json.loads(harness.run(["rabbitmqctl", "-q", "-n", self.nodes[n - 1], "cluster_status",
                                       "--formatter", "json"], timeout=60).stdout)

    def queue(self, vhost, queue):
        """The management API's view of a queue."""
        return self.mgmt("GET", f"queues/{urllib.parse.quote(vhost, safe='')}/{urllib.parse.quote(queue, safe='')}")

    def queue_leader(self, vhost, queue):
        """The node name leading a quorum queue (None until it has one)."""
        return self.queue(vhost, queue).get("leader")

    def amqp(self, n=1):
        """A harness.Amqp to node n, in this test's vhost (closed at teardown)."""
        if n not in self._amqp:
            self._amqp[n] = harness.Amqp(self.amqp_urls[n - 1])
        return self._amqp[n]


def _one_shot(port, *args):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(harness.resp_command(args))
        return harness._read_reply(s.makefile("rb"))
