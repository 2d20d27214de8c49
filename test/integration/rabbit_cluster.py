"""A private RabbitMQ cluster for the tests that need several broker nodes.

    cluster = start_cluster(3)   # about 60-90 s on two cores
    cluster.nodes[0].url         # amqp://guest:guest@127.0.0.1:PORT/%2f
    cluster.stop_app(node) / cluster.start_app(node)
    cluster.stop()               # every node this started, nothing else

Each node runs from its own directory under one temporary directory owned by the
rabbitmq user (as scripts/dev-services starts its single node), on loopback ports
picked free from 36000-36099 (AMQP), 36100-36199 (management), 36200-36299 (Erlang
distribution). The nodes share the Erlang cookie of the rabbitmq user's home; nodes
2..n join the first with stop_app, join_cluster, start_app.

Meant to be swapped for `scripts/dev-services start-cluster` once that exists: the
tests only use start_cluster(), Cluster and Node.

start_node() starts one node the same way with a rabbitmq.conf and plugins of the
caller's (the TLS tests: TLS listeners only; management on plain HTTP):

    node = start_node("eventd-it-tls", conf=lambda n: "listeners.tcp = none\n...",
                      plugins=["rabbitmq_auth_mechanism_ssl"], amqp_ports=range(41000, 41050),
                      dist_ports=range(41050, 41100))
    node.ctl("add_user", "u", "p")   # rabbitmqctl -n <its node name> ...
    node.stop()
"""
import atexit
import base64
import collections
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

AMQP_PORTS = range(36000, 36100)
MGMT_PORTS = range(36100, 36200)
DIST_PORTS = range(36200, 36300)
START_TIMEOUT = 240  # seconds for every node to be up and joined

Node = collections.namedtuple("Node", "name amqp_port mgmt_port dist_port dir url mgmt_url")


def _port_free(port):
    # Erlang distribution listens on every interface: check the wildcard address.
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _free_ports(candidates, n, taken=()):
    out = [p for p in candidates if p not in taken and _port_free(p)][:n]
    if len(out) < n:
        raise AssertionError(f"fewer than {n} free ports in {candidates.start}-{candidates.stop - 1}")
    return out


def _ctl(node, *args, timeout=120, check=True):
    p = subprocess.run(["rabbitmqctl", "-q", "-n", node, *args], capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise AssertionError(f"rabbitmqctl -n {node} {' '.join(args)} exited {p.returncode}: "
                             f"{(p.stderr or p.stdout).strip()[-500:]}")
    return p


def _mgmt_up(node):
    req = urllib.request.Request(f"{node.mgmt_url}/api/overview")
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    try:
        with urllib.request.urlopen(req, timeout=3) as r:
            json.loads(r.read())
        return True
    except (OSError, urllib.error.URLError, ValueError):
        return False


def _default_conf(node):
    return (f"listeners.tcp.default = 127.0.0.1:{node.amqp_port}\n"
            f"management.tcp.port = {node.mgmt_port}\n"
            "management.tcp.ip = 127.0.0.1\n"
            "loopback_users.guest = true\n"
            "collect_statistics_interval = 1000\n")


class Cluster:
    """n nodes; `conf(node)` gives a node's rabbitmq.conf and `plugins` its enabled
    plugins (without rabbitmq_management, there are no management ports)."""

    def __init__(self, n, prefix, conf=_default_conf, plugins=("rabbitmq_management",), amqp_ports=AMQP_PORTS,
                 dist_ports=DIST_PORTS):
        self.dir = tempfile.mkdtemp(prefix="eventd-cluster-")
        os.chmod(self.dir, 0o755)
        self.conf = conf
        self.plugins = list(plugins)
        self.management = "rabbitmq_management" in self.plugins
        amqp = _free_ports(amqp_ports, n)
        mgmt = _free_ports(MGMT_PORTS, n) if self.management else [None] * n
        dist = _free_ports(dist_ports, n, taken=amqp)
        self.nodes = []
        for i in range(n):
            name = f"{prefix}-{i + 1}@localhost"
            d = os.path.join(self.dir, f"node{i + 1}")
            self.nodes.append(Node(name, amqp[i], mgmt[i], dist[i], d,
                                   f"amqp://guest:guest@127.0.0.1:{amqp[i]}/%2f",
                                   f"http://127.0.0.1:{mgmt[i]}" if self.management else None))
        self.procs = {}
        self.stopped = False

    # ------------------------------------------------------------ lifecycle

    def _launch(self, node):
        for sub in ("mnesia", "log"):
            os.makedirs(os.path.join(node.dir, sub), exist_ok=True)
        with open(os.path.join(node.dir, "rabbitmq.conf"), "w") as f:
            f.write(self.conf(node))
        with open(os.path.join(node.dir, "enabled_plugins"), "w") as f:
            f.write(f"[{','.join(self.plugins)}].\n")
        for root, dirs, files in os.walk(self.dir):
            for entry in [root] + [os.path.join(root, x) for x in dirs + files]:
                shutil.chown(entry, "rabbitmq", "rabbitmq")
        env = dict(os.environ,
                   RABBITMQ_NODENAME=node.name,
                   RABBITMQ_CONFIG_FILE=os.path.join(node.dir, "rabbitmq"),
                   RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(node.dir, "enabled_plugins"),
                   RABBITMQ_MNESIA_BASE=os.path.join(node.dir, "mnesia"),
                   RABBITMQ_LOG_BASE=os.path.join(node.dir, "log"),
                   RABBITMQ_DIST_PORT=str(node.dist_port),
                   RABBITMQ_PID_FILE=os.path.join(node.dir, "rabbitmq.pid"))
        out = open(os.path.join(self.dir, f"{os.path.basename(node.dir)}.stdout"), "wb")
        self.procs[node.name] = subprocess.Popen(["rabbitmq-server"], env=env, stdin=subprocess.DEVNULL, stdout=out,
                                                 stderr=subprocess.STDOUT, start_new_session=True)
        out.close()

    def _tail(self, node, n=3):
        """The last lines of the node's output that say something (its boot error)."""
        try:
            with open(os.path.join(self.dir, f"{os.path.basename(node.dir)}.stdout"), "rb") as f:
                lines = [l.strip() for l in f.read().decode("utf-8", "replace").splitlines() if l.strip()]
        except OSError:
            return "no output"
        return " | ".join(l[:300] for l in lines[-n:]) or "no output"

    def _await(self, node, deadline):
        # await_startup fails at once while the node has not registered with epmd.
        while True:
            proc = self.procs[node.name]
            if proc.poll() is not None:
                # Its directory goes with stop(): say here why it exited.
                raise AssertionError(f"RabbitMQ {node.name} exited ({proc.returncode}): {self._tail(node)}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"RabbitMQ {node.name} did not start in time; see {node.dir}/log")
            if _ctl(node.name, "await_startup", "--timeout", str(int(max(left, 1))), timeout=left + 10,
                    check=False).returncode == 0:
                return
            time.sleep(1)

    def start(self):
        deadline = time.monotonic() + START_TIMEOUT
        for node in self.nodes:  # in parallel: each boot is mostly waiting
            self._launch(node)
        for node in self.nodes:
            self._await(node, deadline)
        first = self.nodes[0].name
        for node in self.nodes[1:]:
            _ctl(node.name, "stop_app")
            _ctl(node.name, "join_cluster", first)
            _ctl(node.name, "start_app")
        for node in self.nodes:
            self._await(node, deadline)
            while self.management and not _mgmt_up(node):
                if time.monotonic() > deadline:
                    raise AssertionError(f"the management API of {node.name} did not answer")
                time.sleep(0.5)
        running = self.running_nodes()
        if sorted(running) != sorted(n.name for n in self.nodes):
            raise AssertionError(f"the cluster runs {running}, expected every node")
        return self

    def stop(self):
        """Stops every node this started (rabbitmqctl stop, then its process group if it lingers)."""
        if self.stopped:
            return
        self.stopped = True
        stoppers = [subprocess.Popen(["rabbitmqctl", "-q", "-n", n.name, "stop"], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    for n in self.nodes if self.procs.get(n.name) and self.procs[n.name].poll() is None]
        deadline = time.monotonic() + 45
        for p in stoppers:
            try:
                p.wait(max(deadline - time.monotonic(), 1))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for name, proc in self.procs.items():
            try:
                proc.wait(max(deadline - time.monotonic(), 1))
            except subprocess.TimeoutExpired:
                # Only the session this module started (start_new_session: its id is proc.pid).
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------ operations

    def node(self, amqp_port):
        return next(n for n in self.nodes if n.amqp_port == amqp_port)

    def ctl(self, node, *args, timeout=120, check=True):
        """rabbitmqctl on that node; the CompletedProcess."""
        return _ctl(node.name, *args, timeout=timeout, check=check)

    def stop_app(self, node):
        _ctl(node.name, "stop_app")

    def start_app(self, node):
        _ctl(node.name, "start_app")
        self._await(node, time.monotonic() + 120)

    def running_nodes(self):
        """Names of the running nodes, as the first node that answers sees them."""
        for node in self.nodes:
            p = _ctl(node.name, "cluster_status", "--formatter", "json", check=False, timeout=60)
            if p.returncode == 0:
                return json.loads(p.stdout).get("running_nodes", [])
        return []

    def urls(self):
        return ",".join(n.url for n in self.nodes)


_started = []


def _stop_all():
    for c in _started:
        c.stop()


atexit.register(_stop_all)


def _start(cluster):
    _started.append(cluster)
    try:
        return cluster.start()
    except BaseException:
        cluster.stop()
        raise


def start_cluster(n=3, prefix=None):
    """n joined nodes, up; stop() them when done (also at interpreter exit)."""
    return _start(Cluster(n, prefix or f"eventd-it-cluster-{os.getpid()}"))


class PrivateNode:
    """One node of its own (a Cluster of one): its Node fields, ctl() and stop()."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.node = cluster.nodes[0]
        self.name = self.node.name
        self.port = self.node.amqp_port
        self.dir = self.node.dir

    def ctl(self, *args, **kw):
        return self.cluster.ctl(self.node, *args, **kw)

    def stop(self):
        self.cluster.stop()


def start_node(prefix, conf, plugins=(), amqp_ports=AMQP_PORTS, dist_ports=DIST_PORTS):
    """One node, up, with the rabbitmq.conf `conf(node)` and `plugins`; stop() it when
    done (also at interpreter exit). node.amqp_port is the port conf should listen on."""
    return PrivateNode(_start(Cluster(1, f"{prefix}-{os.getpid()}", conf=conf, plugins=plugins,
                                      amqp_ports=amqp_ports, dist_ports=dist_ports)))
