"""Several broker nodes: eventd moves to another node when it loses one (on a real
3-node cluster, mid-stream, every quote applied exactly once), eventd and eventctl
pass over a node that does not answer, and quorumInitialGroupSize sizes new quorum
queues while existing ones keep theirs."""
import base64
import datetime
import json
import os
import subprocess
import time
import urllib.parse
import urllib.request

from harness import (EVENTCTL, Amqp, closed_port, finish_and_count, history_key, history_len, mgmt, quote, redis,
                     wait_publisher, wait_until, while_binary_is_relinked)
from rabbit_cluster import start_cluster
from test_operations import metric, scrape

N = 2000


def node_metrics(port):
    """{node label: value} of eventd_amqp_connected_node."""
    return {dict(labels)["node"]: v for (name, labels), v in scrape(port).items()
            if name == "eventd_amqp_connected_node"}


def log_time(line):
    return datetime.datetime.strptime(line["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()


def mgmt_on(node, path):
    """GET on the management API of one cluster node."""
    req = urllib.request.Request(f"{node.mgmt_url}/api/{path}")
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def publish_in_background(fx, url, symbol, count, rate):
    """eventctl publish to the node(s) of `url` only; wait with harness.wait_publisher."""
    env = dict(fx.env, EVENTD_AMQP_URL=url)
    out = open(os.path.join(fx.tmp, f"eventctl-bg-{len(fx.background)}.out"), "w+")
    body = json.dumps({"symbol": symbol, "price": 1, "change": 0})
    p = while_binary_is_relinked(lambda: subprocess.Popen(
        [EVENTCTL, "publish", "quote_update", body, "--count", str(count), "--rate", str(rate)], env=env,
        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, text=True))
    p.output = out
    fx.background.append(p)
    return p


def test_cluster_node_lost_mid_stream(fx):
    started = time.monotonic()
    cluster = start_cluster(3)
    fx.on_teardown(cluster.stop)
    boot = time.monotonic() - started
    nodes = cluster.nodes
    labels = [f"127.0.0.1:{n.amqp_port}" for n in nodes]
    # All three nodes, with spaces around the commas as an operator may write them.
    fx.env["EVENTD_AMQP_URL"] = " , ".join(n.url for n in nodes)
    fx.env["EVENTD_MANAGEMENT_URL"] = nodes[0].mgmt_url
    port = closed_port()
    d = fx.daemon({"quotes": {"historyLength": 5000}, "topology": {"quorumInitialGroupSize": 3},
                   "http": {"enabled": True, "listen": f"127.0.0.1:{port}"}})
    d.start().wait_ready(timeout=60)
    [first] = d.logged("amqp connected")
    assert first["node"] in labels, first
    lost = labels.index(first["node"])
    assert node_metrics(port) == {l: (1 if i == lost else 0) for i, l in enumerate(labels)}, node_metrics(port)

    # Quorum queues on all three nodes, so losing one keeps a majority.
    q = mgmt_on(nodes[0], "queues/%2f/eventd.quotes")
    assert q["arguments"].get("x-quorum-initial-group-size") == 3, q["arguments"]
    assert len(q.get("members", [])) == 3, q.get("members")
    rc, out, err = d.eventctl("topology", "verify")
    assert rc == 0, err

    # The stream goes to a node that stays up; eventd's node is stopped mid-stream.
    publish_to = nodes[(lost + 1) % 3]
    fx.amqp = Amqp(publish_to.url)
    pub = publish_in_background(fx, publish_to.url, "HA", N, rate=250)
    wait_until(lambda: history_len("HA") >= 400, 60, 0.05, what="the stream to be under way")
    cluster.stop_app(nodes[lost])
    assert history_len("HA") < N, "the stream was over before the node stopped: the test did not test anything"

    d.wait_log("amqp connection lost", timeout=15)
    scheduled = d.wait_log("amqp reconnect scheduled", timeout=5)[0]
    assert scheduled["node"] == labels[(lost + 1) % 3], f"not the next node in turn: {scheduled}"
    assert scheduled["delay_ms"] < 1000, f"the first retry on another node waited the backoff: {scheduled}"
    second = d.wait_log("amqp connected", count=2, timeout=60)[1]
    assert second["node"] != labels[lost], f"reconnected to the stopped node: {second}"
    moved_in = log_time(second) - log_time(d.logged("amqp connection lost")[0])
    wait_until(lambda: node_metrics(port).get(second["node"]) == 1, 15, 0.2, what="the metric naming the new node")
    now = node_metrics(port)
    assert now[labels[lost]] == 0 and sum(now.values()) == 1, now

    wait_publisher(pub, timeout=120)
    finish_and_count(fx, d, "HA", N, timeout=120, start=False)
    assert "guest:guest" not in open(d.log_path).read(), "a password in the log"
    print(f"    cluster up in {boot:.0f} s; eventd on another node {moved_in:.2f} s after losing its own")


test_cluster_node_lost_mid_stream.timeout = 480


def dead_node_url(fx, password="guest"):
    return f"amqp://guest:{password}@127.0.0.1:{closed_port()}/{fx.vq}"


def test_eventctl_passes_over_a_node_that_does_not_answer(fx):
    env = dict(fx.env, EVENTD_AMQP_URL=f"{dead_node_url(fx)},{fx.amqp_url}")
    rc, out, err = fx.eventctl("topology", "apply", env=env)
    assert rc == 0, err
    rc, out, err = fx.eventctl("publish", "quote_update", '{"symbol":"SKIP","price":2,"change":0}',
                               "--message-id", "skip-1", env=env)
    assert rc == 0, err
    assert fx.amqp.depth("eventd.quotes") == 1
    rc, out, err = fx.eventctl("dlq", "list", env=env)
    assert rc == 0 and "eventd.quotes.dlq" in out, err

    # None answers: one line naming each node, exit 1, no password.
    a, b = dead_node_url(fx, "s3cr3t-pw"), dead_node_url(fx, "s3cr3t-pw")
    rc, out, err = fx.eventctl("dlq", "list", env=dict(fx.env, EVENTD_AMQP_URL=f"{a},{b}"))
    assert rc == 1, (rc, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("eventctl: none of the 2 RabbitMQ nodes answered: "), err
    for url in (a, b):
        assert urllib.parse.urlsplit(url).netloc.split("@")[1] in lines[0], (url, err)
    assert "s3cr3t" not in err


def test_eventd_passes_over_nodes_that_do_not_answer(fx):
    # Two dead nodes and a live one: wherever it starts, eventd reaches the live node
    # within a round of short hops.
    port = closed_port()
    fx.env["EVENTD_AMQP_URL"] = f"{dead_node_url(fx)},{dead_node_url(fx)},{fx.amqp_url}"
    live = f"127.0.0.1:{urllib.parse.urlsplit(fx.amqp_url).port}"
    d = fx.daemon({"http": {"enabled": True, "listen": f"127.0.0.1:{port}"}}).start().wait_ready(timeout=20)
    assert [l["node"] for l in d.logged("amqp connected")] == [live]
    assert all(l["node"] != live for l in d.logged("amqp connect failed"))
    delays = [l["delay_ms"] for l in d.logged("amqp reconnect scheduled")]
    assert len(delays) <= 2 and all(ms < 1000 for ms in delays), delays
    nodes = node_metrics(port)
    assert len(nodes) == 3 and nodes[live] == 1 and sum(nodes.values()) == 1, nodes
    assert metric(scrape(port), "eventd_amqp_up") == 1
    fx.amqp.publish("market.quotes", "", quote("PAST", 3.0), message_id="past-1")
    wait_until(lambda: history_len("PAST") == 1, 15, 0.1, what="the quote applied")
    assert d.stop() == 0


KEPT = "existing queues kept as they are"


def quorum_queues(fx):
    return sorted(q["name"] for q in mgmt("GET", f"queues/{fx.vq}") if q.get("type") == "quorum")


def test_quorum_initial_group_size_new_and_existing_queues(fx):
    # Queues created without the setting; then eventd and eventctl with it.
    fx.topology_apply()
    existing = quorum_queues(fx)
    assert len(existing) > 14, existing  # work, dead-letter and retry queues
    d = fx.daemon({"topology": {"quorumInitialGroupSize": 3}})
    d.start().wait_ready(timeout=30)
    [kept] = d.logged(KEPT)
    assert kept["level"] == "warn", kept
    assert kept["detail"].startswith(f"{len(existing)} existing queue(s) keep the x-quorum-initial-group-size"), kept
    assert "eventd.quotes (none)" in kept["detail"] and "rabbitmq-queues" in kept["detail"], kept
    rc, out, err = d.eventctl("topology", "verify")
    assert rc == 0, err
    assert f"note: {len(existing)} existing queue(s) keep the x-quorum-initial-group-size" in out, out

    # A queue created now gets the argument (one node: one member, the broker caps it).
    assert d.stop() == 0
    mgmt("DELETE", f"queues/{fx.vq}/eventd.alerts.dlq")
    rc, out, err = d.eventctl("topology", "apply")
    assert rc == 0, err
    assert f"note: {len(existing) - 1} existing queue(s)" in out, out
    q = mgmt("GET", f"queues/{fx.vq}/eventd.alerts.dlq")
    assert q["arguments"].get("x-quorum-initial-group-size") == 3, q["arguments"]
    assert q["arguments"].get("x-queue-type") == "quorum", q["arguments"]

    # Without the setting, any size will do: nothing to say about the queue that has one.
    plain = fx.daemon()
    plain.start().wait_ready(timeout=30)
    assert not plain.logged(KEPT)
    rc, out, err = plain.eventctl("topology", "verify")
    assert rc == 0 and "note:" not in out, (out, err)
    assert plain.stop() == 0


def test_classic_retry_queue_of_an_older_eventd_is_kept(fx):
    # Before retry queues followed their work queue's type they were classic.
    retry = "eventd.quotes.retry.200ms"
    fx.amqp.channel().queue_declare(retry, durable=True, arguments={
        "x-queue-type": "classic", "x-message-ttl": 200, "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "eventd.quotes"})
    d = fx.daemon().start().wait_ready(timeout=30)
    [kept] = d.logged(KEPT)
    assert kept["detail"].startswith(f"1 retry queue(s) made classic by an older eventd are kept: {retry};"), kept
    assert "delete_queue --if-empty" in kept["detail"], kept
    queues = fx.queues()
    assert queues[retry]["type"] == "classic" and queues["eventd.quotes.retry.400ms"]["type"] == "quorum"
    rc, out, err = d.eventctl("topology", "verify")
    assert rc == 0 and "1 retry queue(s) made classic" in out, (out, err)

    # It still works: a retryable failure waits in it and comes back.
    redis("SET", history_key("OLDRETRY"), "not a list")
    fx.amqp.publish("market.quotes", "", quote("OLDRETRY", 1.0), message_id="old-retry-1")
    d.wait_log("retrying", timeout=15)
    redis("DEL", history_key("OLDRETRY"))
    wait_until(lambda: history_len("OLDRETRY") == 1, 20, 0.1, what="the retried quote applied")
    assert d.stop() == 0

    # Deleted while empty, it comes back as quorum.
    mgmt("DELETE", f"queues/{fx.vq}/{urllib.parse.quote(retry, safe='')}?if-empty=true")
    d.start().wait_ready(timeout=30)
    assert not d.logged(KEPT)
    assert fx.queues()[retry]["type"] == "quorum"
    assert d.stop() == 0
