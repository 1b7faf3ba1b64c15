"""The raw, no-SDK worker of docs/worker-protocol.md (examples/raw-python/worker.py).

The file is the one the document shows; test_doc_shows_this_worker checks that they agree.
"""
import os
import re
import sys
import unittest

from .workerproc import REPO, ROUND_TRIP, WorkerProc

RAW = os.path.join(REPO, "examples", "raw-python", "worker.py")
DOC = os.path.join(REPO, "docs", "worker-protocol.md")
MiB = 1 << 20


class RawWorker(unittest.TestCase):
    def setUp(self):
        self.w = WorkerProc([sys.executable, RAW])
        self.addCleanup(self.w.kill)
        self.assertEqual(self.w.recv(), {"t": "ready", "v": 1})

    def test_echo_round_trip(self):
        self.assertEqual(self.w.result("echo", *ROUND_TRIP), ROUND_TRIP)

    def test_function_style_call_echoes(self):
        self.assertEqual(self.w.result(None, 1, "two"), [1, "two"])
        self.assertEqual(self.w.result("", 3), [3])

    def test_error_with_type_and_trace(self):
        reply = self.w.call("fail", "it broke")
        self.assertEqual(reply["t"], "err")
        self.assertEqual(reply["e"]["type"], "ValueError")
        self.assertEqual(reply["e"]["msg"], "it broke")
        self.assertIn("ValueError: it broke", reply["e"]["trace"])
        self.assertEqual(self.w.result("echo", 1), [1])
        self.assertEqual(self.w.call("nope")["e"]["type"], "LookupError")

    def test_pid_and_sleep(self):
        self.assertEqual(self.w.result("pid"), self.w.p.pid)
        self.assertEqual(self.w.result("sleep", 5), 5)

    def test_cancel_and_done_need_no_reply(self):
        msg = self.w.call_msg("sleep", 1)
        self.w.send(msg)
        self.w.send({"t": "cancel", "id": msg["id"]})
        self.w.send({"t": "done"})
        self.assertEqual(self.w.recv()["id"], msg["id"])  # a reply is still owed
        self.assertEqual(self.w.result("echo", "next"), ["next"])

    def test_bye(self):
        msg = self.w.call_msg("bye")
        self.w.send(msg)
        self.assertEqual(self.w.recv()["t"], "bye")  # before the reply
        self.assertEqual(self.w.recv()["r"], "bye")
        self.assertEqual(self.w.result("echo", 1), [1])

    def test_one_mib(self):
        arg = "\U0001F600" * MiB
        self.assertEqual(self.w.result("echo", arg), [arg])

    def test_eof_exits_zero(self):
        self.assertEqual(self.w.close(), 0)
        self.w.assert_no_more_output()

    def test_doc_shows_this_worker(self):
        with open(DOC, encoding="utf-8") as f:
            doc = f.read()
        with open(RAW, encoding="utf-8") as f:
            code = f.read()
        blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
        self.assertIn(code, blocks, "docs/worker-protocol.md must show examples/raw-python/worker.py verbatim")
