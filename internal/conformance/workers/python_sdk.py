#!/usr/bin/env python3
"""The Python SDK's test worker. It serves the method contract of package conformance
(internal/conformance/doc.go), base and SDK parts, for the conformance suite, and the extra
methods below for the SDK's own tests (sdk/python/tests, which run it directly). The Perl
SDK's twin is perl_sdk.pl, beside this file (for sdk/perl/t).

    timers()        -> "timed": timer "a" {x: 1} stopped twice, timer "b" left running
    note(x)         -> x, logging "noted" {x}; notes() -> every x noted so far, in order
    nan()           -> a result that is not JSON (the SDK answers err)
    read_stdin()    -> how many bytes fd 0 gave (0: it is /dev/null)
    stdlog(x)       -> "logged", logging through Python's logging module (LogHandler) and
                       ctx.log, from this thread and another one
    stdlog_levels() -> "leveled": a debug record below its logger's level, an info one

taskd starts workers with a clean environment (no PYTHONPATH), so the SDK is found
relative to this file: the one of this source tree, even if another is installed."""
import logging
import os
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "sdk", "python"))
from taskd_worker import LogHandler, Worker  # noqa: E402

w = Worker()
logging.basicConfig(level=logging.DEBUG, handlers=[LogHandler(w)])
applog = logging.getLogger("app")
counts = {"setups": 0, "dones": 0}
notes = []  # arguments of "note" calls: shows which calls ran
keep = []   # timers still running after their call


class ConformanceError(Exception):
    pass


@w.setup
def setup():
    counts["setups"] += 1
    print("print during setup")  # must not reach the protocol
    applog.info("logging during setup")  # stderr only
    w.log.info("setup finished", pid=os.getpid())


@w.checkout_done
def checkout_done():
    counts["dones"] += 1


@w.default
@w.method("echo")
def echo(ctx, *args):
    return list(args)


@w.method("fail")
def fail(ctx, msg):
    raise ConformanceError(msg)


@w.method("pid")
def pid(ctx):
    return os.getpid()


@w.method("sleep")
def sleep(ctx, ms):
    time.sleep(ms / 1000.0)
    return ms


@w.method("spin")
def spin(ctx):
    while True:
        pass


@w.method("bye")
def bye(ctx):
    ctx.bye("asked to")
    return "bye"


@w.method("log")
def log(ctx, msg):
    ctx.log.info(msg)
    return True


@w.method("counts")
def get_counts(ctx):
    return counts


@w.method("print")
def do_print(ctx, s):
    print(s)
    sys.stdout.write(s + " (sys.stdout)\n")
    sys.stdout.flush()
    sys.__stdout__.write(s + " (sys.__stdout__)\n")
    sys.__stdout__.flush()
    os.write(1, (s + " (fd 1)\n").encode("utf-8"))
    subprocess.run(["echo", s + " (child)"], check=False)
    return "printed"


@w.method("logs")
def logs(ctx):
    ctx.log.info("one", n=1)
    with ctx.log.timer("t"):
        ctx.log.warn("two", big=2 ** 70)
    ctx.log.error("three")
    return "logged"


@w.method("wait_cancel")
def wait_cancel(ctx, ms):
    sys.stderr.write("waiting for cancel %s\n" % ctx.id)
    sys.stderr.flush()
    deadline = time.monotonic() + ms / 1000.0
    while time.monotonic() < deadline:
        if ctx.cancelled():
            return "cancelled"
        time.sleep(0.001)
    return "not cancelled"


@w.method("cancel_cleanup")
def cancel_cleanup(ctx, path):
    while not ctx.cancelled():
        time.sleep(0.001)
    with open(path, "w") as f:  # the cleanup, after the cancel
        f.write("cleaned up")
    return "cancelled"


@w.method("big")
def big(ctx, n):
    return "y" * n


@w.method("len")
def length(ctx, s):
    return len(s)


# -- for the SDK's own tests (sdk/python/tests/sdk_cases.py) ------------------------------

@w.method("timers")
def timers(ctx):
    t = ctx.log.timer("a", x=1)
    t.stop()
    t.stop()  # records once
    keep.append(ctx.log.timer("b"))  # still running when the call is answered
    return "timed"


@w.method("note")
def note(ctx, x):
    ctx.log.info("noted", x=x)
    notes.append(x)
    return x


@w.method("notes")
def get_notes(ctx):
    return notes


@w.method("nan")
def nan(ctx):
    return float("nan")  # not JSON: the SDK answers err


@w.method("read_stdin")
def read_stdin(ctx):
    return len(os.read(0, 100))


@w.method("stdlog")
def stdlog(ctx, x):
    ctx.log.info("before")
    applog.debug("debug %s", x)
    applog.warning("warned", extra={"user": "ann", "n": 2, "obj": {1, 2}})
    try:
        raise ValueError("inner")
    except ValueError:
        applog.exception("caught")
    t = threading.Thread(target=logging.getLogger("app.thread").critical, args=("from a thread",))
    t.start()
    t.join()
    ctx.log.info("after")
    return "logged"


@w.method("stdlog_levels")
def stdlog_levels(ctx):
    leveled = logging.getLogger("app.levels")
    leveled.setLevel(logging.INFO)
    leveled.debug("dropped")
    leveled.info("kept")
    return "leveled"


w.run()
