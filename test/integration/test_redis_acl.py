"""eventd and eventctl under a least-privilege Redis ACL user (the rule of the README's
"Redis with least privilege", read from there), what they say when a right is missing,
and both over a unix socket. Each test runs its own redis-server (private_redis.py)."""
import json
import os
import socket

from harness import SOURCE_DIR, RedisError, _read_reply, holds_for, now_ms, quote, resp_command, tag, wait_until
from private_redis import PrivateRedis
from test_domain import domain_config, email_lines

PASSWORD = "s3cret-acl-pw"


def readme_acl_rule():
    with open(os.path.join(SOURCE_DIR, "README.md")) as f:
        [line] = [l.strip() for l in f if l.startswith("ACL SETUSER eventd ")]
    return line


def acl_args(without=(), keys=None):
    """The README's rule as ACL SETUSER arguments, minus the rules in `without`, with
    another key pattern if given."""
    args = readme_acl_rule().split()[1:]  # SETUSER eventd ...
    args = ["SETUSER", "eventd"] + [a.replace("PASSWORD", PASSWORD) for a in args[2:] if a not in without]
    if keys is not None:
        args = [keys if a == "~eventd:*" else a for a in args]
    return args


def acl_env(fx, r, db=0):
    return dict(fx.env, EVENTD_REDIS_URL=r.url("eventd", PASSWORD, db))


def spec(symbol, threshold, channels=("push", "email")):
    return json.dumps({"rules": [{"alertId": 1, "symbol": symbol, "condition": "price_above",
                                  "threshold": threshold}], "channels": list(channels)})


def assert_no_password_in(d):
    with open(d.log_path, "rb") as f:
        assert PASSWORD.encode() not in f.read(), f"{d.name} logged the Redis password"


def run_flow(fx, r, db):
    """Monitors, an alert to push (redis sink) and email, analysis with reply_to, a DLQ
    replay: the effects in Redis, nothing dead-lettered but the poison message."""
    d = fx.daemon(domain_config(fx))
    d.start().wait_ready()
    rc, out, err = fx.eventctl("--config", d.config_path, "monitor", "start", "alice", spec("ACLX", 100))
    assert rc == 0, f"monitor start under the ACL user exited {rc}: {err}"
    rc, out, err = fx.eventctl("--config", d.config_path, "monitor", "start", "bob", spec("ACLX", 500, ["push"]))
    assert rc == 0, err
    for i, price in enumerate((99.0, 101.0)):
        fx.amqp.publish("market.quotes", "", quote("ACLX", price), message_id=f"aclx-{i}")
    stream = f"eventd:notifications:{tag('alice')}"
    wait_until(lambda: r("XLEN", stream, db=db) == 1, 20, what="the alert's push notification in the stream")
    wait_until(lambda: len(email_lines(fx)) == 1, 20, what="the alert's email")
    assert r("LLEN", f"eventd:alerts:{tag('alice')}", db=db) == 1
    assert r("XLEN", f"eventd:notifications:{tag('bob')}", db=db) == 0, "bob's rule fired below its threshold"

    # analysis_request with reply_to, on 60 prices of history.
    for i in range(60):
        fx.amqp.publish("market.quotes", "", quote("ACLA", 100 + (i % 7) - 0.1 * i), message_id=f"acla-{i}")
    wait_until(lambda: r("LLEN", f"eventd:history:{tag('ACLA')}", db=db) == 60, 20, what="60 quotes applied")
    fx.amqp.channel().queue_declare("acl-replies", durable=True)
    rc, out, err = fx.eventctl("--config", d.config_path, "publish", "analysis_request",
                               '{"userId":"alice","symbol":"ACLA","analysisType":"full"}',
                               "--reply-to", "acl-replies", "--correlation-id", "acl-corr")
    assert rc == 0, err
    wait_until(lambda: fx.amqp.depth("acl-replies") == 1, 20, what="the analysis reply")
    [reply] = fx.amqp.get_all("acl-replies")
    assert reply.props.correlation_id == "acl-corr" and json.loads(reply.body)["symbol"] == "ACLA"
    wait_until(lambda: r("EXISTS", f"eventd:analysis:{tag('alice')}:ACLA", db=db) == 1, 20,
               what="the stored analysis")

    # monitor status, list, stop; a poison message replayed from its DLQ.
    for args in (("monitor", "status", "alice"), ("monitor", "list"), ("monitor", "stop", "bob")):
        rc, out, err = fx.eventctl("--config", d.config_path, *args)
        assert rc == 0, f"{' '.join(args)} under the ACL user exited {rc}: {err}"
    assert r("HGET", f"eventd:monitor:{tag('bob')}", "status", db=db) == "stopped"
    fx.amqp.publish("market.quotes", "", json.dumps(quote("ACLP", -1.0)), message_id="acl-poison")
    wait_until(lambda: fx.amqp.depth("eventd.quotes.dlq") == 1, 15, what="the poison message dead-lettered")
    rc, out, err = fx.eventctl("--config", d.config_path, "dlq", "replay", "eventd.quotes", "--all")
    assert rc == 0 and "replayed 1 message(s)" in out, (rc, out, err)
    wait_until(lambda: fx.amqp.depth("eventd.quotes.dlq") == 1, 15, what="the replayed poison message back")
    for q in ("eventd.alerts.dlq", "eventd.notify.push.dlq", "eventd.notify.email.dlq", "eventd.analysis.dlq",
              "eventd.analysis-results.dlq"):
        assert fx.amqp.depth(q) == 0, f"{q} holds messages"
    assert r("EXISTS", f"eventd:idem:{tag('ACLX')}:aclx-1", db=db) == 1
    assert not d.logged("redis refused a command"), "eventd was refused a command"
    assert_no_password_in(d)
    assert d.stop() == 0
    return d


def test_eventd_and_eventctl_under_the_least_privilege_acl(fx):
    r = PrivateRedis(fx)
    assert r("ACL", *acl_args()) == "OK"
    fx.env = acl_env(fx, r)
    run_flow(fx, r, 0)
    # Nothing eventd or eventctl sent was refused, fire-and-forget commands included.
    assert r("ACL", "LOG") == [], f"Redis refused something: {r('ACL', 'LOG')}"
    # And the user can do no more: another key, another command.
    refused = [("SET", "other:x", "1"), ("FLUSHALL",), ("KEYS", "*"), ("CONFIG", "GET", "*"), ("SELECT", "1")]
    for cmd in refused:
        with socket.create_connection(("127.0.0.1", r.port), timeout=10) as s:
            f = s.makefile("rb")
            s.sendall(resp_command(["AUTH", "eventd", PASSWORD]) + resp_command(cmd))
            assert _read_reply(f) == "OK"
            try:
                got = _read_reply(f)
            except RedisError as e:
                got = e
            assert "NOPERM" in str(got), f"{cmd}: the eventd user may run it ({got!r})"


test_eventd_and_eventctl_under_the_least_privilege_acl.timeout = 180


def test_missing_rights_are_one_clear_line_and_nothing_is_acked(fx):
    r = PrivateRedis(fx)
    assert r("ACL", *acl_args(without=("+fcall",))) == "OK"
    fx.env = acl_env(fx, r)
    d = fx.daemon()
    fx.topology_apply(d.config_path)
    # The handshake needs no FCALL, but the portfolio schedule's first claim (an FCALL)
    # comes at once, before any message: eventd may never get as far as ready.
    d.start()
    fx.amqp.publish("market.quotes", "", quote("NOFC", 5.0), message_id="nofc-1")
    [line] = d.wait_log("redis refused a command", timeout=20)[:1]
    assert line["user"] == "eventd" and line["command"].startswith("FCALL eventd_"), line
    assert "NOPERM" in line["error"] and "fcall" in line["error"], line
    # Held (by eventd, or back in eventd.quotes while consumption is paused), not acked,
    # not dead-lettered, not retried: nothing was recorded. It runs below once granted.
    retry_queues = [q for q in fx.queues() if q.startswith("eventd.quotes.retry.")]
    assert holds_for(lambda: r("EXISTS", f"eventd:history:{tag('NOFC')}") == 0 and
                     fx.amqp.depth("eventd.quotes.dlq") == 0 and
                     all(fx.amqp.depth(q) == 0 for q in retry_queues), 3)
    assert d.running()
    assert len(d.logged("redis refused a command")) <= 6, "the refusal is logged without backoff"
    assert_no_password_in(d)
    # Granted: the held message runs once the connection is back.
    assert r("ACL", "SETUSER", "eventd", "+fcall") == "OK"
    wait_until(lambda: r("LRANGE", f"eventd:history:{tag('NOFC')}", 0, -1) == ["5"], 40,
               what="the held quote applied after +fcall")
    assert fx.amqp.depth("eventd.quotes.dlq") == 0
    assert d.stop() == 0

    # A key pattern without eventd:*: eventd and eventctl each say so.
    assert r("ACL", *acl_args(keys="~other:*")) == "OK"
    d.start()
    fx.amqp.publish("market.quotes", "", quote("NOKEY", 5.0), message_id="nokey-1")
    [line] = d.wait_log("redis refused a command", timeout=30)[:1]
    assert line["user"] == "eventd" and "keys" in line["error"], line
    assert fx.amqp.depth("eventd.quotes.dlq") == 0
    rc, out, err = fx.eventctl("monitor", "start", "carol", spec("NOKEY", 1))
    lines = err.splitlines()
    assert rc == 1 and len(lines) == 1, (rc, lines)
    assert lines[0].startswith("eventctl: Redis refused ") and "to user 'eventd'" in lines[0] and \
        "NOPERM" in lines[0] and PASSWORD not in lines[0], lines[0]
    assert d.stop() == 0

    # eventctl without +eval; a command run inside one of eventd's functions (xadd:
    # the push stream) refused.
    assert r("ACL", *acl_args(without=("+eval", "+xadd"))) == "OK"
    rc, out, err = fx.eventctl("monitor", "start", "carol", spec("NOKEY", 1))
    lines = err.splitlines()
    assert rc == 1 and len(lines) == 1 and "Redis refused EVAL to user 'eventd'" in lines[0], (rc, lines)
    d = fx.daemon(domain_config(fx))
    d.start().wait_ready()
    fx.amqp.publish("events", "notification.push.test",
                    json.dumps({"type": "notification", "timestamp": now_ms(), "userId": "dave", "channel": "push",
                                "title": "t", "body": "b"}), message_id="noxadd-1")
    [line] = d.wait_log("redis refused a command", timeout=30)[:1]
    assert line["command"].startswith("FCALL eventd_") and "can't run this command" in line["error"], line
    assert holds_for(lambda: fx.amqp.depth("eventd.notify.push.dlq") == 0 and
                     r("EXISTS", f"eventd:notifications:{tag('dave')}") == 0, 2)
    assert d.stop() == 0


test_missing_rights_are_one_clear_line_and_nothing_is_acked.timeout = 180


def test_functions_loaded_by_an_admin_user(fx):
    # Without +function|load, eventd cannot come up on a Redis that lacks its libraries;
    # one run as an admin loads them, and the eventd user's eventd comes up by itself.
    r = PrivateRedis(fx)
    assert r("ACL", *acl_args(without=("+function|load",))) == "OK"
    restricted = fx.daemon(name="restricted")
    restricted.config["redis"] = {"url": r.url("eventd", PASSWORD)}
    with open(restricted.config_path, "w") as f:
        json.dump(restricted.config, f)
    fx.env = dict(fx.env)
    del fx.env["EVENTD_REDIS_URL"]  # each daemon's URL comes from its config
    restricted.start()
    [line] = restricted.wait_log("redis handshake failed", step="FUNCTION LOAD", timeout=20)[:1]
    assert line["user"] == "eventd" and "NOPERM" in line["error"] and "function|load" in line["error"], line
    assert not restricted.logged("ready")
    admin = fx.daemon({"redis": {"url": r.url()}, "http": {"enabled": False}}, name="admin")
    admin.start().wait_ready()
    assert admin.stop() == 0
    restricted.wait_ready(timeout=60)
    fx.amqp.publish("market.quotes", "", quote("ADMF", 7.0), message_id="admf-1")
    wait_until(lambda: r("LRANGE", f"eventd:history:{tag('ADMF')}", 0, -1) == ["7"], 20, what="the quote applied")
    assert_no_password_in(restricted)
    assert restricted.stop() == 0


test_functions_loaded_by_an_admin_user.timeout = 150


def test_eventd_and_eventctl_over_a_unix_socket(fx):
    r = PrivateRedis(fx, unix_socket=True)
    assert r.port == 0 and os.path.exists(r.socket)
    assert oct(os.stat(r.socket).st_mode & 0o777) == "0o700"
    fx.env = dict(fx.env, EVENTD_REDIS_URL=r.url(db=2))
    d = fx.daemon(domain_config(fx))
    d.start().wait_ready()
    [connected] = d.logged("redis connected")
    assert connected["node"] == f"unix:{r.socket}" and connected["db"] == 2, connected
    rc, out, err = fx.eventctl("--config", d.config_path, "monitor", "start", "uma", spec("UNIX", 10, ["push"]))
    assert rc == 0, err
    for i, price in enumerate((9.0, 11.0)):
        fx.amqp.publish("market.quotes", "", quote("UNIX", price), message_id=f"unix-{i}")
    wait_until(lambda: r("XLEN", f"eventd:notifications:{tag('uma')}", db=2) == 1, 20,
               what="the alert's push notification over the socket")
    assert r("DBSIZE") == 0, "eventd wrote to database 0"
    rc, out, err = fx.eventctl("--config", d.config_path, "monitor", "status", "uma")
    assert rc == 0 and json.loads(out)["status"] == "running", (rc, out, err)
    assert d.stop() == 0
    # And with an ACL user over the socket.
    assert r("ACL", *acl_args()) == "OK"
    fx.env = dict(fx.env, EVENTD_REDIS_URL=r.url("eventd", PASSWORD, 0).replace("?db=0", ""))
    d2 = fx.daemon(domain_config(fx))
    d2.start().wait_ready()
    rc, out, err = fx.eventctl("--config", d2.config_path, "monitor", "start", "uma0", spec("UNIX0", 10, ["push"]))
    assert rc == 0, err
    for i, price in enumerate((9.0, 11.0)):
        fx.amqp.publish("market.quotes", "", quote("UNIX0", price), message_id=f"unix0-{i}")
    wait_until(lambda: r("XLEN", f"eventd:notifications:{tag('uma0')}") == 1, 20, what="the alert under the ACL user")
    assert r("ACL", "LOG") == [], r("ACL", "LOG")
    assert d2.stop() == 0


test_eventd_and_eventctl_over_a_unix_socket.timeout = 150
