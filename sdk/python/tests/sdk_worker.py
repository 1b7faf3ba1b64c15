#!/usr/bin/env python3
"""The Python SDK's test worker: the methods the SDK tests (and sdk/perl/t/sdk_worker.pl)
implement. Run by test_python_sdk.py."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from taskd_worker import Worker  # noqa: E402

w = Worker()
state = {"setups": 0, "dones": 0}
keep = []
notes = []  # arguments of "note" calls: shows which calls ran


@w.setup
def setup():
    state["setups"] += 1
    print("print during setup")  # must not reach the protocol
    w.log.info("setup finished", pid=os.getpid())


@w.checkout_done
def done():
    state["dones"] += 1


@w.method("echo")
def echo(ctx, *args):
    return list(args)


@w.default
def default(ctx, *args):
    return {"default": list(args)}


@w.method("fail")
def fail(ctx, msg):
    raise ValueError(msg)


@w.method("print")
def do_print(ctx, s):
    print(s)
    sys.stdout.write(s + "\n")
    os.write(1, (s + " (fd 1)\n").encode("utf-8"))
    return "printed"


@w.method("logs")
def logs(ctx):
    ctx.log.info("one", n=1)
    with ctx.log.timer("t"):
        ctx.log.warn("two", big=2 ** 70)
    ctx.log.error("three")
    return "logged"


@w.method("timers")
def timers(ctx):
    t = ctx.log.timer("a", x=1)
    t.stop()
    t.stop()  # records once
    keep.append(ctx.log.timer("b"))  # still running when the call is answered
    return "timed"


@w.method("wait_cancel")
def wait_cancel(ctx, max_ms):
    sys.stderr.write("waiting for cancel %s\n" % ctx.id)
    sys.stderr.flush()
    deadline = time.monotonic() + max_ms / 1000.0
    while time.monotonic() < deadline:
        if ctx.cancelled():
            return "cancelled"
        time.sleep(0.001)
    return "not cancelled"


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


@w.method("counts")
def counts(ctx):
    return state


@w.method("bye")
def bye(ctx):
    ctx.bye("please")
    return "bye"


@w.method("pid")
def pid(ctx):
    return os.getpid()


@w.method("len")
def length(ctx, s):
    return len(s)


@w.method("big")
def big(ctx, n):
    return "y" * n


@w.method("read_stdin")
def read_stdin(ctx):
    return len(os.read(0, 100))


w.run()
