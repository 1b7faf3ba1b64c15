"""The Python SDK's direct-lease support (docs/worker-protocol.md, "Direct leases"): this
test plays taskd's side, with a control socketpair, a memfd stats page and a socketpair per
lease, around the conformance suite's Python worker."""
import json
import os
import socket
import struct
import sys
import time
import unittest

from .workerproc import REPO, TIMEOUT, WorkerProc, decode_line

WORKER = [sys.executable, os.path.join(REPO, "internal", "conformance", "workers", "python_sdk.py")]
STATS = struct.Struct("<QQQQQqQQQ")  # seq, magic, calls, done, cur_id, cur_start, lease, errs, mlen


@unittest.skipUnless(hasattr(os, "memfd_create") and hasattr(socket, "recv_fds"), "needs Linux and Python 3.9")
class Lease(unittest.TestCase):
    def setUp(self):
        self.ctl, wctl = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.addCleanup(self.ctl.close)
        memfd = os.memfd_create("taskd-stats")
        os.ftruncate(memfd, 4096)
        self.page = memfd
        self.addCleanup(os.close, memfd)
        env = {"TASKD_CONTROL_FD": str(wctl.fileno()), "TASKD_STATS_FD": str(memfd)}
        self.w = WorkerProc(WORKER, env=env, pass_fds=(wctl.fileno(), memfd))
        self.addCleanup(self.w.kill)
        wctl.close()
        self.assertEqual(self.w.recv(), {"t": "ready", "v": 1, "pipeline": True, "lease": 1})

    def lease(self, lease_id):
        c, wend = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(c.close)
        socket.send_fds(self.ctl, [json.dumps({"t": "lease", "id": lease_id}).encode()], [wend.fileno()])
        wend.close()
        c.settimeout(TIMEOUT)
        return c, c.makefile("rb")

    def control(self):
        self.ctl.settimeout(TIMEOUT)
        return json.loads(self.ctl.recv(4096))

    def stats(self):
        while True:
            b = os.pread(self.page, 4096, 0)
            seq, magic, calls, done, cur_id, start, lease, errs, mlen = STATS.unpack_from(b, 0)
            if seq % 2 == 0 and struct.unpack_from("<Q", os.pread(self.page, 8, 0))[0] == seq:
                self.assertEqual(magic, 0x7461736B64737431)
                return {"calls": calls, "done": done, "cur_id": cur_id, "start": start, "lease": lease,
                        "errs": errs, "method": b[72:72 + mlen].decode()}

    def test_calls_cancel_end(self):
        c, r = self.lease(1)
        # pipelined with the ep rule: call 3 was made before the caller saw 2's error
        calls = [{"t": "call", "id": 1, "m": "echo", "ep": 0, "a": [1]},
                 {"t": "call", "id": 2, "m": "fail", "ep": 0, "a": ["no"]},
                 {"t": "call", "id": 3, "m": "echo", "ep": 0, "a": [3]},
                 {"t": "call", "id": 4, "m": "echo", "ep": 1, "a": [4]}]
        c.sendall(b"".join(json.dumps(m).encode() + b"\n" for m in calls))
        self.assertEqual(decode_line(r.readline()), {"t": "ok", "id": 1, "r": [1]})
        self.assertEqual(decode_line(r.readline())["t"], "err")
        self.assertEqual(decode_line(r.readline()), {"t": "aborted", "id": 3})
        self.assertEqual(decode_line(r.readline()), {"t": "ok", "id": 4, "r": [4]})
        st = self.stats()
        self.assertEqual((st["calls"], st["done"], st["errs"], st["cur_id"]), (3, 3, 1, 0))

        # a long call shows in the stats page; taskd cancels it on control
        before = time.time_ns()
        c.sendall(json.dumps({"t": "call", "id": 5, "m": "wait_cancel", "ep": 1, "a": [20000]}).encode() + b"\n")
        self.w.wait_stderr("waiting for cancel 5")
        st = self.stats()
        self.assertEqual((st["cur_id"], st["lease"], st["method"], st["calls"]), (5, 1, "wait_cancel", 4))
        self.assertGreaterEqual(st["start"], before - 10 ** 6)
        self.ctl.send(b'{"t":"cancel","id":5}')
        self.assertEqual(decode_line(r.readline()), {"t": "ok", "id": 5, "r": "cancelled"})
        st = self.stats()
        self.assertEqual((st["cur_id"], st["done"]), (0, 4))

        # bye goes to taskd on control
        c.sendall(b'{"t":"call","id":6,"m":"bye","ep":1}\n')
        self.assertEqual(decode_line(r.readline())["r"], "bye")
        self.assertEqual(self.control(), {"t": "bye", "msg": "asked to"})

        # end: the worker closes its end, runs the hook, says ended
        self.ctl.send(b'{"t":"end","id":1}')
        self.assertEqual(self.control(), {"t": "ended", "id": 1})
        self.assertEqual(r.readline(), b"", "the client's end reads EOF")
        with self.assertRaises((BrokenPipeError, ConnectionResetError)):
            for _ in range(100):  # a client that keeps writing
                c.sendall(b'{"t":"call","id":7,"m":"echo"}\n')
        # relayed calls still work; the hook ran once
        self.assertEqual(self.w.result("counts"), {"setups": 1, "dones": 1})
        self.assertEqual(self.stats()["lease"], 0)

    def test_client_gone_waits_for_end(self):
        c, r = self.lease(7)
        c.sendall(b'{"t":"call","id":1,"m":"echo","ep":0,"a":["x"]}\n')
        self.assertEqual(decode_line(r.readline())["r"], ["x"])
        c.close()
        self.ctl.send(b'{"t":"something-new"}')  # ignored
        self.ctl.send(b'{"t":"end","id":7}')
        self.assertEqual(self.control(), {"t": "ended", "id": 7})
        self.ctl.send(b'{"t":"end","id":7}')
        self.assertEqual(self.control(), {"t": "ended", "id": 7}, "an end for a lease that is over is answered")
        self.assertEqual(self.w.close(), 0)


class NoLease(unittest.TestCase):
    def test_unusable_endpoints(self):
        w = WorkerProc(WORKER, env={"TASKD_CONTROL_FD": "99", "TASKD_STATS_FD": "98"})
        self.addCleanup(w.kill)
        self.assertEqual(w.recv(), {"t": "ready", "v": 1, "pipeline": True})
        w.wait_stderr("direct leases off")
        self.assertEqual(w.result("echo", 1), [1])
