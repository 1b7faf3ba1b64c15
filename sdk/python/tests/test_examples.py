"""The hello-world examples of both SDKs answer their one method."""
import os
import shutil
import sys
import unittest

from workerproc import REPO, WorkerProc

EXAMPLES = [
    ("python", [sys.executable, os.path.join(REPO, "sdk", "python", "examples", "hello.py")]),
    ("perl", [shutil.which("perl") or "perl", os.path.join(REPO, "sdk", "perl", "examples", "hello.pl")]),
]


class HelloExamples(unittest.TestCase):
    def test_hello(self):
        for name, argv in EXAMPLES:
            with self.subTest(name):
                if name == "perl" and shutil.which("perl") is None:
                    self.skipTest("PERL IS NOT INSTALLED: hello.pl was NOT tested")
                w = WorkerProc(argv)
                self.addCleanup(w.kill)
                self.assertEqual(w.recv(), {"t": "ready", "v": 1, "pipeline": True})
                reply = w.call("hello", "\U0001F600")
                self.assertEqual(reply["r"], "hello, \U0001F600")
                self.assertEqual([(l["lvl"], l["msg"], l["f"]) for l in reply["logs"]],
                                 [("info", "greeting", {"name": "\U0001F600"})])
                self.assertEqual(w.result("hello"), "hello, world")
                self.assertEqual(w.close(), 0)


if __name__ == "__main__":
    unittest.main()
