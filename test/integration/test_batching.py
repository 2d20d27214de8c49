"""Batches: the messages of one type ready in one loop pass go to Redis as one FCALL
per node, and every message still has its own result, key and ack.

Each test fills the queue before eventd starts, so it finds hundreds of messages at
once, and counts FCALLs in INFO commandstats to show the batching really happened.
"""
import shlex
import socket

from harness import (REDIS_PORT, finish_and_count, history_len, quote, redis, redis_up, resp_command, wait_until)


def fcalls():
    """FCALLs Redis has run since the last CONFIG RESETSTAT."""
    for line in redis("INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_fcall:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


class Monitor:
    """Redis MONITOR on a connection of its own: the commands Redis ran, as lists of
    strings, up to a marker the test sends when it is done."""

    def __init__(self):
        self.sock = socket.create_connection(("127.0.0.1", REDIS_PORT), timeout=10)
        self.sock.sendall(resp_command(["MONITOR"]))
        self.lines = self.sock.makefile("rb")
        assert self.lines.readline() == b"+OK\r\n"

    def commands_until_now(self):
        marker = "monitor-marker"
        redis("ECHO", marker)
        out = []
        for raw in self.lines:
            # 1733100000.123456 [0 127.0.0.1:40000] "FCALL" "name" "3" ...
            words = shlex.split(raw.decode("utf-8", "replace").split("] ", 1)[1])
            if words == ["ECHO", marker]:
                return out
            out.append(words)
        raise AssertionError("MONITOR connection closed")

    def close(self):
        self.sock.close()


def prefill(fx, symbols, per_symbol):
    """per_symbol quotes of each symbol, interleaved, published before eventd runs."""
    for i in range(per_symbol):
        for s in symbols:
            fx.amqp.publish("market.quotes", "", quote(s, 100.0 + i), message_id=f"{s}-{i}")


def test_a_backlog_goes_in_batches_and_each_message_counts_once(fx):
    d = fx.daemon({"quotes": {"historyLength": 5000}, "amqp": {"prefetch": 500}, "redis": {"batchSize": 100}})
    fx.topology_apply(d.config_path)
    symbols = [f"B{i}" for i in range(20)]
    prefill(fx, symbols, 50)
    redis("CONFIG", "RESETSTAT")
    d.start().wait_ready()
    wait_until(lambda: all(history_len(s) == 50 for s in symbols), 60, 0.1, what="every quote applied")
    calls = fcalls()
    # 1,000 messages; at most redis.batchSize (100 here) per call, as many as one loop pass has.
    assert 10 <= calls < 500, f"{calls} FCALLs for 1000 quotes: not batched"
    assert d.stop() == 0
    for s in symbols:
        assert history_len(s) == 50, f"{s}: {history_len(s)} prices, expected exactly 50"
        assert [float(p) for p in redis("LRANGE", f"eventd:history:{{{s}}}", 0, -1)] == [100.0 + i for i in range(50)]
    assert fx.amqp.depth("eventd.quotes") == 0 and fx.amqp.depth("eventd.quotes.dlq") == 0


def test_a_poison_message_fails_alone_in_its_batch(fx):
    d = fx.daemon({"retry": {"maxAttempts": 2}})
    fx.topology_apply(d.config_path)
    symbols = [f"P{i}" for i in range(30)]
    redis("SET", "eventd:history:{P7}", "not a list")  # P7's function run fails (WRONGTYPE)
    prefill(fx, symbols, 1)
    redis("CONFIG", "RESETSTAT")
    d.start().wait_ready()
    wait_until(lambda: fx.amqp.depth("eventd.quotes.dlq") == 1, 30, 0.1, what="the poison message dead-lettered")
    good = [s for s in symbols if s != "P7"]
    assert all(history_len(s) == 1 for s in good), {s: history_len(s) for s in good}
    assert fcalls() < len(symbols), f"{fcalls()} FCALLs for {len(symbols)} quotes: not batched"
    [dead] = fx.amqp.get_all("eventd.quotes.dlq")
    assert dead.props.message_id == "P7-0", dead.props.message_id
    assert "WRONGTYPE" in dead.headers["x-error-message"], dead.headers
    assert redis("GET", "eventd:history:{P7}") == "not a list"
    assert redis("EXISTS", "eventd:quote:{P7}") == 0, "the failed run stored the quote"
    assert redis("EXISTS", "eventd:idem:{P7}:P7-0") == 0, "the failed run marked the message done"
    assert d.stop() == 0


def test_batches_cut_by_redis_dropping_connections_are_run_again_once(fx):
    # CLIENT KILL drops eventd's Redis connection with batches in flight: their replies
    # are lost whether or not Redis ran them. Each message runs again, and what had
    # been applied is seen as a duplicate: every quote exactly once.
    n = 4000
    d = fx.daemon({"quotes": {"historyLength": 5000}})
    fx.topology_apply(d.config_path)
    rc, out, err = d.eventctl("publish", "quote_update", '{"symbol":"CUT","price":1,"change":0}', "--count", str(n))
    assert rc == 0, err
    d.start()
    kills = 0
    for threshold in (500, 1500, 2500):
        wait_until(lambda: history_len("CUT") >= threshold, 60, 0.005, what=f"{threshold} quotes applied")
        if history_len("CUT") < n:
            redis("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            kills += 1
    assert kills >= 2, "the backlog drained before the connections were dropped: nothing was tested"
    assert redis_up()
    finish_and_count(fx, d, "CUT", n, start=False)
    assert fx.amqp.depth("eventd.quotes.dlq") == 0


def test_a_lone_message_goes_at_once_in_a_call_of_its_own(fx):
    # At a low rate no other message comes to fill a batch: each quote must go to Redis
    # as soon as it arrives, in an FCALL of one item, not wait for company. Each is
    # applied before the next is published, so nothing but the lone quote can flush it.
    d = fx.start_daemon()
    monitor = Monitor()
    fx.on_teardown(monitor.close)
    for i in range(5):
        fx.amqp.publish("market.quotes", "", quote("LONE", 100.0 + i), message_id=f"lone-{i}")
        wait_until(lambda: history_len("LONE") == i + 1, 10, 0.01, what=f"quote {i} applied with nothing after it")
    calls = [c for c in monitor.commands_until_now() if c[0].upper() == "FCALL" and "quote" in c[1]]
    # FCALL name numkeys keys... item-count ...: one call per quote, one item each.
    assert len(calls) == 5, calls
    assert [c[3 + int(c[2])] for c in calls] == ["1"] * 5, calls
    assert d.stop() == 0
