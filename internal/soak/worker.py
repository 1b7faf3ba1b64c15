#!/usr/bin/env python3
"""The soak's Python worker (the Python SDK): the method contract of internal/soak
(see MaybeRunWorker in worker.go), each method taking a nonce first and answering it.

    echo(nonce) -> nonce            who(nonce) -> [nonce, pid]
    record(nonce) -> nonce, after appending "nonce\\n" to $SOAK_RECORD
    leak(nonce, mib) -> nonce       flood(nonce, kib) -> nonce

taskd starts workers with a clean environment, so the SDK is found relative to this
file: the one of this source tree."""
import os
import sys

sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "sdk", "python"))
from taskd_worker import Worker  # noqa: E402

w = Worker()
hoard = []


@w.method("echo")
def echo(ctx, nonce):
    return nonce


@w.method("who")
def who(ctx, nonce):
    return [nonce, os.getpid()]


@w.method("record")
def record(ctx, nonce):
    fd = os.open(os.environ["SOAK_RECORD"], os.O_APPEND | os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        os.write(fd, (nonce + "\n").encode())  # one write: O_APPEND keeps records whole
    finally:
        os.close(fd)
    return nonce


@w.method("leak")
def leak(ctx, nonce, mib):
    hoard.append(bytearray(b"\1" * (mib << 20)))
    return nonce


@w.method("flood")
def flood(ctx, nonce, kib):
    line = "f" * 1023 + "\n"
    sys.stderr.write(line * kib)
    sys.stderr.flush()
    return nonce


w.run()
