"""A local HTTP server standing in for a Discord webhook (and any other HTTP peer of a test).

    hook = WebhookServer(fx)           # binds 127.0.0.1 on a free port, stopped at teardown
    hook.status = 500                  # what the next POSTs are answered with
    hook.hold = fn                     # fn(body) runs (and may block) before each answer
    config = {"notify": {"channels": {"discord": {"sink": "webhook", "url": hook.url}}}}
    hook.wait_posts(1)                 # polls with a deadline
    hook.posts                         # every request: Post(time, path, headers, raw, json, status)

Each request is recorded with the status it was answered with, so a test can count
failed attempts and successful deliveries separately.
"""
import collections
import http.server
import json
import threading
import time

from harness import wait_until

Post = collections.namedtuple("Post", "time path headers raw json status")


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802 - http.server's naming
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        if owner.hold is not None:
            owner.hold(parsed)  # outside the lock: other requests are answered meanwhile
        with owner.lock:
            status = owner.status(parsed) if callable(owner.status) else owner.status
            owner.posts.append(Post(time.monotonic(), self.path, dict(self.headers), raw, parsed, status))
        if status == 204:  # what Discord answers: no body
            body = b""
        else:
            body = b"{}" if 200 <= status < 300 else b'{"message":"test webhook says no"}'
        self.send_response(status)
        if status != 204:
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):  # keep the runner's output clean
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # eventd closing a keep-alive connection (e.g. when it stops) is not an error.
        pass


class WebhookServer:
    def __init__(self, fx=None, status=204):
        self.lock = threading.Lock()
        self.posts = []
        self.status = status  # an int, or a function of the parsed JSON body returning one
        self.hold = None  # a function of the parsed body, called before answering; may block
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.owner = self
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/webhook"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()
        if fx is not None:
            fx.on_teardown(self.stop)

    def stop(self):
        if self.httpd is None:
            return
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
        self.httpd = None

    def snapshot(self):
        with self.lock:
            return list(self.posts)

    def count(self, status=None):
        return len([p for p in self.snapshot() if status is None or p.status == status])

    def wait_posts(self, n, timeout=15, status=None):
        return wait_until(lambda: self.count(status) >= n and self.snapshot(), timeout,
                          what=f"{n} POST(s) to the test webhook" + (f" answered {status}" if status else ""))
