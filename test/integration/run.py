#!/usr/bin/python3
"""Runs eventd's integration tests: every test_* function of every test_*.py module in
this folder (modules sorted by name, functions in file order), one at a time, each
with a fresh harness.Fixture and bounded by an alarm (the function's `timeout`
attribute, default 120 s).

A module may define setup_module() and teardown_module(): they run once, before its
first selected test and after its last (bounded by their `timeout` attributes,
default 300 s), for what its tests share, such as a private server. When
setup_module() fails, each of the module's tests fails with its reason; teardown_module()
runs all the same (it cleans up what setup got to).

    run.py [-k WORD]     only tests whose module::function name contains WORD

Prints PASS/FAIL per test and, as the last line, "N passed, N failed". Exit code 0
only if nothing failed. Needs the environment scripts/test exports.
"""
import argparse
import glob
import importlib
import os
import signal
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # noqa: E402

DEFAULT_TIMEOUT = 120
MODULE_HOOK_TIMEOUT = 300


def discover():
    tests = []
    for path in sorted(glob.glob(os.path.join(HERE, "test_*.py"))):
        module = importlib.import_module(os.path.splitext(os.path.basename(path))[0])
        for name, fn in vars(module).items():  # definition order
            if name.startswith("test_") and callable(fn) and getattr(fn, "__module__", None) == module.__name__:
                tests.append((f"{module.__name__}::{name}", fn))
    return tests


def on_alarm(signum, frame):
    raise harness.TestTimeout("test exceeded its time limit")


def where(exc):
    """file:line of the innermost frame in a test module or the harness."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if os.path.dirname(os.path.abspath(frame.filename)) == HERE:
            return f"{os.path.basename(frame.filename)}:{frame.lineno}"
    return "?"


def run_one(name, fn):
    started = time.monotonic()
    fx = None
    failure = None
    tails = []
    timeout = getattr(fn, "timeout", DEFAULT_TIMEOUT)
    signal.alarm(timeout)
    try:
        fx = harness.Fixture(fn.__name__[len("test_"):][:40])
        fn(fx)
    except BaseException as e:  # noqa: B902 - anything a test raises is a failure
        if isinstance(e, KeyboardInterrupt):
            signal.alarm(0)
            raise
        reason = str(e).replace("\n", " | ") or type(e).__name__
        if isinstance(e, harness.TestTimeout):
            reason = f"timed out after {timeout} s"
        failure = f"{reason} [{type(e).__name__} at {where(e)}]"
    finally:
        signal.alarm(0)
    if fx is not None:
        if failure:
            tails = fx.log_tails()
        signal.alarm(60)  # teardown is bounded too
        try:
            errors = fx.close()
        except harness.TestTimeout:
            errors = ["teardown timed out"]
        finally:
            signal.alarm(0)
        for err in errors:
            print(f"    warning: {err}", flush=True)
    elapsed = time.monotonic() - started
    if failure is None:
        print(f"PASS {name} ({elapsed:.1f}s)", flush=True)
        return True
    print(f"FAIL {name}: {failure} ({elapsed:.1f}s)", flush=True)
    for log, lines in tails:
        print(f"    --- last stderr lines of {log}", flush=True)
        for line in lines:
            print(f"    {line[:400]}", flush=True)
    return False


def module_hook(module, name):
    """Runs module.<name>() if it exists; None, or why it failed."""
    hook = getattr(module, name, None)
    if hook is None:
        return None
    started = time.monotonic()
    signal.alarm(getattr(hook, "timeout", MODULE_HOOK_TIMEOUT))
    try:
        hook()
        return None
    except BaseException as e:  # noqa: B902 - a failed hook fails the module's tests
        if isinstance(e, KeyboardInterrupt):
            raise
        reason = "timed out" if isinstance(e, harness.TestTimeout) else (str(e).replace("\n", " | ")
                                                                         or type(e).__name__)
        return f"{module.__name__}.{name}: {reason} [{type(e).__name__} at {where(e)}]"
    finally:
        signal.alarm(0)
        print(f"     {module.__name__}.{name} took {time.monotonic() - started:.1f}s", flush=True)


def main():
    parser = argparse.ArgumentParser(description="eventd integration tests")
    parser.add_argument("-k", dest="word", default="", help="only tests whose name contains WORD")
    args = parser.parse_args()
    signal.signal(signal.SIGALRM, on_alarm)
    passed = failed = 0
    started = time.monotonic()
    try:
        tests = [(n, f) for n, f in discover() if args.word in n]
    except Exception as e:
        print(f"FAIL discovery: {type(e).__name__}: {e}", flush=True)
        print("0 passed, 1 failed", flush=True)
        return 1
    module, setup_error = None, None
    for name, fn in tests:
        if sys.modules[fn.__module__] is not module:
            if module is not None and (error := module_hook(module, "teardown_module")):
                print(f"    warning: {error}", flush=True)
            module = sys.modules[fn.__module__]
            setup_error = module_hook(module, "setup_module")
        if setup_error is not None:
            print(f"FAIL {name}: {setup_error} (0.0s)", flush=True)
            failed += 1
        elif run_one(name, fn):
            passed += 1
        else:
            failed += 1
    if module is not None and (error := module_hook(module, "teardown_module")):
        print(f"    warning: {error}", flush=True)
    print(f"integration tests took {time.monotonic() - started:.1f}s", flush=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
