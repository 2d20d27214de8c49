"""Faults mid-stream: eventd killed, Redis stopped, RabbitMQ restarted.

Each ends with the same check: the history of the streamed symbol holds exactly as
many prices as messages were confirmed by the broker (nothing lost, nothing applied
twice) and no message is left in the queue or dead-lettered.
"""
import time

from harness import (WORK_QUEUES, dev_services, finish_and_count, history_len, mgmt, mgmt_up, now_ms, rabbitmqctl,
                     redis, redis_up, stop_redis, wait_publisher, wait_until)

N = 3000


def test_kill9_mid_stream(fx):
    d = fx.daemon({"quotes": {"historyLength": 5000}})
    fx.topology_apply(d.config_path)
    # A backlog, so hundreds of messages are in flight when the kill lands, and a live
    # stream, so the kill lands before the end whatever the timing.
    rc, out, err = d.eventctl("publish", "quote_update", '{"symbol":"KILL","price":1,"change":0}', "--count", "1500")
    assert rc == 0, err
    d.start()
    pub = fx.publish_stream(d, "KILL", N - 1500, rate=1500)
    wait_until(lambda: history_len("KILL") >= 300 or not d.running(), 30, 0.01, what="the stream to be under way")
    assert d.running(), f"eventd exited {d.proc.returncode} on its own"
    d.kill9()
    at_kill = history_len("KILL")
    assert at_kill < N, "the stream was over before the kill: the test did not test anything"
    wait_publisher(pub)
    finish_and_count(fx, d, "KILL", N)


def test_redis_outage_mid_stream(fx):
    d = fx.start_daemon({"quotes": {"historyLength": 5000}})
    pub = fx.publish_stream(d, "REDIS", N, rate=500)
    wait_until(lambda: history_len("REDIS") >= 300, 30, what="the stream to be under way")
    stop_redis(fx)
    down_at = time.monotonic()
    assert not redis_up(), "Redis is still up"
    d.wait_log("redis unavailable: consumption paused", timeout=10)
    while time.monotonic() - down_at < 4:  # the outage itself: ~4 s, the daemon must ride it out
        assert d.running(), f"eventd exited ({d.proc.returncode}) while Redis was down"
        time.sleep(0.1)
    dev_services("start-redis")
    assert pub.poll() is None or history_len("REDIS") < N, "the outage did not happen mid-stream"
    d.wait_log("redis connected", count=2, timeout=30)
    wait_publisher(pub)
    wait_until(lambda: history_len("REDIS") >= N and fx.amqp.depth("eventd.quotes") == 0, 60, 0.2,
               what=f"all {N} quotes applied after Redis came back")
    assert d.running(), "eventd exited"
    finish_and_count(fx, d, "REDIS", N, start=False)


def test_sigterm_while_redis_is_down(fx):
    d = fx.start_daemon({"quotes": {"historyLength": 5000}, "shutdown": {"drainTimeoutMs": 2000}})
    stop_redis(fx)
    d.wait_log("redis unavailable: consumption paused", timeout=10)
    rc, out, err = d.eventctl("publish", "quote_update", '{"symbol":"RDOWN","price":1,"change":0}', "--count", "100")
    assert rc == 0, err
    started = time.monotonic()
    assert d.stop(timeout=20) == 0, "eventd did not exit 0 on SIGTERM while Redis was down"
    assert time.monotonic() - started < 10, "eventd took too long to stop"
    lines = d.log_lines()
    assert lines[-1]["msg"] == "stopped", lines[-1]
    dev_services("start-redis")
    finish_and_count(fx, d, "RDOWN", 100)


def test_rabbitmq_restart_mid_stream(fx):
    # prefetch 1 slows eventd down (one round trip per message) so the broker's
    # restart lands in the middle of the backlog.
    d = fx.daemon({"quotes": {"historyLength": 5000}, "amqp": {"prefetch": 1}})
    fx.topology_apply(d.config_path)
    rc, out, err = d.eventctl("publish", "quote_update", '{"symbol":"RMQ","price":1,"change":0}', "--count", str(N))
    assert rc == 0, err
    d.start()
    wait_until(lambda: history_len("RMQ") >= 300 or not d.running(), 30, 0.01, what="the backlog to be under way")

    def start_app():
        if not mgmt_up():
            rabbitmqctl("start_app")
            wait_until(mgmt_up, 60, 0.5, what="the management API")
    fx.on_teardown(start_app)
    rabbitmqctl("stop_app")
    at_stop = history_len("RMQ")
    assert at_stop < N, "the backlog was done before the broker stopped: the test did not test anything"
    assert d.running(), "eventd exited when the broker stopped"
    d.wait_log("amqp connection lost", timeout=10)
    rabbitmqctl("start_app")
    wait_until(mgmt_up, 60, 0.5, what="the management API after start_app")

    wait_until(lambda: history_len("RMQ") >= N, 60, 0.2,
               what=f"the rest of the backlog applied after the restart (had {at_stop} at the stop)")

    def one_consumer_each():
        counts = fx.queue_consumers()
        return all(counts.get(q) == 1 for q in WORK_QUEUES) and sum(counts.values()) == len(WORK_QUEUES)
    wait_until(one_consumer_each, 60, 0.5, what="one consumer per work queue again")
    assert d.running(), "eventd exited"
    assert len(d.logged("amqp connected")) >= 2, "no reconnect logged"
    # The consumers really deliver: new messages after the restart are applied too.
    rc, out, err = d.eventctl("publish", "quote_update", '{"symbol":"RMQ","price":2,"change":0}', "--count", "100")
    assert rc == 0, err
    finish_and_count(fx, d, "RMQ", N + 100, start=False)


test_rabbitmq_restart_mid_stream.timeout = 240
test_redis_outage_mid_stream.timeout = 180


def quote_applied_after(fx, d, symbol, price):
    rc, out, err = d.eventctl("publish", "quote_update", f'{{"symbol":"{symbol}","price":{price},"change":0}}')
    assert rc == 0, err
    wait_until(lambda: history_len(symbol) == 1, 30, 0.1, what=f"a quote of {symbol} applied")


def test_consumer_comes_back_after_queue_deletion(fx):
    d = fx.start_daemon()
    mgmt("DELETE", f"queues/{fx.vq}/eventd.quotes")
    d.wait_log("amqp connection lost", timeout=15)
    wait_until(lambda: fx.amqp.depth("eventd.quotes") is not None, 30, 0.2, what="eventd.quotes declared again")
    wait_until(lambda: fx.queue_consumers().get("eventd.quotes") == 1, 30, 0.5, what="a consumer on eventd.quotes")
    quote_applied_after(fx, d, "QDEL", 3)
    assert d.running() and d.stop() == 0


def test_connection_closed_by_operator(fx):
    d = fx.start_daemon()

    fx.close_eventd_connection()
    d.wait_log("amqp connection lost", timeout=15)
    d.wait_log("consuming", count=2, timeout=60)
    quote_applied_after(fx, d, "CCLOSE", 4)
    assert d.running() and d.stop() == 0


def test_redis_hangs_mid_stream(fx):
    # Redis accepts connections but answers nothing (CLIENT PAUSE ALL) for longer than
    # connectTimeoutMs: eventd must give up on the connection, wait, and recover.
    d = fx.start_daemon({"quotes": {"historyLength": 5000}, "redis": {"connectTimeoutMs": 1500}})
    pub = fx.publish_stream(d, "HANG", 2000, rate=500)
    wait_until(lambda: history_len("HANG") >= 300, 30, what="the stream to be under way")
    redis("CLIENT", "PAUSE", 6000, "ALL")
    fx.on_teardown(lambda: redis("CLIENT", "UNPAUSE"))
    d.wait_log("redis connection lost", timeout=15)
    assert d.running(), "eventd exited while Redis hung"
    wait_publisher(pub)
    wait_until(lambda: history_len("HANG") >= 2000 and fx.amqp.depth("eventd.quotes") == 0, 60, 0.2,
               what="all 2000 quotes applied after Redis answered again")
    finish_and_count(fx, d, "HANG", 2000, start=False)


test_redis_hangs_mid_stream.timeout = 180


def test_crash_looping_message_is_dead_lettered_by_the_broker(fx):
    # A message that kills eventd every time it is delivered: the quorum queue's
    # x-delivery-limit must move it to the DLQ instead of redelivering it forever
    # (or dropping it). The "crash" is a kill -9 while the message is in flight
    # (Redis writes held, so eventd cannot finish it).
    limit = 2
    d = fx.daemon({"topology": {"deliveryLimit": limit}})
    fx.on_teardown(lambda: redis("CLIENT", "UNPAUSE"))
    fx.topology_apply(d.config_path)
    # A first run loads eventd's function libraries: later runs only look them up,
    # which CLIENT PAUSE WRITE lets through, so they get as far as the message.
    d.start().wait_ready()
    assert d.stop() == 0
    body = b'{"type":"quote_update","timestamp":%d,"symbol":"LOOP","price":1,"change":0}' % now_ms()
    fx.amqp.publish("market.quotes", "LOOP", body, message_id="loop-1")
    deliveries = 0
    for _ in range(limit + 2):
        wait_until(lambda: fx.amqp.depth("eventd.quotes") == 1 or fx.amqp.depth("eventd.quotes.dlq") == 1, 15, 0.05,
                   what="the message back in eventd.quotes or in its DLQ")
        if fx.amqp.depth("eventd.quotes.dlq") == 1:
            break
        redis("CLIENT", "PAUSE", 10000, "WRITE")
        d.start()
        wait_until(lambda: fx.amqp.depth("eventd.quotes") == 0 or not d.running(), 15, 0.05,
                   what=f"delivery {deliveries + 1} to eventd")
        d.kill9()
        redis("CLIENT", "UNPAUSE")
        deliveries += 1
    assert fx.amqp.depth("eventd.quotes.dlq") == 1, f"still not dead-lettered after {deliveries} deliveries"
    assert deliveries >= limit, f"dead-lettered after only {deliveries} deliveries (limit {limit})"
    [dead] = fx.amqp.get_all("eventd.quotes.dlq")
    assert dead.body == body and dead.props.message_id == "loop-1"
    assert fx.amqp.depth("eventd.quotes") == 0
    assert history_len("LOOP") == 0
