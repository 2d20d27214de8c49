"""A redis-server of one test's own (a free port in 43000-43099 on 127.0.0.1, or a unix
socket only), in the test's temp dir, stopped at teardown: for tests that change ACL users
or listen where the shared test Redis does not."""
import os
import socket
import subprocess

from harness import RedisError, _read_reply, resp_command, wait_until

PORTS = range(43000, 43100)


def free_port():
    for port in PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port in 43000-43099 for a private Redis")


class PrivateRedis:
    def __init__(self, fx, unix_socket=False):
        self.dir = os.path.join(fx.tmp, f"redis-{len(fx.cleanups)}")
        os.makedirs(self.dir)
        self.socket = os.path.join(self.dir, "redis.sock") if unix_socket else None
        self.port = 0 if unix_socket else free_port()
        args = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", self.dir,
                "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no",
                "--logfile", os.path.join(self.dir, "redis.log")]
        if unix_socket:
            args += ["--unixsocket", self.socket, "--unixsocketperm", "700"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        fx.on_teardown(self.stop)
        wait_until(self.up, 10, what="the private redis-server to answer")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()  # this test's own redis-server, by its handle
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def _connect(self):
        if self.socket:
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(10)
            s.connect(self.socket)
            return s
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def __call__(self, *args, db=0):
        """One command as the default (admin) user on a fresh connection."""
        with self._connect() as s:
            f = s.makefile("rb")
            if db:
                s.sendall(resp_command(["SELECT", db]))
                _read_reply(f)
            s.sendall(resp_command(args))
            return _read_reply(f)

    def up(self):
        try:
            return self("PING") == "PONG"
        except (OSError, RedisError, ConnectionError):
            return False

    def url(self, user=None, password=None, db=0):
        auth = f"{user}:{password}@" if user else ""
        if self.socket:
            return f"unix://{auth}{self.socket}?db={db}"
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"
