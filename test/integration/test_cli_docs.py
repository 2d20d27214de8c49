"""The man pages, the CLI's help and its bash completion: eventctl(1)'s and eventd(8)'s
SYNOPSIS equal what `--help` prints (one source: include/eventd/eventctl_usage.hpp), the
pages render without groff warnings and name every command, option and environment
variable; completion/eventctl completes commands, subcommands, options, types, queues."""
import glob
import os
import re
import subprocess

import harness
from harness import EVENTCTL, EVENTD, SOURCE_DIR, run

MAN_EVENTCTL = os.path.join(SOURCE_DIR, "man", "eventctl.1")
MAN_EVENTD = os.path.join(SOURCE_DIR, "man", "eventd.8")
COMPLETION = os.path.join(SOURCE_DIR, "completion", "eventctl")
TYPES = ["quote_update", "analysis_request", "analysis_complete", "alert_triggered", "notification"]
WORK_QUEUES = list(harness.WORK_QUEUES)  # the default topology's


def unroff(line):
    """The text of one roff line of a .nf block: font changes dropped, escapes resolved."""
    text = re.sub(r"\\f[BIRP]", "", line).replace("\\-", "-").replace("\\&", "").replace("\\(aq", "'")
    assert "\\" not in text, f"unhandled roff escape in {line!r}"
    return text


def man_section(path, name):
    """The source lines of section `name` (up to the next .SH)."""
    with open(path) as f:
        lines = f.read().split("\n")
    start = lines.index(f".SH {name}")
    out = []
    for line in lines[start + 1:]:
        if line.startswith(".SH"):
            break
        out.append(line)
    return out


def man_synopsis(path):
    lines = man_section(path, "SYNOPSIS")
    assert lines[0] == ".nf" and lines[-1] == ".fi", f"{path}: SYNOPSIS is not one .nf/.fi block"
    return [unroff(l) for l in lines[1:-1]]


def help_synopsis(text, program):
    """The usage lines at the top of `program --help`, without the "usage: " indent."""
    out = []
    for n, line in enumerate(text.split("\n")):
        prefix = "usage: " if n == 0 else "       "
        if not line.startswith(prefix):
            break
        out.append(line[len(prefix):])
    assert out and out[0].startswith(program), f"{program} --help does not start with 'usage: {program}': {text[:200]!r}"
    return out


def help_of(*args, program=EVENTCTL):
    p = run([program, *args], timeout=30)
    assert p.stderr == "", f"{args}: stderr {p.stderr!r}"
    return p.stdout


def test_eventctl_help_synopsis_is_the_man_pages(fx):
    assert help_synopsis(help_of("--help"), "eventctl") == man_synopsis(MAN_EVENTCTL), \
        "eventctl --help and man/eventctl.1 SYNOPSIS differ (edit include/eventd/eventctl_usage.hpp and the man page)"
    with open(os.path.join(SOURCE_DIR, "README.md")) as f:
        readme = f.read()
    block = re.search(r"^## eventctl\n\n```\n(.*?)\n```", readme, re.M | re.S)
    assert block and block.group(1).split("\n") == man_synopsis(MAN_EVENTCTL), "README's eventctl synopsis differs"


def test_eventctl_command_help_is_its_man_synopsis(fx):
    man = man_synopsis(MAN_EVENTCTL)
    commands = ["publish", "topology", "dlq", "monitor"]
    for command in commands:
        lines = help_synopsis(help_of(command, "--help"), "eventctl")
        assert lines[0].startswith(f"eventctl [--config FILE] {command} "), lines
        # Its lines appear in the man page's SYNOPSIS, in order and together.
        start = man.index(lines[0])
        assert man[start:start + len(lines)] == lines, f"eventctl {command} --help: {lines} vs the man page {man}"
    # A subcommand's --help is its command's, wherever --help stands.
    assert help_of("dlq", "show", "--help") == help_of("dlq", "--help")
    assert help_of("--config", "/nonexistent.jsonc", "publish", "quote_update", "--help") == help_of("publish", "--help")
    # Every synopsis line belongs to one command's help or the general lines.
    covered = [l for c in commands for l in help_synopsis(help_of(c, "--help"), "eventctl")]
    rest = [l for l in man if l not in covered]
    assert rest == ["eventctl [COMMAND] --help", "eventctl --version"], rest
    # Without any argument: the usage on stderr, exit 2.
    p = run([EVENTCTL], check=False)
    assert p.returncode == 2 and p.stdout == "" and p.stderr.startswith("usage: eventctl"), (p.returncode, p.stderr[:200])


def test_eventd_help_synopsis_is_the_man_pages(fx):
    text = help_of("--help", program=EVENTD)
    lines = [re.split(r"\s{2,}", l, maxsplit=1)[0] for l in help_synopsis(text, "eventd")]
    assert lines == man_synopsis(MAN_EVENTD), f"eventd --help {lines} and man/eventd.8 SYNOPSIS differ"


def test_man_pages_render_cleanly_and_name_everything(fx):
    for page in (MAN_EVENTD, MAN_EVENTCTL):
        p = subprocess.run(["groff", "-man", "-ww", "-z", page], capture_output=True, text=True, timeout=30,
                           stdin=subprocess.DEVNULL)
        assert p.returncode == 0 and p.stderr == "", f"groff warns about {page}: {p.stderr.strip()[:500]}"
        p = subprocess.run(["man", "--warnings", "-l", "-Tutf8", page], capture_output=True, timeout=30,
                           stdin=subprocess.DEVNULL, env=dict(os.environ, MANWIDTH="80"))
        assert p.returncode == 0 and p.stderr == b"", f"man -l {page}: {p.stderr.decode()[:500]}"
    eventctl_page = unroff_all(MAN_EVENTCTL)
    for option in sorted(set(re.findall(r"--[a-z][a-z-]+", help_of("--help")))):
        assert option in eventctl_page, f"eventctl(1) does not mention {option}"
    for command in ("topology apply", "topology verify", "dlq list", "dlq show", "dlq replay", "dlq purge",
                    "monitor start", "monitor stop", "monitor status", "monitor list", "publish"):
        assert re.search(rf"^\.TP\n(\.B )?{command}\b", eventctl_page, re.M), f"eventctl(1) COMMANDS lacks {command}"
    # Every EVENTD_* variable the code reads is in both pages' ENVIRONMENT (eventctl reads
    # the same config code as eventd, so EVENTD_HTTP_LISTEN is the daemon's alone).
    sources = "".join(open(p).read() for p in glob.glob(os.path.join(SOURCE_DIR, "src", "**", "*.cpp"),
                                                         recursive=True))
    names = set(re.findall(r'"(EVENTD_[A-Z_]+)"', sources))
    assert {"EVENTD_CONFIG", "EVENTD_AMQP_URL", "EVENTD_REDIS_URL", "EVENTD_MANAGEMENT_URL"} <= names, names
    env_eventd = "\n".join(man_section(MAN_EVENTD, "ENVIRONMENT"))
    env_eventctl = "\n".join(man_section(MAN_EVENTCTL, "ENVIRONMENT"))
    for name in sorted(names | {"EVENTD_HTTP_LISTEN"}):
        assert f".B {name}" in env_eventd, f"eventd(8) ENVIRONMENT lacks {name}"
        if name != "EVENTD_HTTP_LISTEN":
            assert f".B {name}" in env_eventctl, f"eventctl(1) ENVIRONMENT lacks {name}"


def unroff_all(path):
    with open(path) as f:
        return re.sub(r"\\f[BIRP]", "", f.read()).replace("\\-", "-")


# ---------------------------------------------------------------- bash completion

COMPLETE = r"""
source "$1"; shift
complete -p eventctl
fn=$(complete -p eventctl | sed -E 's/.*-F ([^ ]+) .*/\1/')
COMP_WORDS=(eventctl "$@"); COMP_CWORD=$#; COMP_LINE="eventctl $*"; COMP_POINT=${#COMP_LINE}
"$fn" eventctl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
"""


def complete(*words, cwd=None):
    """What bash offers for `eventctl WORDS...` (the last word is the one being completed)."""
    p = subprocess.run(["bash", "--norc", "--noprofile", "-c", COMPLETE, "complete", COMPLETION, *words],
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, cwd=cwd)
    assert p.returncode == 0 and p.stderr == "", f"completion of {words} failed: {p.stderr.strip()[:300]}"
    lines = p.stdout.split("\n")
    assert lines[0] == "complete -F _eventctl eventctl", f"complete -p eventctl says {lines[0]!r}"
    return sorted(l for l in lines[1:] if l)


def test_bash_completion(fx):
    assert complete("") == sorted(["publish", "topology", "dlq", "monitor"])
    assert complete("-") == ["--config", "--help", "--version"]
    assert complete("d") == ["dlq"]
    assert complete("publish", "") == sorted(TYPES)
    assert complete("publish", "a") == ["alert_triggered", "analysis_complete", "analysis_request"]
    assert complete("publish", "quote_update", "--c") == ["--correlation-id", "--count"]
    assert complete("publish", "quote_update", "--count", "") == [], "--count N has no completion"
    assert complete("topology", "") == ["apply", "verify"]
    assert complete("dlq", "") == sorted(["list", "show", "replay", "purge"])
    all_queues = sorted(WORK_QUEUES + [q + ".dlq" for q in WORK_QUEUES])
    for sub in ("show", "replay", "purge"):
        assert complete("dlq", sub, "") == all_queues, sub
    assert complete("dlq", "purge", "eventd.notify.") == sorted(
        q for q in all_queues if q.startswith("eventd.notify."))
    assert complete("dlq", "replay", "eventd.alerts", "--") == ["--all", "--count", "--help", "--id"]
    assert complete("dlq", "list", "") == []
    assert complete("monitor", "") == sorted(["start", "stop", "status", "list"])
    # The global --config FILE is skipped; its value completes as a file name.
    assert complete("--config", "x.jsonc", "dlq", "") == sorted(["list", "show", "replay", "purge"])
    files = os.path.join(fx.tmp, "files")
    os.mkdir(files)
    with open(os.path.join(files, "spec.json"), "w") as f:
        f.write("{}")
    assert complete("--config", "sp", cwd=files) == ["spec.json"]
    assert complete("monitor", "start", "alice", "@s", cwd=files) == ["@spec.json"]
    assert complete("publish", "notification", "@", cwd=files) == ["@spec.json"]
    # The message types and queue names are eventctl's own.
    p = run([EVENTCTL, "publish", "nope", "{}"], check=False)
    assert p.returncode == 2 and all(t in p.stderr for t in TYPES), p.stderr
