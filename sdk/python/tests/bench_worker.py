#!/usr/bin/env python3
"""The echo workers pkg/worker's BenchmarkPipe drives over a pipe when TASKD_BENCH_PYTHON
names an interpreter: "sdk" (this SDK's Worker) and "floor" (a minimal single-threaded
loop: the floor the SDK is measured against). Method echo(args...) -> [args...]."""
import json
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def floor():
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    out.write(b'{"t":"ready","v":1,"pipeline":true}\n')
    out.flush()
    for line in inp:
        msg = json.loads(line)
        if msg.get("t") == "call":
            reply = {"t": "ok", "id": msg.get("id"), "r": msg.get("a", [])}
            out.write(json.dumps(reply, separators=(",", ":")).encode() + b"\n")
            out.flush()


def sdk():
    from taskd_worker import Worker
    w = Worker()

    @w.method("echo")
    def echo(ctx, *args):
        return list(args)

    w.run()


if __name__ == "__main__":
    {"floor": floor, "sdk": sdk}[sys.argv[1]]()
