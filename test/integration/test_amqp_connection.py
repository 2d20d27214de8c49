"""The AMQP connection over time: heartbeats keep an idle connection up."""
import time

from harness import history_len, quote, redis, wait_until

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
    assert redis("EXISTS", "eventd:idem:idle-1") == 1
    assert not [line for msg in LOST for line in d.logged(msg)], "the connection was dropped"
    assert d.stop() == 0
