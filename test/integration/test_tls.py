"""amqps:// against a private TLS-only RabbitMQ node, started once for this module
(rabbit_cluster.start_node; ports from 41000-41079): eventd and eventctl with a
password, SASL EXTERNAL with a client certificate and no password, and a broker
certificate from an unknown CA or one that does not name the host: one clear line
naming the failure, eventd retrying without crashing, eventctl exiting 1. The CA and
certificates are made with openssl for the run."""
import json
import os
import re
import secrets
import shutil
import socket
import ssl
import tempfile
import threading
import urllib.parse

from harness import history_len, run, wait_publisher, wait_until
from rabbit_cluster import start_node

TLS_PORTS = range(41000, 41050)
TLS_DIST_PORTS = range(41050, 41080)
CLIENT_CN = "eventd-tls-client"
USER = "eventd-tls"
PASSWORD = "Tls-" + secrets.token_hex(8)
VERIFY_FAILED = re.compile(r"certificate verify failed: (self-signed certificate in certificate chain|"
                           r"unable to get local issuer certificate)")


class Shared:
    node = None  # rabbit_cluster.PrivateNode
    certs = None  # directory of the PEM files


S = Shared()


# ---------------------------------------------------------------- certificates

def _openssl(*args):
    run(["openssl", *args])


def _ca(name, cn):
    d = S.certs
    _openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{d}/{name}.key", "-out", f"{d}/{name}.pem", "-days", "2", "-subj", f"/CN={cn}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")


def _leaf(name, cn, san, usage, ca="ca"):
    d = S.certs
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{d}/{name}.key", "-out", f"{d}/{name}.csr", "-subj", f"/CN={cn}")
    with open(f"{d}/{name}.ext", "w") as f:
        f.write(f"subjectAltName={san}\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n")
    _openssl("x509", "-req", "-in", f"{d}/{name}.csr", "-CA", f"{d}/{ca}.pem", "-CAkey", f"{d}/{ca}.key",
             "-CAcreateserial", "-days", "2", "-out", f"{d}/{name}.pem", "-extfile", f"{d}/{name}.ext")


def cert(name):
    return os.path.join(S.certs, name)


def _tls_conf(node):
    c = S.certs
    return (
        "listeners.tcp = none\n"
        f"listeners.ssl.default = 127.0.0.1:{node.amqp_port}\n"
        # The same listener on another loopback address: an address the certificate does not name.
        f"listeners.ssl.other = 127.0.0.2:{node.amqp_port}\n"
        f"ssl_options.cacertfile = {c}/ca.pem\n"
        f"ssl_options.certfile = {c}/server.pem\n"
        f"ssl_options.keyfile = {c}/server.key\n"
        "ssl_options.verify = verify_peer\n"
        "ssl_options.fail_if_no_peer_cert = false\n"
        "auth_mechanisms.1 = PLAIN\n"
        "auth_mechanisms.2 = AMQPLAIN\n"
        "auth_mechanisms.3 = EXTERNAL\n"
        "ssl_cert_login_from = common_name\n"
        "loopback_users = none\n"
        # Plain HTTP on loopback: for topology verify, which reads the management API.
        f"management.tcp.port = {node.mgmt_port}\n"
        "management.tcp.ip = 127.0.0.1\n")


def setup_module():
    S.certs = tempfile.mkdtemp(prefix="eventd-it-tls-certs-")
    os.chmod(S.certs, 0o755)  # the broker runs as rabbitmq
    _ca("ca", "eventd test CA")
    _ca("otherca", "someone else's CA")
    _leaf("server", "localhost", "DNS:localhost,IP:127.0.0.1", "serverAuth")
    _leaf("client", CLIENT_CN, f"DNS:{CLIENT_CN}", "clientAuth")
    _leaf("otherhost", "otherhost", "DNS:otherhost", "serverAuth")
    for f in os.listdir(S.certs):
        os.chmod(os.path.join(S.certs, f), 0o644)
    S.node = start_node("eventd-it-tls", conf=_tls_conf, plugins=["rabbitmq_auth_mechanism_ssl", "rabbitmq_management"],
                        amqp_ports=TLS_PORTS, dist_ports=TLS_DIST_PORTS)
    S.node.ctl("add_user", USER, PASSWORD)
    S.node.ctl("set_user_tags", USER, "management")  # may read the management API
    # The user EXTERNAL logs in as: the client certificate's CN (its password is never used).
    S.node.ctl("add_user", CLIENT_CN, secrets.token_hex(12))


setup_module.timeout = 300


def teardown_module():
    if S.node is not None:
        S.node.stop()
        S.node = None
    if S.certs is not None:
        shutil.rmtree(S.certs, ignore_errors=True)
        S.certs = None


# ---------------------------------------------------------------- helpers

def vhost(fx, *users):
    """A vhost of this test on the TLS node, where `users` may do anything; deleted afterwards."""
    name = f"tls-{fx.name}-{secrets.token_hex(3)}"
    S.node.ctl("add_vhost", name)
    fx.on_teardown(lambda: S.node.ctl("delete_vhost", name, check=False))
    for user in users:
        S.node.ctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
    return urllib.parse.quote(name, safe="")


def url(vq, host="localhost", userinfo=f"{USER}:{PASSWORD}@"):
    return f"amqps://{userinfo}{host}:{S.node.port}/{vq}"


def config_file(fx, name, overrides):
    path = os.path.join(fx.tmp, name)
    with open(path, "w") as f:
        json.dump({"http": {"enabled": False}, **overrides}, f)
    return path


def connections(vq):
    """(user, auth mechanism, ssl) of every connection on the vhost, as the broker sees them."""
    p = S.node.ctl("list_connections", "-p", urllib.parse.unquote(vq), "user", "auth_mechanism", "ssl",
                   "--formatter", "json")
    return [(c["user"], c["auth_mechanism"], c["ssl"]) for c in json.loads(p.stdout or "[]")]


def queue_depth(vq, queue):
    p = S.node.ctl("list_queues", "-p", urllib.parse.unquote(vq), "name", "messages", "--formatter", "json")
    return {q["name"]: q["messages"] for q in json.loads(p.stdout or "[]")}.get(queue)


def one_line(err):
    lines = err.strip().split("\n")
    assert len(lines) == 1, f"expected one line on stderr, got {lines}"
    return lines[0]


class TlsListener:
    """A TLS server that only shakes hands, with a certificate of our choice."""

    def __init__(self, certfile, keyfile):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(certfile, keyfile)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.handshakes = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.handshakes += 1
            conn.settimeout(5)
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    def close(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()


# ---------------------------------------------------------------- tests

def test_tls_eventd_with_password(fx):
    vq = vhost(fx, USER)
    fx.env["EVENTD_AMQP_URL"] = url(vq)
    # Heartbeats every 120 s (a check every 60 s): a delivery left in rabbitmq-c's or
    # OpenSSL's buffer would wait that long; each quote below must be applied at once.
    d = fx.daemon({"amqp": {"heartbeatSec": 120, "tls": {"caFile": cert("ca.pem")}}})
    d.start().wait_ready(timeout=60)
    [connected] = d.logged("amqp connected")
    assert connected["tls"] is True and connected["login"] == "PLAIN", connected
    assert connected["node"] == f"localhost:{S.node.port}", connected
    assert (USER, "PLAIN", True) in connections(vq), connections(vq)
    for i in range(5):
        rc, out, err = d.eventctl("publish", "quote_update", json.dumps({"symbol": "TLS", "price": 100 + i,
                                                                         "change": 0}))
        assert rc == 0, err
        wait_until(lambda: history_len("TLS") == i + 1, 5, 0.02, what=f"quote {i + 1} applied")
    # A burst: many deliveries per TLS record, and records larger than one read.
    p = fx.publish_stream(d, "TLSB", 500)
    wait_publisher(p)
    wait_until(lambda: history_len("TLSB") == 500, 30, 0.1, what="500 quotes applied")
    assert d.stop() == 0
    assert not [l for l in d.log_lines() if l["level"] in ("warn", "error")], d.log_lines()


def test_tls_eventctl_publish(fx):
    vq = vhost(fx, USER)
    cfg = config_file(fx, "eventctl-tls.jsonc", {"amqp": {"tls": {"caFile": cert("ca.pem")}}})
    # By IP address: the certificate names 127.0.0.1 too (an IP SAN).
    env = dict(fx.env, EVENTD_AMQP_URL=url(vq, host="127.0.0.1"))
    rc, out, err = fx.eventctl("--config", cfg, "topology", "apply", env=env)
    assert rc == 0, err
    rc, out, err = fx.eventctl("--config", cfg, "publish", "quote_update",
                               json.dumps({"symbol": "TLSP", "price": 1, "change": 0}), "--count", "20", env=env)
    assert rc == 0, err
    # The broker's count of a quorum queue lags its confirms a little.
    wait_until(lambda: queue_depth(vq, "eventd.quotes") == 20, 20, 0.5, what="20 messages in eventd.quotes")


def test_topology_verify_with_external_login_takes_the_management_url_user(fx):
    # EXTERNAL: the AMQP login has no user or password, and the management API takes no
    # client certificate, so verify needs a user of amqp.managementUrl's own.
    vq = vhost(fx, CLIENT_CN, USER)
    tls = {"caFile": cert("ca.pem"), "certFile": cert("client.pem"), "keyFile": cert("client.key")}
    cfg = config_file(fx, "external.jsonc", {"amqp": {"tls": tls}})
    mgmt = f"127.0.0.1:{S.node.node.mgmt_port}"
    env = dict(fx.env, EVENTD_AMQP_URL=url(vq, userinfo=""), EVENTD_MANAGEMENT_URL=f"http://{mgmt}")
    rc, out, err = fx.eventctl("--config", cfg, "topology", "apply", env=env)
    assert rc == 0, err
    rc, out, err = fx.eventctl("--config", cfg, "topology", "verify", env=env)
    assert rc == 2, (rc, err)
    line = one_line(err)
    assert "EXTERNAL" in line and "amqp.managementUrl" in line, line

    env["EVENTD_MANAGEMENT_URL"] = f"http://{USER}:{PASSWORD}@{mgmt}"
    rc, out, err = fx.eventctl("--config", cfg, "topology", "verify", env=env)
    assert rc == 0, err
    assert err == "", err

    # A wrong password there: refused, said as that URL's user, the password not shown.
    env["EVENTD_MANAGEMENT_URL"] = f"http://{USER}:not-{PASSWORD}@{mgmt}"
    rc, out, err = fx.eventctl("--config", cfg, "topology", "verify", env=env)
    assert rc == 1, (rc, err)
    assert one_line(err) == "eventctl: the management API refused the user of amqp.managementUrl (401)", err


def test_tls_external_login_with_client_certificate(fx):
    vq = vhost(fx, CLIENT_CN)
    # No user, no password: the client certificate is the identity (SASL EXTERNAL).
    fx.env["EVENTD_AMQP_URL"] = url(vq, userinfo="")
    tls = {"caFile": cert("ca.pem"), "certFile": cert("client.pem"), "keyFile": cert("client.key")}
    d = fx.daemon({"amqp": {"tls": tls}})
    d.start().wait_ready(timeout=60)
    [connected] = d.logged("amqp connected")
    assert connected["login"] == "EXTERNAL", connected
    rc, out, err = d.eventctl("publish", "quote_update", json.dumps({"symbol": "EXT", "price": 5, "change": 0}))
    assert rc == 0, err
    wait_until(lambda: history_len("EXT") == 1, 10, what="the quote applied")
    seen = connections(vq)
    assert (CLIENT_CN, "EXTERNAL", True) in seen, seen
    assert all(user == CLIENT_CN for user, _, _ in seen), seen
    assert d.stop() == 0

    # Without the certificate the URI's defaults (guest) log in with PLAIN: refused, one line.
    cfg = config_file(fx, "no-cert.jsonc", {"amqp": {"tls": {"caFile": cert("ca.pem")}}})
    rc, out, err = fx.eventctl("--config", cfg, "topology", "apply")
    assert rc == 1, (rc, err)
    line = one_line(err)
    assert "cannot log in to RabbitMQ" in line and "as 'guest'" in line, line


def test_tls_unknown_ca_is_one_clear_line_and_eventd_retries(fx):
    vq = vhost(fx, USER)
    fx.env["EVENTD_AMQP_URL"] = url(vq)
    d = fx.daemon({"amqp": {"tls": {"caFile": cert("otherca.pem")}}})
    d.start()
    failed = d.wait_log("amqp connect failed", count=3, timeout=30)
    for line in failed:
        assert VERIFY_FAILED.search(line["error"]), line
        assert line["error"].startswith(f"cannot connect to RabbitMQ at localhost:{S.node.port} over TLS: "), line
        assert line["node"] == f"localhost:{S.node.port}"
    assert d.logged("amqp reconnect scheduled"), "no reconnect after the verify failure"
    assert d.running(), "eventd exited"
    assert not d.logged("ready")
    assert d.stop() == 0

    rc, out, err = d.eventctl("publish", "quote_update", json.dumps({"symbol": "X", "price": 1, "change": 0}))
    assert rc == 1, (rc, err)
    line = one_line(err)
    assert line.startswith("eventctl: cannot connect to RabbitMQ at ") and VERIFY_FAILED.search(line), line

    # verifyPeer false: the same certificate is taken (tests only).
    cfg = config_file(fx, "noverify.jsonc", {"amqp": {"tls": {"caFile": cert("otherca.pem"), "verifyPeer": False}}})
    rc, out, err = fx.eventctl("--config", cfg, "topology", "apply")
    assert rc == 0, err


def test_tls_hostname_mismatch_is_one_clear_line(fx):
    vq = vhost(fx, USER)
    # The broker's certificate names localhost and 127.0.0.1, not 127.0.0.2.
    fx.env["EVENTD_AMQP_URL"] = url(vq, host="127.0.0.2")
    d = fx.daemon({"amqp": {"tls": {"caFile": cert("ca.pem")}}})
    d.start()
    failed = d.wait_log("amqp connect failed", count=2, timeout=30)
    expected = ('certificate verify failed: IP address mismatch (the certificate CN=localhost is not for '
                '"127.0.0.2")')
    assert all(l["error"].endswith(expected) for l in failed), failed
    assert d.running()
    assert d.stop() == 0
    rc, out, err = d.eventctl("topology", "apply")
    assert rc == 1 and one_line(err).endswith(expected), (rc, err)

    # A server whose certificate (from the trusted CA) is for another name.
    server = TlsListener(cert("otherhost.pem"), cert("otherhost.key"))
    fx.on_teardown(server.close)
    cfg = config_file(fx, "other.jsonc", {"amqp": {"tls": {"caFile": cert("ca.pem")}}})
    env = dict(fx.env, EVENTD_AMQP_URL=f"amqps://u:p@localhost:{server.port}/%2f")
    rc, out, err = fx.eventctl("--config", cfg, "topology", "apply", env=env)
    assert rc == 1, (rc, err)
    assert one_line(err) == (f"eventctl: cannot connect to RabbitMQ at localhost:{server.port} over TLS: "
                             'certificate verify failed: hostname mismatch (the certificate CN=otherhost is not for '
                             '"localhost")'), err
    assert server.handshakes >= 1
