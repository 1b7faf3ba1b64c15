#!/usr/bin/env python3
"""A complete taskd worker with no SDK: worker protocol v1 in plain Python."""
import json, os, sys, time, traceback

def send(msg):  # one JSON object per line on stdout, flushed at once
    sys.stdout.buffer.write(json.dumps(msg).encode() + b"\n")
    sys.stdout.buffer.flush()

send({"t": "ready", "v": 1})                     # setup done: accept calls
for line in sys.stdin.buffer:                    # end of input: exit now
    msg = json.loads(line)
    if msg.get("t") != "call":                   # "done", "cancel", unknown: no reply
        continue
    m, a, logs = msg.get("m") or "", msg.get("a") or [], []
    try:
        if m in ("", "echo"): r = a              # "" is a function-style call
        elif m == "fail": raise ValueError(*a)
        elif m == "pid": r = os.getpid()
        elif m == "sleep": time.sleep(a[0] / 1000); r = a[0]
        elif m == "spin": r = any(iter(int, 1))          # never returns: burns CPU
        elif m == "log": r, logs = True, [{"ts": time.time(), "lvl": "info", "msg": a[0]}]
        elif m == "bye":                                 # retire me after this checkout:
            send({"t": "bye", "msg": "asked to retire"}); r = "bye"  # say so before the reply
        else: raise LookupError("unknown method %r" % m)
        send({"t": "ok", "id": msg["id"], "r": r, "logs": logs})
    except Exception as e:
        send({"t": "err", "id": msg["id"], "e": {"msg": str(e), "type": type(e).__name__,
                                                 "trace": traceback.format_exc()}})
