"""For the tests: runs a worker process the way taskd does and speaks worker protocol v1 to it.

Every stdout line must be a protocol message (a JSON object with a known "t"): a stray line
fails the test, since the SDKs promise that user output never reaches the protocol. Reads
have timeouts, used only as upper bounds.
"""
import json
import os
import queue
import subprocess
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
TIMEOUT = 20.0  # seconds; an upper bound, never a wait

KNOWN = {"ready", "ok", "err", "aborted", "bye"}


def decode_line(line):
    """One protocol line (bytes, with its newline) parsed; fails on anything else."""
    assert line.endswith(b"\n"), "unterminated line %r" % line[:80]
    try:
        msg = json.loads(line.decode("utf-8"))
    except ValueError:
        raise AssertionError("stray line %r" % line[:200])
    assert isinstance(msg, dict) and msg.get("t") in KNOWN, "bad message %r" % line[:200]
    return msg


def worker_env(extra=None):
    """The environment taskd gives a worker: a few standard variables plus TASKD_*, and
    extra (an interface's env)."""
    env = {k: v for k, v in os.environ.items()
           if k in ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")}
    env.update(extra or {})
    env.update({"TASKD_INTERFACE": "test", "TASKD_WORKER_ID": "test-1", "TASKD_PROTOCOL": "1"})
    env.setdefault("TASKD_MAX_MESSAGE_BYTES", str(16 << 20))
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # not taskd's: keeps __pycache__ out of the tree
    return env


class WorkerProc(object):
    def __init__(self, argv, env=None, pass_fds=()):
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=worker_env(env), cwd=REPO,
                                  pass_fds=pass_fds)
        self.out = queue.Queue()
        self.err = queue.Queue()
        self.stderr_lines = []
        self._next_id = 1
        for f, q in ((self.p.stdout, self.out), (self.p.stderr, self.err)):
            t = threading.Thread(target=self._pump, args=(f, q))
            t.daemon = True
            t.start()

    @staticmethod
    def _pump(f, q):
        for line in iter(f.readline, b""):
            q.put(line)
        q.put(None)

    @staticmethod
    def encode(msg):
        """msg as one protocol line, without its newline (bytes are sent as they are)."""
        return msg if isinstance(msg, bytes) else json.dumps(msg, ensure_ascii=False).encode("utf-8")

    def send(self, msg):
        self.p.stdin.write(self.encode(msg) + b"\n")
        self.p.stdin.flush()

    def recv(self, timeout=TIMEOUT):
        """The next stdout message, parsed. Fails on stray output, EOF or timeout."""
        try:
            line = self.out.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no message from the worker within %ss; stderr:\n%s"
                                 % (timeout, self.stderr_text()))
        if line is None:
            raise AssertionError("worker closed stdout; stderr:\n" + self.stderr_text())
        assert line.endswith(b"\n"), "unterminated line %r" % line[:80]
        try:
            msg = json.loads(line.decode("utf-8"))
        except ValueError:
            raise AssertionError("stray stdout line %r" % line[:200])
        assert isinstance(msg, dict) and msg.get("t") in KNOWN, "bad message %r" % line[:200]
        return msg

    def new_id(self):
        i = self._next_id
        self._next_id += 1
        return i

    def call_msg(self, method, *args, ep=None):
        """A call message; ep (pipelining) is left out when None."""
        msg = {"t": "call", "id": self.new_id(), "a": list(args)}
        if method is not None:
            msg["m"] = method
        if ep is not None:
            msg["ep"] = ep
        return msg

    def call(self, method, *args, ep=None):
        """Sends a call and returns its reply (ok, err or aborted)."""
        msg = self.call_msg(method, *args, ep=ep)
        self.send(msg)
        reply = self.recv()
        assert reply.get("id") == msg["id"], "reply %r for call %r" % (reply, msg["id"])
        return reply

    def result(self, method, *args, ep=None):
        reply = self.call(method, *args, ep=ep)
        assert reply["t"] == "ok", "expected ok, got %r" % reply
        return reply["r"]

    def wait_stderr(self, text, timeout=TIMEOUT):
        """Waits until a stderr line contains text."""
        if any(text in l for l in self.stderr_lines):
            return
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.err.get(timeout=max(left, 0.001))
            except queue.Empty:
                raise AssertionError("stderr never said %r; it said:\n%s" % (text, self.stderr_text()))
            if line is None:
                raise AssertionError("stderr closed before saying %r" % text)
            self.stderr_lines.append(line.decode("utf-8", "replace"))
            if text in self.stderr_lines[-1]:
                return

    def stderr_text(self):
        while True:
            try:
                line = self.err.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.stderr_lines.append(line.decode("utf-8", "replace"))
        return "".join(self.stderr_lines)

    def close(self, timeout=TIMEOUT):
        """Closes stdin (EOF) and returns the exit status."""
        self.p.stdin.close()
        return self.p.wait(timeout=timeout)

    def assert_no_more_output(self, timeout=TIMEOUT):
        """After close: stdout must end without further messages."""
        line = self.out.get(timeout=timeout)
        assert line is None, "unexpected stdout after EOF: %r" % line[:200]

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()
        for f in (self.p.stdin, self.p.stdout, self.p.stderr):
            try:
                f.close()
            except (OSError, ValueError):
                pass


# Values that must round-trip exactly through every worker.
ROUND_TRIP = [
    1, -7, 0, 2 ** 53 + 1, 2 ** 63 - 1, -2 ** 63, 2 ** 64 + 1, -(2 ** 64 + 1), 12345678901234567890123456789,
    0.1, 1.5, -2.25, 0.30000000000000004, 3.141592653589793, 1e300, 5e-324, 1.0,
    None, True, False, [], {}, "", "plain", "h\u00e9llo w\u00f6rld", "\u4f60\u597d",
    "\U0001F600 \U0001D11E", "quote \" backslash \\ newline \n tab \t nul \u0000",
    {"nested": {"list": [1, [2, [3, {"x": None}]]], "\U0001F600": "key"}},
]
