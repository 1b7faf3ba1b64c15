"""The Python SDK (sdk/python/taskd_worker) against the protocol, without the daemon."""
import os
import sys
import unittest
from unittest import mock

import taskd_worker
from taskd_worker import ConfigError, Worker

from .sdk_cases import SDKCases
from .workerproc import REPO, WorkerProc

HERE = os.path.dirname(os.path.abspath(__file__))
SERVE_WORKER = os.path.join(HERE, "serve_worker.py")


class PythonSDK(SDKCases, unittest.TestCase):
    # the conformance suite's worker: one worker serves both (see its docstring)
    ARGV = [sys.executable, os.path.join(REPO, "internal", "conformance", "workers", "python_sdk.py")]

    def test_logging_records_travel_with_the_reply(self):
        self.w.wait_stderr("info: logging during setup")  # outside a call: stderr only
        reply = self.w.call("stdlog", "x")
        self.assertEqual(reply["r"], "logged")
        logs = reply["logs"]
        self.assertEqual([(l["lvl"], l["msg"]) for l in logs],
                         [("info", "before"), ("debug", "debug x"), ("warn", "warned"),
                          ("error", "caught"), ("error", "from a thread"), ("info", "after")])
        self.assertEqual(logs[0]["f"], {})
        self.assertEqual(logs[1]["f"], {"logger": "app"})
        # extra= fields are fields; values that are not JSON are sent as their repr
        self.assertEqual(logs[2]["f"], {"logger": "app", "user": "ann", "n": 2, "obj": "{1, 2}"})
        self.assertEqual(sorted(logs[3]["f"]), ["exc", "logger"])
        self.assertIn("ValueError: inner", logs[3]["f"]["exc"])
        self.assertEqual(logs[4]["f"], {"logger": "app.thread"})
        ts = [l["ts"] for l in logs]
        self.assertEqual(ts, sorted(ts))
        self.assertTrue(all(isinstance(t, float) and t > 1.6e9 for t in ts))
        self.w.wait_stderr('warn: warned {"logger": "app", "n": 2, "obj": "{1, 2}", "user": "ann"}')
        self.assertNotIn("logs", self.w.call("echo"))

    def test_logging_below_the_level_is_dropped(self):
        reply = self.w.call("stdlog_levels")
        self.assertEqual([(l["lvl"], l["msg"]) for l in reply["logs"]], [("info", "kept")])


class ServeRaises(unittest.TestCase):
    """Worker.serve raises WorkerError where the worker cannot go on; only Worker.run exits
    (status 1). serve_worker.py exits 3 when it catches the exception."""

    def start(self, mode, entry="serve", **env):
        w = WorkerProc([sys.executable, SERVE_WORKER], env=dict(env, SERVE_MODE=mode, SERVE_ENTRY=entry))
        self.addCleanup(w.kill)
        return w

    def assertExits(self, w, status, *stderr):
        self.assertEqual(w.p.wait(timeout=20), status)
        w.assert_no_more_output()
        for text in stderr:
            w.wait_stderr(text)

    def test_setup_error(self):
        w = self.start("setup")
        self.assertExits(w, 3, "caught SetupError: setup failed: KeyError: 'no database' (cause KeyError)")

    def test_setup_error_from_run(self):
        w = self.start("setup", entry="run")
        self.assertExits(w, 1, "taskd_worker: setup failed: KeyError: 'no database'",
                         "Traceback (most recent call last)", "in setup")

    def test_checkout_done_error(self):
        for entry, status, text in (("serve", 3, "caught CheckoutDoneError: checkout_done hook failed "
                                                  "(RuntimeError: rollback failed)"),
                                    ("run", 1, "taskd_worker: checkout_done hook failed")):
            with self.subTest(entry):
                w = self.start("done", entry=entry)
                self.assertEqual(w.recv(), {"t": "ready", "v": 1, "pipeline": True})
                self.assertEqual(w.result("echo", 1), [1])
                w.send({"t": "done"})
                self.assertExits(w, status, text, "RuntimeError: rollback failed")

    def test_config_error(self):
        w = self.start("plain", TASKD_MAX_MESSAGE_BYTES="lots")
        self.assertExits(w, 3, "caught ConfigError: TASKD_MAX_MESSAGE_BYTES='lots'")

    def test_protocol_error(self):
        w = self.start("plain", TASKD_MAX_MESSAGE_BYTES="100")
        self.assertEqual(w.recv()["t"], "ready")
        w.send({"t": "call", "id": 1, "m": "echo", "a": ["x" * 100]})
        self.assertExits(w, 3, "caught ProtocolError: taskd sent a line longer than 100 bytes")

    def test_end_of_input_returns(self):
        w = self.start("plain")
        self.assertEqual(w.recv()["t"], "ready")
        self.assertEqual(w.close(), 0)
        w.assert_no_more_output()
        w.wait_stderr("serve returned")

    def test_config_error_in_process(self):
        # raised before stdin or stdout is touched, so it can be checked here
        with mock.patch.dict(os.environ, {"TASKD_MAX_MESSAGE_BYTES": "0"}):
            with self.assertRaises(ConfigError) as cm:
                Worker().serve()
        self.assertIsInstance(cm.exception, taskd_worker.WorkerError)
        self.assertIn("TASKD_MAX_MESSAGE_BYTES='0'", str(cm.exception))


class Package(unittest.TestCase):
    def test_public_names(self):
        for name in taskd_worker.__all__:
            self.assertTrue(hasattr(taskd_worker, name), name)
        self.assertRegex(taskd_worker.__version__, r"^\d+\.\d+\.\d+$")

    def test_typed(self):
        self.assertTrue(os.path.isfile(os.path.join(os.path.dirname(taskd_worker.__file__), "py.typed")))
