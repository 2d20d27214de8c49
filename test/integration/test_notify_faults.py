"""Notification sinks when Redis fails around a delivery: never delivered twice by eventd itself."""
import time

from harness import dev_services, holds_for, lease_key, redis, redis_up, wait_until
from test_domain import domain_config, processed, publish_notification
from webhook_server import WebhookServer


def test_webhook_delivered_then_redis_down_posts_once(fx):
    # The webhook answers 200 only after Redis has stopped: eventd cannot write the
    # idempotency key. When Redis is back it must record the delivery, not POST again
    # (neither at once nor when the lease, 13 s here, expires).
    fx.on_teardown(lambda: redis_up() or dev_services("start-redis"))
    stopped = []

    def stop_redis_then_accept(_body):
        if not stopped:
            dev_services("stop-redis")
            stopped.append(time.monotonic())
        return 200
    hook = WebhookServer(fx, status=stop_redis_then_accept)
    d = fx.start_daemon(domain_config(fx, hook, {"notify": {"webhookTimeoutMs": 3000}}))
    publish_notification(fx, d, "once", "discord", "T-once", "B-once", message_id="once-1")
    hook.wait_posts(1)
    d.wait_log("redis unavailable: consumption paused", timeout=15)
    dev_services("start-redis")
    wait_until(lambda: processed("once", "once-1"), 30, 0.2, what="the delivery recorded once Redis is back")
    # A second POST would come when the lease expires (webhookTimeoutMs + 10 s after it was taken).
    lease_expired_by = stopped[0] + 3 + 10 + 2
    assert holds_for(lambda: hook.count() == 1, max(lease_expired_by - time.monotonic(), 2)), \
        f"{hook.count()} POSTs: the notification was delivered again"
    assert redis("EXISTS", lease_key("once", "once-1")) == 0, "the lease was not freed"
    wait_until(lambda: fx.amqp.depth("eventd.notify.discord") == 0, 10, what="eventd.notify.discord drained")
    assert fx.amqp.depth("eventd.notify.discord.dlq") == 0
    assert d.running() and d.stop() == 0


test_webhook_delivered_then_redis_down_posts_once.timeout = 120
