"""Scenarios the SDK's test worker (internal/conformance/workers/python_sdk.py, which the
conformance suite runs too) must pass, without the daemon. A test module subclasses SDKCases
with ARGV, how to start the worker. The Perl SDK's tests (sdk/perl/t) check the same
scenarios against its twin, perl_sdk.pl: change both together."""
import math

from .workerproc import ROUND_TRIP, WorkerProc

MiB = 1 << 20
FAIL_TYPE = "ConformanceError"  # the "type" of the error the workers' "fail" raises


class SDKCases(object):
    ARGV = None

    def setUp(self):
        self.w = self.start()

    def start(self, **env):
        """Starts a worker (env: extra environment variables) and reads its ready."""
        w = WorkerProc(self.ARGV, env=env)
        self.addCleanup(w.kill)
        self.assertEqual(w.recv(), {"t": "ready", "v": 1, "pipeline": True})
        return w

    def assertSameJSON(self, got, want):
        self.assertEqual(got, want)
        self.assertEqual(_types(got), _types(want))

    def test_echo_round_trip(self):
        self.assertSameJSON(self.w.result("echo", *ROUND_TRIP), ROUND_TRIP)
        self.assertEqual(self.w.result("echo"), [])

    def test_function_style_call(self):
        # the default handler echoes, like "echo"; without one the SDK answers UnknownMethod
        self.assertEqual(self.w.result(None, 1, "two"), [1, "two"])
        self.assertEqual(self.w.result("", 3), [3])

    def test_error_keeps_worker_usable(self):
        reply = self.w.call("fail", "it broke \U0001F600")
        self.assertEqual(reply["t"], "err")
        e = reply["e"]
        self.assertEqual(e["type"], FAIL_TYPE)
        self.assertIn("it broke \U0001F600", e["msg"])
        self.assertIn("it broke", e["trace"])
        self.assertIn("python_sdk.py", e["trace"])  # points at the handler's file
        self.assertEqual(self.w.result("echo", 1), [1])

    def test_unknown_method(self):
        reply = self.w.call("no_such_method")
        self.assertEqual(reply["t"], "err")
        self.assertEqual(reply["e"]["type"], "UnknownMethod")
        self.assertIn("no_such_method", reply["e"]["msg"])
        self.assertEqual(self.w.result("echo", 2), [2])

    def test_print_goes_to_stderr(self):
        self.w.wait_stderr("print during setup")
        self.assertEqual(self.w.result("print", "hello from print \u00e9"), "printed")
        self.w.wait_stderr("hello from print \u00e9")
        # recv fails on any stray stdout line; the next message must be this reply
        self.assertEqual(self.w.result("echo", "after"), ["after"])

    def test_stdin_is_not_the_protocol(self):
        self.assertEqual(self.w.result("read_stdin"), 0)
        self.assertEqual(self.w.result("echo", "still here"), ["still here"])

    def test_logs_and_timer_in_order(self):
        reply = self.w.call("logs")
        self.assertEqual(reply["r"], "logged")
        logs = reply["logs"]
        # a timer's record is made when it stops: after the records logged inside it
        self.assertEqual([(l["lvl"], l["msg"]) for l in logs],
                         [("info", "one"), ("warn", "two"), ("info", "t"), ("error", "three")])
        self.assertEqual(logs[0]["f"], {"n": 1})
        self.assertEqual(logs[1]["f"], {"big": 2 ** 70})
        timer = logs[2]["f"]
        self.assertEqual(sorted(timer), ["ms", "timer"])
        self.assertEqual(timer["timer"], "t")
        self.assertIsInstance(timer["ms"], float)  # a float in every SDK, even when whole
        self.assertGreaterEqual(timer["ms"], 0)
        ts = [l["ts"] for l in logs]
        self.assertEqual(ts, sorted(ts))
        self.assertTrue(all(isinstance(t, (int, float)) and t > 1.6e9 for t in ts))
        self.w.wait_stderr("three")  # records are also written to stderr
        self.assertNotIn("logs", self.w.call("echo"))

    def test_timer_fields_and_unfinished_timer(self):
        reply = self.w.call("timers")
        self.assertEqual(reply["r"], "timed")
        logs = reply["logs"]
        self.assertEqual([(l["lvl"], l["msg"]) for l in logs], [("info", "a"), ("info", "b")])
        a, b = logs[0]["f"], logs[1]["f"]
        self.assertEqual((sorted(a), a["timer"], a["x"]), (["ms", "timer", "x"], "a", 1))
        self.assertEqual((sorted(b), b["timer"], b["unfinished"]), (["ms", "timer", "unfinished"], "b", True))
        self.assertIsInstance(a["ms"], float)
        self.assertIsInstance(b["ms"], float)

    def test_cancel_running_call(self):
        msg = self.w.call_msg("wait_cancel", 60000)
        self.w.send(msg)
        self.w.wait_stderr("waiting for cancel %d" % msg["id"])
        self.w.send({"t": "cancel", "id": msg["id"]})
        reply = self.w.recv()
        self.assertEqual((reply["id"], reply["r"]), (msg["id"], "cancelled"))

    def test_cancel_pipelined_call(self):
        first = self.w.call_msg("wait_cancel", 60000)
        second = self.w.call_msg("wait_cancel", 60000)
        self.w.send(first)
        self.w.send(second)
        self.w.wait_stderr("waiting for cancel %d" % first["id"])
        self.w.send({"t": "cancel", "id": second["id"]})  # cancelled before it starts
        self.w.send({"t": "cancel", "id": 999})           # unknown id: ignored
        self.w.send({"t": "cancel", "id": first["id"]})
        r1, r2 = self.w.recv(), self.w.recv()
        self.assertEqual((r1["id"], r1["r"]), (first["id"], "cancelled"))
        self.assertEqual((r2["id"], r2["r"]), (second["id"], "cancelled"))

    def test_pipelined_calls_answered_in_order(self):
        msgs = [self.w.call_msg("echo", i) for i in range(20)]
        for m in msgs:
            self.w.send(m)
        for m in msgs:
            reply = self.w.recv()
            self.assertEqual((reply["t"], reply["id"], reply["r"]), ("ok", m["id"], m["a"]))

    def test_setup_once_and_checkout_done(self):
        self.assertEqual(self.w.result("counts"), {"setups": 1, "dones": 0})
        self.w.send({"t": "done"})
        self.assertEqual(self.w.result("counts"), {"setups": 1, "dones": 1})
        self.w.send({"t": "done"})
        self.w.send({"t": "done"})
        self.assertEqual(self.w.result("counts"), {"setups": 1, "dones": 3})

    def test_unknown_messages_ignored(self):
        self.w.send({"t": "future-thing", "x": 1})
        self.w.send({"t": "call", "id": 77, "m": "echo", "a": [1], "extra": {"y": 2}})
        self.assertEqual(self.w.recv(), {"t": "ok", "id": 77, "r": [1]})

    def test_bye(self):
        # bye comes just before the reply, so that taskd knows it when the reply ends the
        # checkout.
        msg = self.w.call_msg("bye")
        self.w.send(msg)
        self.assertEqual(self.w.recv(), {"t": "bye", "msg": "asked to"})
        reply = self.w.recv()
        self.assertEqual((reply["t"], reply["id"], reply["r"]), ("ok", msg["id"], "bye"))
        self.assertEqual(self.w.result("echo", "still serving"), ["still serving"])

    def test_one_mib_argument_and_result(self):
        arg = "a\u00e9\U0001F600" * (MiB // 3)
        self.assertEqual(self.w.result("len", arg), len(arg))
        self.assertEqual(self.w.result("big", MiB), "y" * MiB)
        self.assertEqual(self.w.result("echo", arg), [arg])

    # -- TASKD_MAX_MESSAGE_BYTES: the longest line either way, without its newline ---------

    def test_reply_at_and_over_the_limit(self):
        w = self.start(TASKD_MAX_MESSAGE_BYTES="4KiB")
        envelope = len('{"t":"ok","id":1,"r":""}')  # the same length with keys in any order
        self.assertEqual(len(w.result("big", 4096 - envelope)), 4096 - envelope)  # id 1: exactly 4 KiB
        reply = w.call("big", 4096)  # id 2
        self.assertEqual(reply["t"], "err")
        self.assertEqual(reply["e"]["type"], "ReplyTooLarge")
        self.assertIn("max_message_bytes (4096)", reply["e"]["msg"])
        self.assertEqual(w.call("note", "x", ep=0)["t"], "aborted")  # it counts as an error
        self.assertEqual(w.result("echo", "still serving"), ["still serving"])

    def test_line_at_and_over_the_limit(self):
        w = self.start(TASKD_MAX_MESSAGE_BYTES="1024")
        msg = {"t": "call", "id": 1, "m": "len", "a": [""]}
        line = WorkerProc.encode(msg)
        msg["a"] = ["x" * (1024 - len(line))]
        self.assertEqual(len(WorkerProc.encode(msg)), 1024)
        w.send(msg)  # exactly 1024 bytes and a newline: accepted
        self.assertEqual(w.recv(), {"t": "ok", "id": 1, "r": 1024 - len(line)})
        queued = w.call_msg("echo", "queued before")
        w.send(queued)
        w.send(dict(msg, id=2, a=["x" * 1025]))
        # what was read before the long line is answered; then the worker exits with status 1
        self.assertEqual(w.recv(), {"t": "ok", "id": queued["id"], "r": ["queued before"]})
        self.assertEqual(w.p.wait(timeout=20), 1)
        w.assert_no_more_output()
        w.wait_stderr("TASKD_MAX_MESSAGE_BYTES")

    def test_bad_max_message_bytes_exits_before_ready(self):
        w = WorkerProc(self.ARGV, env={"TASKD_MAX_MESSAGE_BYTES": "lots"})
        self.addCleanup(w.kill)
        self.assertEqual(w.p.wait(timeout=20), 1)
        w.assert_no_more_output()
        w.wait_stderr("TASKD_MAX_MESSAGE_BYTES")

    def test_eof_exits_zero(self):
        self.assertEqual(self.w.result("echo", 1), [1])
        self.assertEqual(self.w.close(), 0)
        self.w.assert_no_more_output()

    def test_eof_while_calls_queued(self):
        msg = self.w.call_msg("wait_cancel", 60000)
        self.w.send(msg)
        self.w.wait_stderr("waiting for cancel %d" % msg["id"])
        self.assertEqual(self.w.close(), 0)  # end of input counts as cancel, then exit
        reply = self.w.recv()
        self.assertEqual((reply["id"], reply["r"]), (msg["id"], "cancelled"))

    # -- pipelining (docs/worker-protocol.md, "Pipelining (optional)") ----------------------

    def pipeline(self, *calls):
        """Sends all calls (method, args, ep) at once, then returns their replies, checking
        that there is one per call, in order."""
        msgs = [self.w.call_msg(m, *a, ep=ep) for m, a, ep in calls]
        for m in msgs:
            self.w.send(m)
        replies = [self.w.recv() for _ in msgs]
        self.assertEqual([r.get("id") for r in replies], [m["id"] for m in msgs])
        return msgs, replies

    def test_ready_announces_pipelining(self):
        # checked by setUp too: ready is exactly {"t":"ready","v":1,"pipeline":true}
        self.w.send({"t": "done"})
        self.assertEqual(self.w.result("echo", 1, ep=0), [1])

    def test_pipelined_calls_behind_an_error_are_aborted(self):
        # begin / insert (fails) / commit, sent at once: commit was made before the
        # application saw the error (ep 0) and must not run; a call made after it saw the
        # error (ep 1) runs.
        msgs, replies = self.pipeline(("fail", ["insert failed"], 0), ("note", ["commit"], 0),
                                      ("note", ["after"], 1))
        self.assertEqual([r["t"] for r in replies], ["err", "aborted", "ok"])
        self.assertEqual(replies[0]["e"]["type"], FAIL_TYPE)
        self.assertEqual(replies[1], {"t": "aborted", "id": msgs[1]["id"]})  # no logs, no r
        self.assertEqual(replies[2]["r"], "after")
        self.assertEqual(self.w.result("notes"), ["after"])  # "commit" never ran

    def test_pipelined_calls_without_errors_all_run(self):
        msgs, replies = self.pipeline(*[("note", [i], 0) for i in range(10)])
        self.assertEqual([(r["t"], r["r"]) for r in replies], [("ok", i) for i in range(10)])
        self.assertEqual(self.w.result("notes"), list(range(10)))

    def test_aborted_reply_has_id_and_no_logs(self):
        self.assertEqual(self.w.call("fail", "x", ep=0)["t"], "err")
        # "note" logs when it runs; aborted, it neither runs nor logs
        for call_id in (123, 0, 2 ** 64 + 1, "str-id"):
            self.w.send({"t": "call", "id": call_id, "m": "note", "a": ["no"], "ep": 0})
            self.assertEqual(self.w.recv(), {"t": "aborted", "id": call_id})
        reply = self.w.call("note", "yes", ep=1)
        self.assertEqual(reply["r"], "yes")
        self.assertEqual([(l["msg"], l["f"]) for l in reply["logs"]], [("noted", {"x": "yes"})])
        self.assertEqual(self.w.result("notes"), ["yes"])

    def test_call_without_ep_runs_after_an_error(self):
        msgs, replies = self.pipeline(("fail", ["boom"], 0), ("note", ["no ep"], None),
                                      ("note", ["ep 0"], 0), ("note", [None], None))
        self.assertEqual([r["t"] for r in replies], ["err", "ok", "aborted", "ok"])
        self.assertEqual(self.w.result("notes"), ["no ep", None])
        self.assertEqual(self.w.result(None, 1), [1])  # function-style, no ep

    def test_malformed_ep_is_ignored(self):
        self.assertEqual(self.w.call("fail", "boom", ep=0)["t"], "err")
        for ep in ("0", -1, 0.5, True, None, [0], {"n": 0}):
            self.w.send({"t": "call", "id": 50, "m": "note", "a": [1], "ep": ep})
            self.assertEqual(self.w.recv()["t"], "ok", "ep %r" % (ep,))
        self.assertEqual(self.w.call("note", 2, ep=0)["t"], "aborted")
        self.assertEqual(self.w.call("note", 3, ep=2 ** 70)["t"], "ok")

    def test_done_resets_errs(self):
        msgs, replies = self.pipeline(("fail", ["a"], 0), ("fail", ["b"], 1), ("note", [1], 1))
        self.assertEqual([r["t"] for r in replies], ["err", "err", "aborted"])
        self.w.send({"t": "done"})
        self.assertEqual(self.w.result("counts")["dones"], 1)  # the hook ran
        self.assertEqual(self.w.result("note", "next checkout", ep=0), "next checkout")
        # the new checkout counts from 0 again: one error, then ep 0 is aborted, ep 1 runs
        msgs, replies = self.pipeline(("fail", ["c"], 0), ("note", [2], 0), ("note", [3], 1))
        self.assertEqual([r["t"] for r in replies], ["err", "aborted", "ok"])
        self.w.send({"t": "done"})
        self.assertEqual(self.w.result("note", 4, ep=0), 4)
        self.assertEqual(self.w.result("notes"), ["next checkout", 3, 4])

    def test_errs_counts_only_err_replies(self):
        msgs, replies = self.pipeline(
            ("fail", ["one"], 0),       # err: errs 1
            ("note", ["a"], 0),         # aborted (not counted)
            ("note", ["b"], 0),         # aborted (not counted)
            ("note", ["c"], 1),         # ok: with aborted counted, this would be aborted
            ("no_such_method", [], 1),  # err (unknown method): errs 2
            ("note", ["d"], 1),         # aborted
            ("nan", [], 2),             # err (result is not JSON): errs 3
            ("note", ["e"], 2),         # aborted
            ("note", ["f"], None),      # ok: no ep
            ("note", ["g"], 3),         # ok
            ("note", ["h"], 4),         # ok: ep above errs runs too
        )
        self.assertEqual([r["t"] for r in replies],
                         ["err", "aborted", "aborted", "ok", "err", "aborted", "err", "aborted",
                          "ok", "ok", "ok"])
        self.assertEqual(replies[4]["e"]["type"], "UnknownMethod")
        self.assertIn("JSON", replies[6]["e"]["msg"])
        self.assertEqual(self.w.result("notes"), ["c", "f", "g", "h"])

    def test_cancel_of_an_aborted_call(self):
        # call 2 is cancelled while queued, then aborted; a later call that reuses its id
        # must not inherit the cancel
        first = self.w.call_msg("wait_cancel", 60000, ep=0)
        self.w.send(first)
        self.w.send(self.w.call_msg("fail", "boom", ep=0))
        queued = self.w.call_msg("wait_cancel", 60000, ep=0)
        self.w.send(queued)
        self.w.wait_stderr("waiting for cancel %d" % first["id"])
        self.w.send({"t": "cancel", "id": queued["id"]})
        self.w.send({"t": "cancel", "id": first["id"]})
        self.assertEqual(self.w.recv()["r"], "cancelled")
        self.assertEqual(self.w.recv()["t"], "err")
        self.assertEqual(self.w.recv(), {"t": "aborted", "id": queued["id"]})
        again = dict(queued, a=[200], ep=1)
        self.w.send(again)
        self.assertEqual(self.w.recv(), {"t": "ok", "id": queued["id"], "r": "not cancelled"})

    def test_eof_with_pipelined_calls_behind_an_error(self):
        msgs = [self.w.call_msg("fail", "boom", ep=0), self.w.call_msg("note", 1, ep=0),
                self.w.call_msg("note", 2, ep=1)]
        for m in msgs:
            self.w.send(m)
        self.assertEqual(self.w.close(), 0)
        self.assertEqual([self.w.recv()["t"] for _ in msgs], ["err", "aborted", "ok"])
        self.w.assert_no_more_output()


def _types(v):
    """The JSON shape of v: which numbers are integers and which are floats."""
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float" if math.isfinite(v) else "nonfinite"
    if isinstance(v, list):
        return [_types(x) for x in v]
    if isinstance(v, dict):
        return {k: _types(x) for k, x in v.items()}
    return "str"
