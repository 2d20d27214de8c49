"""The Debian package: scripts/package builds eventd_<version>_amd64.deb (once per test
run, into a temporary directory, reused by every test here), lintian finds no error, it
holds exactly the files the README lists, and the eventd and eventctl unpacked from it
check the packaged config and talk to the test broker."""
import atexit
import os
import re
import shutil
import subprocess
import tempfile
import time

from harness import SOURCE_DIR, run

_built = {}  # the one build of this run: deb, out, lintian, seconds, or error


def meson_version():
    with open(os.path.join(SOURCE_DIR, "meson.build")) as f:
        return re.search(r"version\s*:\s*'([^']+)'", f.read()).group(1)


def package():
    """Builds the package the first time it is asked for; the build's facts after that."""
    if not _built:
        out = tempfile.mkdtemp(prefix="eventd-deb-")
        atexit.register(shutil.rmtree, out, True)
        started = time.monotonic()
        # Bounded by the calling test's timeout (the runner's alarm), and here as well.
        p = subprocess.run([os.path.join(SOURCE_DIR, "scripts", "package"), "--out", out], capture_output=True,
                           text=True, timeout=600, stdin=subprocess.DEVNULL,
                           env=dict(os.environ, DEB_BUILD_OPTIONS="nocheck parallel=2 noautodbgsym"))
        _built["seconds"] = time.monotonic() - started
        _built["out"] = out
        if p.returncode != 0:
            _built["error"] = f"scripts/package exited {p.returncode}: {p.stderr.strip()[-1500:]}"
        else:
            _built["deb"] = p.stdout.strip().splitlines()[-1]
            with open(os.path.join(out, "lintian.txt")) as f:
                _built["lintian"] = f.read()
    assert "error" not in _built, _built.get("error")
    return _built


def test_package_builds_and_lintian_finds_no_error(fx):
    version = meson_version()
    with open(os.path.join(SOURCE_DIR, "debian", "changelog")) as f:
        first = f.readline()
    assert first.startswith(f"eventd ({version}) "), f"debian/changelog {first.strip()!r} is not meson.build's {version}"
    built = package()
    assert os.path.basename(built["deb"]) == f"eventd_{version}_amd64.deb", built["deb"]
    assert os.path.isfile(built["deb"])
    print(f"    package built in {built['seconds']:.0f} s", flush=True)
    errors = [l for l in built["lintian"].splitlines() if l.startswith("E:")]
    assert not errors, f"lintian errors: {errors}"
    warnings = [l for l in built["lintian"].splitlines() if l.startswith("W:")]
    for w in warnings:
        print(f"    lintian: {w}", flush=True)
    # Nothing of the build is left in the source tree.
    assert not os.path.exists(os.path.join(SOURCE_DIR, "debian", ".debhelper")), "the build wrote into debian/"
    assert "src" not in os.listdir(built["out"]), "scripts/package left its build copy"


test_package_builds_and_lintian_finds_no_error.timeout = 600


def readme_file_list():
    with open(os.path.join(SOURCE_DIR, "README.md")) as f:
        readme = f.read()
    m = re.search(r"The package holds exactly these files.*?\n```\n(.*?)\n```", readme, re.S)
    assert m, "README.md has no package file list"
    return m.group(1).split("\n")


def control_field(deb, field):
    return run(["dpkg-deb", "-f", deb, field]).stdout.strip()


def test_package_holds_what_the_readme_lists(fx):
    deb = package()["deb"]
    listing = run(["dpkg-deb", "-c", deb]).stdout.splitlines()
    files = sorted(line.split()[5][1:] for line in listing if not line.startswith("d"))
    assert files == readme_file_list(), \
        f"dpkg -c and the README differ: only in the package {sorted(set(files) - set(readme_file_list()))}, " \
        f"only in the README {sorted(set(readme_file_list()) - set(files))}"
    # Runtime dependencies: the shared libraries; RabbitMQ and Redis only suggested.
    depends = control_field(deb, "Depends")
    for lib in ("libc6", "libuv1", "librabbitmq4", "libhiredis0.14", "libcurl4", "libsystemd0"):
        assert re.search(rf"(^|, ){re.escape(lib)}\b", depends), f"Depends lacks {lib}: {depends}"
    assert "rabbitmq-server" not in depends and "redis-server" not in depends, depends
    assert control_field(deb, "Suggests") == "rabbitmq-server, redis-server"
    ctl = os.path.join(fx.tmp, "control")
    run(["dpkg-deb", "-e", deb, ctl])
    with open(os.path.join(ctl, "conffiles")) as f:
        assert f.read().split() == ["/etc/eventd/eventd.jsonc"]
    # The unit names the packaged paths; it runs as a DynamicUser, so no maintainer script
    # creates a user (systemd makes /var/lib/eventd, StateDirectory=).
    root = os.path.join(fx.tmp, "root")
    run(["dpkg-deb", "-x", deb, root])
    with open(os.path.join(root, "lib/systemd/system/eventd.service")) as f:
        unit = f.read()
    assert "ExecStartPre=/usr/bin/eventd --check-config /etc/eventd/eventd.jsonc\n" in unit, unit
    assert "ExecStart=/usr/bin/eventd --config /etc/eventd/eventd.jsonc\n" in unit, unit
    assert "Documentation=file:///usr/share/doc/eventd/README.md" in unit
    assert "/usr/local" not in unit, "the packaged unit names /usr/local"
    assert "DynamicUser=yes" in unit and "StateDirectory=eventd" in unit
    scripts = "".join(open(os.path.join(ctl, s)).read() for s in os.listdir(ctl) if s.startswith("post") or
                      s.startswith("pre"))
    assert "adduser" not in scripts and "useradd" not in scripts, "a maintainer script creates a user"


def test_packaged_programs_check_the_config_and_reach_the_broker(fx):
    root = os.path.join(fx.tmp, "root")
    run(["dpkg-deb", "-x", package()["deb"], root])
    eventd = os.path.join(root, "usr/bin/eventd")
    eventctl = os.path.join(root, "usr/bin/eventctl")
    config = os.path.join(root, "etc/eventd/eventd.jsonc")
    assert run([eventd, "--version"]).stdout.strip() == f"eventd {meson_version()}"
    p = run([eventd, "--check-config", config], env=fx.env)
    assert p.stdout.strip() == f"{config}: ok", p.stdout
    # eventctl with the packaged config; the URLs of this test's vhost from the environment.
    p = run([eventctl, "--config", config, "topology", "apply"], env=fx.env)
    assert p.stdout.startswith("topology applied:"), p.stdout
    p = run([eventctl, "--config", config, "publish", "quote_update", '{"symbol":"PKG","price":1.5,"change":0}'],
            env=fx.env)
    assert p.stdout.startswith("published quote_update"), p.stdout
    assert fx.amqp.depth("eventd.quotes") == 1
    p = run([eventctl, "--config", config, "dlq", "list"], env=fx.env)
    assert "eventd.quotes.dlq" in p.stdout, p.stdout
    # The packaged completion and man pages work from where they are installed.
    p = run(["bash", "--norc", "--noprofile", "-c",
             f"source {root}/usr/share/bash-completion/completions/eventctl && complete -p eventctl"])
    assert p.stdout.strip() == "complete -F _eventctl eventctl", p.stdout
    for page in ("man1/eventctl.1.gz", "man8/eventd.8.gz"):
        p = subprocess.run(["man", "-l", os.path.join(root, "usr/share/man", page)], capture_output=True,
                           text=True, timeout=30, stdin=subprocess.DEVNULL, env=dict(os.environ, MANPAGER="cat"))
        assert p.returncode == 0 and "SYNOPSIS" in p.stdout and p.stderr == "", (page, p.stderr[:300])
