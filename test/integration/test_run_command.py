"""The README's first command, `scripts/run`: the daemon on the repo's default config,
starting a private server for whatever the environment does not name.

RabbitMQ is the test run's (its vhost named by EVENTD_AMQP_URL); Redis is left unset, so
scripts/run starts a private one of its own in this test's directory and stops nothing.
"""
import json
import os
import re
import signal
import socket
import subprocess
import time

from harness import DEV_SERVICES, SOURCE_DIR, closed_port, wait_until


def port_free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def log_lines(path):
    out = []
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("{") and line.endswith("}\n"):
                out.append(json.loads(line))
    return out


def test_run_command_starts_eventd_and_a_private_redis(fx):
    dev_dir = os.path.join(fx.tmp, "dev")
    env = dict(fx.env, EVENTD_DEV_DIR=dev_dir, EVENTD_DEV_NAME=f"it-run-{os.getpid()}")
    del env["EVENTD_REDIS_URL"]
    args = [os.path.join(SOURCE_DIR, "scripts", "run")]
    if not port_free(9464):
        # Someone's eventd (or exporter) holds the default metrics port: same config,
        # another port.
        with open(os.path.join(SOURCE_DIR, "eventd.jsonc")) as f:
            default = f.read()
        text = default.replace('"127.0.0.1:9464"', f'"127.0.0.1:{closed_port()}"')
        assert text != default, "eventd.jsonc no longer listens on 127.0.0.1:9464"
        config = os.path.join(fx.tmp, "eventd.jsonc")
        with open(config, "w") as f:
            f.write(text)
        args += ["--config", config]
    stderr_path = os.path.join(fx.tmp, "run.stderr")
    with open(stderr_path, "w") as err:
        p = subprocess.Popen(args, cwd="/", env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_until(lambda: any(l.get("msg") == "ready" for l in log_lines(stderr_path)) or p.poll() is not None,
                   120, 0.2, what="scripts/run to reach 'ready'")
        assert p.poll() is None, f"scripts/run exited {p.returncode}: {open(stderr_path).read()[-2000:]}"
        text = open(stderr_path).read()
        m = re.search(r"Redis redis://127\.0\.0\.1:(\d+)/0", text)
        assert m, f"scripts/run did not say which Redis it started: {text[-1000:]}"
        private_port = int(m.group(1))
        connected = [l for l in log_lines(stderr_path) if l.get("msg") == "redis connected"]
        assert connected and connected[0].get("port") == private_port, connected
        started = [l for l in log_lines(stderr_path) if l.get("msg") == "eventd starting"]
        assert started and started[0].get("vhost") == fx.vhost, f"not on the test's RabbitMQ vhost: {started}"
        # scripts/run execs eventd: the PID it started is the daemon's, and SIGTERM ends it cleanly.
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 0, f"eventd exited {p.returncode} after SIGTERM"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        subprocess.run([DEV_SERVICES, "stop-redis"], env=env, capture_output=True, timeout=60)


test_run_command_starts_eventd_and_a_private_redis.timeout = 180
