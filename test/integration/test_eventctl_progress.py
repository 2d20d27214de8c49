"""eventctl's progress line: on a terminal's stderr during `publish --count` and
`dlq replay`, erased at the end; nothing of it when stderr is a pipe."""
import json
import os
import pty
import select
import subprocess

from harness import EVENTCTL, quote, while_binary_is_relinked

PROGRESS = "\r\x1b[K"


def eventctl_on_tty(fx, *args, timeout=60):
    """Runs eventctl with stderr on a pseudo-terminal, stdout on a pipe: (rc, stdout, tty text)."""
    master, slave = pty.openpty()
    try:
        p = while_binary_is_relinked(lambda: subprocess.Popen(
            [EVENTCTL, *args], env=fx.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave))
    finally:
        os.close(slave)
    tty = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            assert ready, f"eventctl {args} wrote nothing for {timeout} s"
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not chunk:
                break
            tty += chunk
        out = p.stdout.read().decode()
        rc = p.wait(timeout)
    finally:
        os.close(master)
        if p.poll() is None:
            p.kill()
            p.wait(10)
        p.stdout.close()
    return rc, out, tty.decode()


def publish_args(symbol, count, rate=None):
    return ["publish", "quote_update", json.dumps({"symbol": symbol, "price": 1, "change": 0}),
            "--count", str(count), *(["--rate", str(rate)] if rate else [])]


def fill_dlq(fx, n):
    for i in range(n):
        fx.amqp.publish("", "eventd.quotes.dlq", quote("PRG", 1.0 + i), message_id=f"prg-{i}")


def test_progress_only_on_a_terminal_for_publish(fx):
    fx.topology_apply()
    # Piped: no progress at all, stdout just the summary.
    rc, out, err = fx.eventctl(*publish_args("PIPE", 300))
    assert rc == 0, err
    assert err == "", f"piped stderr has progress output: {err[:200]!r}"
    assert out.startswith("published 300 quote_update messages") and out.count("\n") == 1, out
    # On a terminal: a line redrawn in place, erased before the summary.
    rc, out, tty = eventctl_on_tty(fx, *publish_args("TTY", 40, rate=100))
    assert rc == 0, tty
    assert f"{PROGRESS}publish: 1/40 (2%)" in tty, f"no first progress line on the terminal: {tty[:300]!r}"
    assert "publish: " in tty and "/40 (" in tty, tty[:300]
    assert tty.endswith(PROGRESS), f"the progress line was not erased at the end: {tty[-80:]!r}"
    assert "\n" not in tty, f"progress wrote whole lines to the terminal: {tty[:300]!r}"
    assert out.startswith("published 40 quote_update messages") and out.count("\n") == 1, out
    assert fx.amqp.depth("eventd.quotes") == 340


def test_progress_only_on_a_terminal_for_dlq_replay(fx):
    fx.topology_apply()
    fill_dlq(fx, 5)
    rc, out, err = fx.eventctl("dlq", "replay", "eventd.quotes", "--all")
    assert rc == 0, err
    assert err == "", f"piped stderr has progress output: {err[:200]!r}"
    lines = out.splitlines()
    assert len(lines) == 6 and all(l.startswith("replayed message_id=prg-") for l in lines[:5]), out
    assert lines[5] == "replayed 5 message(s) from eventd.quotes.dlq", out

    fill_dlq(fx, 3)
    rc, out, tty = eventctl_on_tty(fx, "dlq", "replay", "eventd.quotes.dlq", "--all")
    assert rc == 0, tty
    assert f"{PROGRESS}replay: 1/3 (33%)" in tty, f"no progress line on the terminal: {tty[:300]!r}"
    assert tty.endswith(PROGRESS) and "\n" not in tty, repr(tty[:300])
    assert out.splitlines()[-1] == "replayed 3 message(s) from eventd.quotes.dlq", out
    assert fx.amqp.depth("eventd.quotes") == 8 and fx.amqp.depth("eventd.quotes.dlq") == 0
