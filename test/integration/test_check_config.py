"""eventd --check-config and --version: what an operator sees before starting the daemon."""
import os
import re
import subprocess

from harness import EVENTCTL, EVENTD, SOURCE_DIR, while_binary_is_relinked


def check_config(fx, text, name="bad.jsonc"):
    path = os.path.join(fx.tmp, name)
    with open(path, "w") as f:
        f.write(text)
    p = while_binary_is_relinked(lambda: subprocess.run(
        [EVENTD, "--check-config", path], capture_output=True, text=True, timeout=30, env=fx.env,
        stdin=subprocess.DEVNULL))
    return p.returncode, p.stdout, p.stderr, path


def assert_rejected(fx, text, must_contain):
    rc, out, err, path = check_config(fx, text)
    assert rc == 2, f"--check-config exited {rc} for {text!r} (stderr {err!r})"
    lines = err.splitlines()
    assert len(lines) == 1, f"expected exactly one stderr line for {text!r}, got {lines!r}"
    assert path in lines[0], f"the error does not name the file: {lines[0]!r}"
    for word in must_contain:
        assert word in lines[0], f"the error does not mention {word!r}: {lines[0]!r}"
    return lines[0]


def test_repo_config_is_valid(fx):
    path = os.path.join(SOURCE_DIR, "eventd.jsonc")
    p = while_binary_is_relinked(lambda: subprocess.run(
        [EVENTD, "--check-config", path], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL))
    assert p.returncode == 0, f"--check-config {path} exited {p.returncode}: {p.stderr.strip()}"
    assert p.stderr == "", f"unexpected stderr: {p.stderr!r}"


def test_unknown_key_is_rejected_with_its_pointer(fx):
    line = assert_rejected(fx, '{"amqp": {"prefetchCount": 10}}', ["/amqp/prefetchCount"])
    assert "unknown" in line, line
    assert_rejected(fx, '{"amqp": {}, "redis": {}, "rety": {}}', ["/rety"])


def test_prefetch_zero_is_rejected(fx):
    assert_rejected(fx, '// comment\n{"amqp": {"prefetch": 0}}', ["/amqp/prefetch"])


def test_invalid_json_is_rejected_with_its_position(fx):
    line = assert_rejected(fx, '{\n  "amqp": {"prefetch": 10,,}\n}', ["line 2"])
    assert re.search(r"column \d+", line), line


def test_hostile_configs_are_rejected_in_one_line(fx):
    # Deep nesting overflowed the parser's stack (exit 139); a maxAgeMs of 2^64-1 was
    # accepted and expired every message; invalid UTF-8 went through to the URLs.
    deep = "[" * 100000 + "]" * 100000
    assert_rejected(fx, deep, ["line 1", "Nested deeper than 64 levels"])
    assert_rejected(fx, '{"amqp": {"url": ' + deep + '}}', ["Nested deeper than 64 levels"])
    assert_rejected(fx, '{"retry": {"maxAgeMs": 18446744073709551615}}', ["/retry/maxAgeMs", "9007199254740991"])
    path = os.path.join(fx.tmp, "latin1.jsonc")
    with open(path, "wb") as f:
        f.write(b'{"amqp": {"url": "amqp://gu\xe9st@localhost/"}}')
    p = while_binary_is_relinked(lambda: subprocess.run(
        [EVENTD, "--check-config", path], capture_output=True, timeout=30, env=fx.env, stdin=subprocess.DEVNULL))
    lines = p.stderr.splitlines()
    assert p.returncode == 2 and len(lines) == 1 and b"Invalid encoding" in lines[0], (p.returncode, p.stderr)
    for args in (["--check-config"], ["--config"], ["--bogus"]):
        p = while_binary_is_relinked(lambda: subprocess.run(
            [EVENTD, *args], capture_output=True, text=True, timeout=30, env=fx.env, stdin=subprocess.DEVNULL))
        assert p.returncode == 2 and len(p.stderr.splitlines()) == 1, (args, p.returncode, p.stderr)


def test_queue_bound_to_missing_exchange_is_rejected(fx):
    text = '{"topology": {"queues": [{"name": "q1", "exchange": "market.quotes"},' \
           ' {"name": "q2", "exchange": "no.such.exchange"}]}}'
    line = assert_rejected(fx, text, ["/topology/queues/1/exchange", "no.such.exchange"])
    assert "/topology/queues/0" not in line, line


def test_valid_custom_config_is_accepted(fx):
    text = '// comments and trailing commas are allowed\n' \
           '{"amqp": {"prefetch": 1,}, "topology": {"queues": [{"name": "q1", "exchange": "events",' \
           ' "bindingKey": "analysis.request.#", "type": "classic"}]},}'
    rc, out, err, _ = check_config(fx, text, "good.jsonc")
    assert rc == 0, f"exited {rc}: {err!r}"


def test_version(fx):
    for binary, name in ((EVENTD, "eventd"), (EVENTCTL, "eventctl")):
        p = while_binary_is_relinked(lambda: subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL))
        assert p.returncode == 0, f"{name} --version exited {p.returncode}"
        assert re.fullmatch(rf"{name} \d+\.\d+\.\d+\S*\n", p.stdout), f"{name} --version printed {p.stdout!r}"
