"""The test clusters themselves (scripts/dev-services start-cluster), without eventd: what
the scale-out tests rely on. A failure here is in the servers or the harness, not eventd.
"""
import time

from cluster import key_slot
from harness import RedisError, wait_until


def error_of(call):
    """The Redis error call() raises (it must raise one)."""
    try:
        call()
    except RedisError as e:
        return str(e)
    raise AssertionError("expected a Redis error reply")


# ---------------------------------------------------------------- RabbitMQ cluster

def test_cluster_rabbitmq_has_three_running_nodes(fx):
    c = fx.cluster
    assert len(c.nodes) == 3 and len(set(c.nodes)) == 3, c.nodes
    for n in (1, 2, 3):
        status = c.cluster_status(n)
        assert sorted(status["running_nodes"]) == sorted(c.nodes), f"node {n}: {status['running_nodes']}"
        assert sorted(status["disk_nodes"]) == sorted(c.nodes), f"node {n}: {status['disk_nodes']}"
        assert not status["partitions"], status["partitions"]


def test_cluster_quorum_queue_has_a_leader_and_members_on_three_nodes(fx):
    c = fx.cluster
    c.amqp(1).channel().queue_declare("it.quorum", durable=True, arguments={"x-queue-type": "quorum"})

    def replicated():
        q = c.queue(c.vhost, "it.quorum")
        return q if q.get("leader") and len(q.get("members") or []) == 3 else None
    q = wait_until(replicated, 30, 0.5, what="a leader and 3 members for the quorum queue")
    assert q["type"] == "quorum"
    assert sorted(q["members"]) == sorted(c.nodes), q["members"]
    assert c.queue_leader(c.vhost, "it.quorum") in c.nodes
    assert c.node_index(q["leader"]) in (1, 2, 3)
    # One queue whichever node a client reaches: published through node 2, read on node 3.
    c.amqp(2).publish("", "it.quorum", {"n": 1})
    wait_until(lambda: c.amqp(3).depth("it.quorum") == 1, 10, 0.2, what="the message seen through node 3")


# ---------------------------------------------------------------- Redis Cluster

def test_cluster_redis_has_three_masters_each_with_a_replica(fx):
    c = fx.cluster
    masters = c.masters()
    assert len(masters) == 3, masters
    replicas = [c.replica_of(m) for m in masters]
    assert None not in replicas, dict(zip(masters, replicas))
    assert sorted(masters + replicas) == sorted(c.redis_ports), dict(zip(masters, replicas))
    assert [c.role(p) for p in masters] == ["master"] * 3
    assert [c.role(p) for p in replicas] == ["slave"] * 3
    assert c.count_keys() == 0, "the masters were not flushed for this test"


def test_cluster_redis_slots_and_hash_tags(fx):
    c = fx.cluster
    # The client's slots are the server's, hash tags included (the Redis manual's cases).
    for key in ["foo", "123456789", "{user1000}.following", "foo{}{bar}", "foo{{bar}}zap", "foo{bar}{zap}",
                "{}", "{", "eventd:idem:{AAPL}:m1", "ü{ß}"]:
        assert key_slot(key) == c.redis.node(c.redis_ports[0], "CLUSTER", "KEYSLOT", key), key
    keys = [f"eventd:idem:{{AAPL}}:m{i}" for i in range(20)]
    for key in keys:
        c.redis("SET", key, "1")
    [owner] = {c.master_of_key(key) for key in keys}
    assert c.redis.node(owner, "DBSIZE") == 20
    assert c.redis("MGET", *keys[:3]) == ["1"] * 3, "a multi-key command within one tag"
    untagged = [f"spread:{i}" for i in range(30)]
    for key in untagged:
        c.redis("SET", key, "1")
    assert len({c.master_of_key(key) for key in untagged}) == 3, "30 untagged keys all on fewer masters"
    assert c.count_keys("eventd:idem:{AAPL}:*") == 20
    assert c.count_keys() == 50


def test_cluster_redis_client_follows_moved(fx):
    c = fx.cluster
    key = "moved:{k1}"
    slot = key_slot(key)
    owner = c.master_of_slot(slot)
    wrong = next(m for m in c.masters() if m != owner)
    assert error_of(lambda: c.redis.node(wrong, "SET", key, "v")) == f"MOVED {slot} 127.0.0.1:{owner}"
    c.redis.slots[slot] = wrong  # a stale slot map: the write goes to the wrong node first
    moved = c.redis.redirects["MOVED"]
    assert c.redis("SET", key, "v") == "OK"
    assert c.redis.redirects["MOVED"] == moved + 1
    assert c.redis.slots[slot] == owner, "the map was not updated by MOVED"
    assert c.redis.node(owner, "GET", key) == "v"


def test_cluster_redis_client_follows_ask_during_a_migration(fx):
    c = fx.cluster
    key = "ask:{k2}"
    slot = key_slot(key)
    c.redis("SET", key, "before")
    src = c.master_of_slot(slot)
    dst = next(m for m in c.masters() if m != src)
    seen = {}

    def during():  # the key is on dst, src still owns the slot
        assert error_of(lambda: c.redis.node(src, "GET", key)) == f"ASK {slot} 127.0.0.1:{dst}"
        asks = c.redis.redirects["ASK"]
        seen["get"] = c.redis("GET", key)
        seen["set"] = c.redis("SET", key, "during")
        seen["asks"] = c.redis.redirects["ASK"] - asks
        seen["map"] = c.redis.slots[slot]
    c.migrate_slots([slot], src, dst, during=during)
    assert seen == {"get": "before", "set": "OK", "asks": 2, "map": src}, seen
    assert c.master_of_slot(slot) == dst
    assert error_of(lambda: c.redis.node(src, "GET", key)) == f"MOVED {slot} 127.0.0.1:{dst}"
    assert c.redis("GET", key) == "during"
    assert c.redis.node(dst, "GET", key) == "during"


def test_cluster_redis_failover_then_the_old_master_rejoins_as_a_replica(fx):
    c = fx.cluster
    key = "failover:{k3}"
    slot = key_slot(key)
    c.redis("SET", key, "kept")
    master = c.master_of_slot(slot)
    assert c.redis.node(master, "WAIT", 1, 2000) == 1, "the write did not reach the replica"
    replica = c.kill_master(master)
    assert replica is not None
    killed = time.monotonic()
    c.wait_cluster_ok(timeout=30)
    took = time.monotonic() - killed
    assert c.master_of_slot(slot) == replica, f"slot {slot} is served by {c.master_of_slot(slot)}"
    assert took < 15, f"the failover took {took:.1f} s"
    assert c.role(replica) == "master"
    assert c.redis("GET", key) == "kept"
    c.restart_node(master)
    wait_until(lambda: c.role(master) == "slave" and c.replica_of(replica) == master, 15, 0.2,
               what=f"{master} back as the replica of {replica}")
    c.redis.node(master, "READONLY")  # reads on this replica connection
    assert c.redis.node(master, "GET", key) == "kept"
    assert len(c.masters()) == 3


test_cluster_redis_failover_then_the_old_master_rejoins_as_a_replica.timeout = 150
