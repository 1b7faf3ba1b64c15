#!/usr/bin/env python3
"""A worker for test_python_sdk.ServeRaises: it calls Worker.serve (or, with
SERVE_ENTRY=run, Worker.run) and reports a WorkerError it catches on stderr, then exits 3.

SERVE_MODE: "setup" (the setup hook raises KeyError), "done" (the checkout-done hook raises
RuntimeError), "plain" (no hooks). Methods: echo(args...) -> [args...]."""
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from taskd_worker import Worker, WorkerError  # noqa: E402

mode = os.environ.get("SERVE_MODE", "plain")
w = Worker()


@w.method("echo")
def echo(ctx, *args):
    return list(args)


if mode == "setup":
    @w.setup
    def setup():
        raise KeyError("no database")

if mode == "done":
    @w.checkout_done
    def done():
        raise RuntimeError("rollback failed")

if os.environ.get("SERVE_ENTRY") == "run":
    w.run()
    sys.exit(0)

try:
    w.serve()
except WorkerError as e:
    sys.stderr.write("caught %s: %s (cause %s)\n" % (type(e).__name__, e, type(e.__cause__).__name__))
    sys.exit(3)
sys.stderr.write("serve returned\n")
