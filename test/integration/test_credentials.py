"""Credentials out of sight: eventd and eventctl run with distinctive AMQP and Redis
passwords (a RabbitMQ user of the test's, and a private Redis with requirepass and
an ACL user, started once for this module on a port from 41080-41099) through good
and bad paths: wrong passwords, unreachable nodes, bad configs. No password appears
in any stderr, stdout, /metrics, /readyz or --check-config output. Passwords from
credentials.amqpPasswordFile and $CREDENTIALS_DIRECTORY replace the URLs'; a
world-readable config holding a password gets one warning naming it and the fix."""
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

from harness import (AMQP_PORT, EVENTD, MGMT_PORT, _read_reply, closed_port, history_key, mgmt, resp_command, run,
                     wait_until, while_binary_is_relinked)
from rabbit_cluster import _free_ports

REDIS_PORTS = range(41080, 41100)
AMQP_USER = "eventd-cred"
AMQP_PW = "AmqpPw-" + secrets.token_hex(8)
REDIS_PW = "RedisPw-" + secrets.token_hex(8)  # requirepass: the default user's
ACL_USER = "eventd-app"
ACL_PW = "AclPw-" + secrets.token_hex(8)
WRONG_AMQP_PW = "WrongAmqp-" + secrets.token_hex(8)
WRONG_REDIS_PW = "WrongRedis-" + secrets.token_hex(8)
SECRETS = (AMQP_PW, REDIS_PW, ACL_PW, WRONG_AMQP_PW, WRONG_REDIS_PW)


class Shared:
    redis = None  # the redis-server process
    port = None
    dir = None


S = Shared()


def private_redis(*args, password=REDIS_PW):
    with socket.create_connection(("127.0.0.1", S.port), timeout=10) as s:
        s.sendall(resp_command(["AUTH", password]) + resp_command(args))
        f = s.makefile("rb")
        _read_reply(f)
        return _read_reply(f)


def setup_module():
    S.dir = tempfile.mkdtemp(prefix="eventd-it-cred-redis-")
    [S.port] = _free_ports(REDIS_PORTS, 1)
    log = open(os.path.join(S.dir, "redis.log"), "wb")
    S.redis = subprocess.Popen(["redis-server", "--port", str(S.port), "--bind", "127.0.0.1", "--requirepass",
                                REDIS_PW, "--save", "", "--appendonly", "no", "--dir", S.dir],
                               stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    log.close()

    def up():
        try:
            return private_redis("PING") == "PONG"
        except OSError:
            assert S.redis.poll() is None, f"redis-server exited ({S.redis.returncode}); see {S.dir}/redis.log"
            return False
    wait_until(up, 20, 0.1, what="the private Redis")
    private_redis("ACL", "SETUSER", ACL_USER, "on", ">" + ACL_PW, "~*", "&*", "+@all")
    mgmt("PUT", f"users/{AMQP_USER}", {"password": AMQP_PW, "tags": "management"})


def teardown_module():
    try:
        mgmt("DELETE", f"users/{AMQP_USER}")
    except Exception:
        pass
    if S.redis is not None:
        S.redis.terminate()
        try:
            S.redis.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(S.redis.pid, 9)  # its own session (start_new_session)
            S.redis.wait(5)
        S.redis = None
    if S.dir is not None:
        shutil.rmtree(S.dir, ignore_errors=True)


# ---------------------------------------------------------------- helpers

class Outputs:
    """Every text eventd and eventctl showed in a test, checked for the passwords."""

    def __init__(self):
        self.texts = []

    def add(self, label, text):
        self.texts.append((label, text or ""))
        return text

    def check(self):
        assert self.texts, "nothing was collected"
        for label, text in self.texts:
            for secret in SECRETS:
                assert secret not in text, f"{label} shows a password: {text[:2000]!r}"


def amqp_url(fx, password=AMQP_PW, port=AMQP_PORT, user=AMQP_USER):
    return f"amqp://{user}:{password}@127.0.0.1:{port}/{fx.vq}"


def redis_url(password=REDIS_PW, user="", port=None):
    return f"redis://{user}:{password}@127.0.0.1:{port or S.port}/0"


def allow(fx):
    mgmt("PUT", f"permissions/{fx.vq}/{AMQP_USER}", {"configure": ".*", "write": ".*", "read": ".*"})


def http_get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.read().decode()
    except urllib.error.HTTPError as e:
        return e.read().decode()


def check_config(path, env):
    p = while_binary_is_relinked(lambda: subprocess.run([EVENTD, "--check-config", path], capture_output=True,
                                                        text=True, timeout=30, env=env, stdin=subprocess.DEVNULL))
    return p.returncode, p.stdout, p.stderr


def stderr_of(d):
    with open(d.log_path, encoding="utf-8", errors="replace") as f:
        return f.read()


def with_http(overrides=None):
    port = closed_port()
    return port, {**(overrides or {}), "http": {"enabled": True, "listen": f"127.0.0.1:{port}"}}


def eventctl_all(fx, out, env, label):
    """The eventctl commands that touch RabbitMQ, its management API and Redis."""
    runs = [("publish", "quote_update", json.dumps({"symbol": "CRED", "price": 3, "change": 0})),
            ("topology", "verify"), ("dlq", "list"),
            ("monitor", "start", "u1", json.dumps({"rules": [], "channels": ["push"]})),
            ("monitor", "status", "u1"), ("monitor", "list")]
    codes = []
    for args in runs:
        rc, so, se = fx.eventctl(*args, env=env)
        out.add(f"{label}: eventctl {args[0]} {args[1]} stdout", so)
        out.add(f"{label}: eventctl {args[0]} {args[1]} stderr", se)
        codes.append((args[:2], rc, se.strip()))
    return codes


# ---------------------------------------------------------------- tests

def test_credentials_good_paths_show_no_password(fx):
    allow(fx)
    out = Outputs()
    # Passwords in the environment's URLs; Redis as the default user with requirepass.
    fx.env.update(EVENTD_AMQP_URL=amqp_url(fx), EVENTD_REDIS_URL=redis_url(),
                  EVENTD_MANAGEMENT_URL=f"http://127.0.0.1:{MGMT_PORT}")
    port, cfg = with_http()
    d = fx.daemon(cfg)
    d.start().wait_ready()
    [starting] = d.logged("eventd starting")
    assert starting["amqp_password"] == "url" and starting["redis_password"] == "url", starting
    for rc_args in eventctl_all(fx, out, fx.env, "env URLs"):
        assert rc_args[1] == 0, rc_args
    wait_until(lambda: private_redis("LLEN", history_key("CRED")) == 1, 10, what="the quote applied")
    for path in ("/metrics", "/readyz", "/healthz"):
        out.add(path, http_get(port, path))
    out.add("check-config", "".join(check_config(d.config_path, fx.env)[1:]))
    assert d.stop() == 0
    out.add("eventd stderr", stderr_of(d))

    # The same with the passwords out of the URLs: an ACL user's from
    # $CREDENTIALS_DIRECTORY, the AMQP one's from credentials.amqpPasswordFile.
    creds = os.path.join(fx.tmp, "credentials")
    os.makedirs(creds)
    with open(os.path.join(creds, "redis-password"), "w") as f:
        f.write(ACL_PW + "\n")
    pw_file = os.path.join(fx.tmp, "amqp-password")
    with open(pw_file, "w") as f:
        f.write(AMQP_PW + "\n")
    os.chmod(pw_file, 0o600)
    env = dict(fx.env, EVENTD_AMQP_URL=f"amqp://{AMQP_USER}@127.0.0.1:{AMQP_PORT}/{fx.vq}",
               EVENTD_REDIS_URL=f"redis://{ACL_USER}:{WRONG_REDIS_PW}@127.0.0.1:{S.port}/0",  # replaced
               CREDENTIALS_DIRECTORY=creds)
    fx.env = env
    port, cfg = with_http({"credentials": {"amqpPasswordFile": pw_file}})
    d2 = fx.daemon(cfg)
    d2.start().wait_ready()
    [starting] = d2.logged("eventd starting")
    assert starting["amqp_password"].endswith(f"/credentials/amqpPasswordFile ({pw_file})"), starting
    assert starting["redis_password"] == "$CREDENTIALS_DIRECTORY/redis-password", starting
    private_redis("DEL", history_key("CRED"))
    for rc_args in eventctl_all(fx, out, dict(env, EVENTD_CONFIG=d2.config_path), "credentials"):
        assert rc_args[1] == 0, rc_args
    wait_until(lambda: private_redis("LLEN", history_key("CRED")) == 1, 10, what="the quote applied")
    out.add("/readyz (credentials)", http_get(port, "/readyz"))
    out.add("check-config (credentials)", "".join(check_config(d2.config_path, env)[1:]))
    assert d2.stop() == 0
    out.add("eventd stderr (credentials)", stderr_of(d2))
    out.check()


def test_credentials_bad_paths_show_no_password(fx):
    allow(fx)
    out = Outputs()
    cases = {
        "wrong AMQP password": dict(EVENTD_AMQP_URL=amqp_url(fx, password=WRONG_AMQP_PW),
                                    EVENTD_REDIS_URL=redis_url()),
        "wrong Redis password": dict(EVENTD_AMQP_URL=amqp_url(fx), EVENTD_REDIS_URL=redis_url(WRONG_REDIS_PW)),
        "wrong ACL password": dict(EVENTD_AMQP_URL=amqp_url(fx),
                                   EVENTD_REDIS_URL=redis_url(WRONG_REDIS_PW, user=ACL_USER)),
        "unreachable nodes": dict(EVENTD_AMQP_URL=amqp_url(fx, port=closed_port()) + "," +
                                  amqp_url(fx, password=WRONG_AMQP_PW, port=closed_port()),
                                  EVENTD_REDIS_URL=redis_url(port=closed_port())),
    }
    for label, urls in cases.items():
        env = dict(fx.env, **urls)
        fx.env = env
        port, cfg = with_http()
        d = fx.daemon(cfg)
        d.start()
        wanted = "amqp connect failed" if "AMQP" in label or "unreachable" in label else None
        if wanted:
            d.wait_log(wanted, count=2, timeout=30)
        if "Redis" in label or "ACL" in label or "unreachable" in label:
            wait_until(lambda: d.logged("redis handshake failed") or d.logged("redis connect failed"), 30,
                       what=f"{label}: a Redis failure logged")
        readyz = out.add(f"{label}: /readyz", http_get(port, "/readyz"))
        assert "not connected" in readyz, readyz
        out.add(f"{label}: /metrics", http_get(port, "/metrics"))
        out.add(f"{label}: check-config", "".join(check_config(d.config_path, env)[1:]))
        codes = eventctl_all(fx, out, env, label)
        assert any(rc == 1 for _, rc, _ in codes), codes
        assert d.running(), f"{label}: eventd exited"
        assert d.stop() == 0
        out.add(f"{label}: eventd stderr", stderr_of(d))
        assert "ACCESS_REFUSED" in stderr_of(d) or "WRONGPASS" in stderr_of(d) or "unreachable" in label, label

    # Bad configs whose URLs hold passwords: one line naming the field, never the value.
    bad = [
        ("file: bad port", {"amqp": {"url": f"amqp://u:{AMQP_PW}@mq:99999/"}}, {}),
        ("file: bad percent-encoding", {"amqp": {"url": f"amqp://u:%zz{AMQP_PW}@mq/"}}, {}),
        ("file: rediss", {"redis": {"url": f"rediss://:{REDIS_PW}@cache:6379/0"}}, {}),
        ("file: bad Redis db", {"redis": {"url": f"redis://:{REDIS_PW}@cache:6379/x"}}, {}),
        ("file: schema error beside a password", {"amqp": {"url": f"amqp://u:{AMQP_PW}@mq/", "prefetch": 0}}, {}),
        ("env: a comma in the password", {}, {"EVENTD_AMQP_URL": f"amqp://u:{AMQP_PW},{ACL_PW}@mq/"}),
        ("env: unknown scheme", {}, {"EVENTD_AMQP_URL": f"http://u:{AMQP_PW}@mq/"}),
        ("env: management URL", {}, {"EVENTD_MANAGEMENT_URL": f"ftp://u:{AMQP_PW}@mgmt/"}),
        ("env: IPv6 without brackets", {}, {"EVENTD_REDIS_URL": f"redis://:{REDIS_PW}@::1:6379/0"}),
        ("file: empty password file", {"credentials": {"amqpPasswordFile": "/dev/null"}}, {}),
        ("file: schema error quoting a URL", {"amqp": {"managementUrl": f"ftp://u:{AMQP_PW}@mgmt/"}}, {}),
    ]
    for label, config, env_over in bad:
        path = os.path.join(fx.tmp, "bad.jsonc")
        with open(path, "w") as f:
            json.dump(config, f)
        os.chmod(path, 0o600)
        # The file's own URLs, unless the case sets the environment's.
        env = {k: v for k, v in fx.env.items() if k not in ("EVENTD_AMQP_URL", "EVENTD_REDIS_URL")}
        env.update(env_over)
        rc, so, se = check_config(path, env)
        out.add(f"{label}: check-config", so + se)
        assert rc == 2 and se.startswith("eventd: ") and len(se.strip().split("\n")) == 1, (label, rc, se)
        rc, so, se = fx.eventctl("--config", path, "dlq", "list", env=env)
        out.add(f"{label}: eventctl", so + se)
        assert rc == 2, (label, rc, se)
    # A JSON syntax error right after a password.
    path = os.path.join(fx.tmp, "syntax.jsonc")
    with open(path, "w") as f:
        f.write('{"amqp": {"url": "amqp://u:%s@mq/" "prefetch": 1}}' % AMQP_PW)
    rc, so, se = check_config(path, fx.env)
    assert rc == 2, se
    out.add("syntax error: check-config", so + se)
    out.check()


def test_credentials_world_readable_config_warns(fx):
    out = Outputs()
    path = os.path.join(fx.tmp, "open.jsonc")
    with open(path, "w") as f:
        json.dump({"amqp": {"url": f"amqp://{AMQP_USER}:{AMQP_PW}@127.0.0.1:{AMQP_PORT}/{fx.vq}"},
                   "redis": {"url": f"redis://:{REDIS_PW}@127.0.0.1:{S.port}/0"}, "http": {"enabled": False}}, f)
    os.chmod(path, 0o644)
    env = {k: v for k, v in fx.env.items() if k not in ("EVENTD_AMQP_URL", "EVENTD_REDIS_URL")}
    rc, so, se = check_config(path, env)
    out.add("check-config 0644", so + se)
    assert rc == 0 and so == f"{path}: ok\n", (rc, so, se)
    [warning] = se.strip().split("\n")
    assert warning.startswith(f"eventd: warning: {path} is readable by every user and holds a password "
                              f"(/amqp/url, /redis/url): chmod 640 {path}"), warning
    assert "credential" in warning, warning
    rc, so, se = fx.eventctl("--config", path, "monitor", "list", env=env)
    out.add("eventctl 0644", so + se)
    assert se.startswith(f"eventctl: warning: {path} is readable by every user"), se

    # eventd logs it as one JSON line at start.
    allow(fx)
    proc = while_binary_is_relinked(lambda: subprocess.Popen([EVENTD, "--config", path], env=env,
                                                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                                             stderr=subprocess.PIPE, text=True))
    try:
        time.sleep(1.5)
    finally:
        proc.terminate()
        so, se = proc.communicate(timeout=20)
    out.add("eventd 0644 stderr", so + se)
    warnings = [json.loads(l) for l in se.splitlines() if '"config warning"' in l]
    assert len(warnings) == 1 and warnings[0]["level"] == "warn", se

    os.chmod(path, 0o640)
    rc, so, se = check_config(path, env)
    assert rc == 0 and se == "", se
    out.check()
    assert run(["stat", "-c", "%a", path]).stdout.strip() == "640"
