"""The AMQP connection over time: heartbeats keep an idle connection up, a missing
dead-letter queue is declared again, and nothing is republished for a delivery the
broker has already taken back."""
import threading
import time

from harness import history_len, holds_for, idem_key, mgmt, quote, redis, wait_until
from webhook_server import WebhookServer

LOST = ("amqp connection lost", "amqp reconnect scheduled")


def test_idle_connection_survives_heartbeats(fx):
    # rabbitmq-c consumes heartbeat frames itself: eventd must count them as traffic,
    # or a connection with nothing to deliver is declared dead after two intervals.
    d = fx.start_daemon({"amqp": {"heartbeatSec": 2}})
    deadline = time.monotonic() + 12  # six heartbeat intervals of silence
    while time.monotonic() < deadline:
        lost = [line for msg in LOST for line in d.logged(msg)]
        assert not lost, f"the idle connection was dropped: {lost[:2]}"
        assert d.running(), f"eventd exited ({d.proc.returncode})"
        time.sleep(0.5)
    fx.amqp.publish("market.quotes", "", quote("IDLE", 5.0), message_id="idle-1")
    wait_until(lambda: history_len("IDLE") == 1, 15, 0.1, what="the quote applied after the idle period")
    assert redis("EXISTS", idem_key("IDLE", "idle-1")) == 1
    assert not [line for msg in LOST for line in d.logged(msg)], "the connection was dropped"
    assert d.stop() == 0


def test_deleted_dead_letter_queue_is_declared_again(fx):
    # The dead letter is unroutable (its queue is gone) and has no message_id: eventd
    # must notice that exact copy was returned, reconnect (declaring the topology),
    # and dead-letter the redelivered original into the new queue.
    d = fx.start_daemon()
    mgmt("DELETE", f"queues/{fx.vq}/eventd.quotes.dlq")
    wait_until(lambda: fx.amqp.depth("eventd.quotes.dlq") is None, 10, 0.1, what="eventd.quotes.dlq deleted")
    body = b'{"type":"quote_update","timestamp":1,"symbol":"NODLQ"'  # invalid JSON
    fx.amqp.publish("market.quotes", "", body)
    wait_until(lambda: (fx.amqp.depth("eventd.quotes.dlq") or 0) >= 1, 30, 0.2,
               what="the dead letter in the re-declared eventd.quotes.dlq")
    assert holds_for(lambda: fx.amqp.depth("eventd.quotes.dlq") == 1, 1.0), "more than one dead letter"
    [dead] = fx.amqp.get_all("eventd.quotes.dlq")
    assert dead.body == body, dead.body
    assert dead.headers.get("x-error-code") == "PARSE_ERROR", dead.headers
    assert fx.amqp.depth("eventd.quotes") == 0, "the original is still in eventd.quotes"
    assert d.logged("amqp connection lost"), "eventd did not reconnect to declare the topology again"
    assert d.running() and d.stop() == 0


def test_no_dead_letter_for_a_delivery_of_a_lost_connection(fx):
    # The first POST is held until eventd has reconnected: the broker has redelivered
    # that notification by then, so only the redelivery may be dead-lettered (the
    # old connection's delivery failing later must not be).
    entered, release = threading.Event(), threading.Event()
    first = threading.Lock()

    def hold_first(body):
        if first.acquire(blocking=False):
            entered.set()
            release.wait(30)

    hook = WebhookServer(fx, status=400)  # not retryable: dead-lettered at once
    hook.hold = hold_first
    fx.on_teardown(release.set)
    d = fx.start_daemon({"notify": {"channels": {"discord": {"sink": "webhook", "url": hook.url}},
                                    "webhookTimeoutMs": 60000,
                                    "rateLimit": {"perMinute": 1000, "burst": 100},
                                    "circuitBreaker": {"failureThreshold": 100}}})
    rc, out, err = d.eventctl("publish", "notification",
                              '{"userId":"stale","channel":"discord","title":"T","body":"B"}',
                              "--message-id", "stale-1")
    assert rc == 0, err
    assert entered.wait(15), "the webhook was not called"

    fx.close_eventd_connection()
    d.wait_log("amqp connection lost", timeout=15)
    d.wait_log("consuming", count=2, timeout=30)
    # The broker has redelivered the notification; its lease waits for the held POST.
    wait_until(lambda: fx.amqp.depth("eventd.notify.discord") == 0, 15, 0.1, what="the redelivery taken")
    release.set()
    wait_until(lambda: (fx.amqp.depth("eventd.notify.discord.dlq") or 0) >= 1, 30, 0.1,
               what="the dead letter of the redelivery")
    wait_until(lambda: hook.count() >= 2, 15, 0.1, what="the redelivery POSTed too")
    time.sleep(2)  # time for a second dead letter to show
    dead = fx.amqp.get_all("eventd.notify.discord.dlq")
    assert len(dead) == 1, f"{len(dead)} dead letters for one notification"
    assert dead[0].props.message_id == "stale-1"
    assert d.running() and d.stop() == 0
