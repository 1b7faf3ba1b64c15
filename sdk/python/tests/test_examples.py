"""The hello-world example of the Python SDK answers its one method. (The Perl one is
tested by sdk/perl/t/examples.t.)"""
import os
import sys
import unittest

from .workerproc import REPO, WorkerProc

HELLO = os.path.join(REPO, "sdk", "python", "examples", "hello.py")


class HelloExample(unittest.TestCase):
    def test_hello(self):
        w = WorkerProc([sys.executable, HELLO])
        self.addCleanup(w.kill)
        self.assertEqual(w.recv(), {"t": "ready", "v": 1, "pipeline": True})
        reply = w.call("hello", "\U0001F600")
        self.assertEqual(reply["r"], "hello, \U0001F600")
        self.assertEqual([(l["lvl"], l["msg"], l["f"]) for l in reply["logs"]],
                         [("info", "greeting", {"name": "\U0001F600"})])
        self.assertEqual(w.result("hello"), "hello, world")
        self.assertEqual(w.close(), 0)
