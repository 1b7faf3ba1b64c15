"""Worker protocol v1 input and output: streams of calls and who reads them, line encoding,
limits, and the stdout protection."""

import collections
import json
import os
import sys
import threading
import time
from typing import IO, Any, Deque, Dict, Optional, Set, Tuple

DEFAULT_MAX_MESSAGE_BYTES = 16 << 20  # taskd's default max_message_bytes

EOF = object()  # returned at the end of input


def max_message_bytes() -> int:
    """The line length limit from TASKD_MAX_MESSAGE_BYTES: a number of bytes, optionally with
    a KiB, MiB or GiB suffix as in taskd's config. Raises ValueError for anything else."""
    v = os.environ.get("TASKD_MAX_MESSAGE_BYTES", "")
    if v == "":
        return DEFAULT_MAX_MESSAGE_BYTES
    num, unit = v.strip(), 1
    for suffix, size in (("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30)):
        if num.endswith(suffix):
            num, unit = num[:-len(suffix)].strip(), size
            break
    if not (num.isascii() and num.isdigit()) or int(num) <= 0:
        raise ValueError("TASKD_MAX_MESSAGE_BYTES=%r: want a positive size such as 16777216 or 16MiB" % v)
    return int(num) * unit


def ep_of(v: Any) -> Optional[int]:
    """A call's "ep" if it is a non-negative integer, else None: an absent or malformed ep
    means the call runs, as without pipelining."""
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    return None


def encode(msg: Dict[str, Any]) -> bytes:
    """One protocol line as UTF-8 bytes. Raises TypeError/ValueError for values that are not
    JSON (including NaN and infinities, which JSON cannot express)."""
    s = json.dumps(msg, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    try:
        b = s.encode("utf-8")
    except UnicodeEncodeError:
        # lone surrogates: escape everything instead, which JSON allows
        b = json.dumps(msg, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")
    return b + b"\n"


def read_msg(f: IO[bytes], limit: int) -> Any:
    """The next message (a dict) read from f, or EOF. Lines that are not JSON objects are
    skipped with a warning. Raises ProtocolInputError when the input fails or a line is
    longer than limit."""
    while True:
        try:
            line = f.readline(limit + 1)  # at most limit bytes and the newline
        except (OSError, ValueError) as e:
            raise ProtocolInputError("reading from taskd: %s" % (e,))
        if not line:
            return EOF
        if len(line) > limit and not line.endswith(b"\n"):
            raise ProtocolInputError("taskd sent a line longer than %d bytes; TASKD_MAX_MESSAGE_BYTES "
                                     "must match taskd's max_message_bytes" % limit)
        line = line.strip()
        if not line:
            continue
        try:
            msg = json.loads(line)
        except ValueError:
            msg = None
        if not isinstance(msg, dict):
            sys.stderr.write("taskd_worker: ignoring an input line that is not a JSON object\n")
            continue
        return msg


class ProtocolInputError(Exception):
    pass


class Stream(object):
    """One input of calls and the output of their replies: stdin and stdout, or a direct
    lease's socket. Its runner thread reads, runs and answers one message at a time with no
    hand-off (next, start, skip, finish). While a call runs nobody reads, unless the
    supervisor sees the same call running on two of its ticks: it then reads (watch) until
    the runner is free, applying cancels at once and queueing the rest.

    The reader role (f) belongs to whoever owner names; the fields below _lock are guarded
    by it."""

    def __init__(self, f: IO[bytes], write: Any, limit: int, lease: int = 0) -> None:
        self.f = f
        self.write = write  # write(line): one reply
        self.limit = limit
        self.lease = lease
        self.errs = 0  # err replies since the last "done" (runner only): the ep rule
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._q = collections.deque()  # type: Deque[Dict[str, Any]]
        self._watching = False  # the supervisor holds the reader role
        self._busy = False
        self._current = None  # type: Any  # the running call's Context
        self._pending = {}  # type: Dict[str, int]  # call id -> number of queued calls with that id
        self._precancelled = set()  # type: Set[str]  # ids cancelled before their call started
        self._eof = False
        self._stopped = False  # a lease's end: read nothing more
        self.error = None  # type: Optional[str]  # why reading stopped early, if it did

    def _read(self) -> Any:
        """The next call or done, handling cancels; EOF at the end (self.error says why if
        early)."""
        while True:
            try:
                msg = read_msg(self.f, self.limit)
            except ProtocolInputError as e:
                self.error = str(e)
                return EOF
            if msg is EOF:
                return EOF
            t = msg.get("t")
            if t == "cancel":
                self.cancel(msg.get("id"))
            elif t in ("call", "done"):
                return msg

    def _ended(self) -> None:
        """Under _lock: the input ended."""
        self._eof = True
        if self._current is not None:
            self._current._cancelled = True
        self._cond.notify_all()

    def cancel(self, call_id: Any) -> None:
        k = _key(call_id)
        with self._lock:
            if self._current is not None and _key(self._current.id) == k:
                self._current._cancelled = True
            elif k in self._pending:
                self._precancelled.add(k)
            # else: a late cancel for an answered call; nothing to do

    def next(self) -> Any:
        """The next message to run (the stream is busy with it until finish), or EOF."""
        while True:
            with self._lock:
                if self._q:
                    self._busy = True
                    return self._q.popleft()
                if self._eof or self._stopped:  # a lease's end: what was read is answered
                    return EOF
                if self._watching:
                    self._cond.wait()
                    continue
            msg = self._read()  # the fast path: this thread holds the reader role
            with self._lock:
                if msg is EOF:
                    self._ended()
                    return EOF
                self._busy = True
                if msg.get("t") == "call":
                    k = _key(msg.get("id"))
                    self._pending[k] = self._pending.get(k, 0) + 1
                return msg

    def _unqueue(self, k: str) -> bool:
        """Call k leaves the queue; returns whether it was cancelled while queued. Holds
        self._lock."""
        n = self._pending.get(k, 0) - 1
        if n > 0:
            self._pending[k] = n
        else:
            self._pending.pop(k, None)
        if k in self._precancelled:
            self._precancelled.discard(k)
            return True
        return False

    def start(self, ctx: Any) -> None:
        """The call of ctx starts: a cancel read from now on sets its flag."""
        k = _key(ctx.id)
        with self._lock:
            if self._unqueue(k) or self._eof:
                ctx._cancelled = True
            self._current = ctx

    def skip(self, call_id: Any) -> None:
        """The queued call call_id is answered without being run (aborted)."""
        with self._lock:
            self._unqueue(_key(call_id))

    def finish(self) -> None:
        with self._lock:
            self._current = None
            self._busy = False

    def takeover(self) -> bool:
        """The supervisor takes the reader role if the runner holds it while busy."""
        with self._lock:
            if not self._busy or self._watching or self._eof or self._stopped:
                return False
            self._watching = True
            return True

    def watch(self) -> None:
        """The supervisor reads until the runner is free again (or the input ends)."""
        while True:
            msg = self._read()
            with self._lock:
                if msg is EOF:
                    self._watching = False
                    self._ended()
                    return
                if msg.get("t") == "call":
                    k = _key(msg.get("id"))
                    self._pending[k] = self._pending.get(k, 0) + 1
                self._q.append(msg)
                if not self._busy:
                    self._watching = False
                self._cond.notify_all()
                if not self._watching:
                    return

    def stop(self) -> None:
        """A lease's end: read nothing more; the calls already read are answered."""
        with self._lock:
            self._stopped = True
            self._cond.notify_all()


class Supervisor(object):
    """A daemon thread that sleeps while no call runs and, while calls run, ticks every
    TICK seconds: a call still running on two ticks gets its stream watched (Stream.watch),
    so that a cancel or the end of input is seen during a long call. Runners call started
    and ended; both are cheap (no lock, no wake-up unless the supervisor sleeps)."""

    TICK = 0.002

    def __init__(self) -> None:
        self._runs = 0
        self._busy = None  # type: Any  # the stream running something now
        self._parked = False
        self._kick = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="taskd-supervisor")
        self._thread.daemon = True
        self._thread.start()

    def started(self, stream: Stream) -> None:
        self._busy = stream
        self._runs += 1
        if self._parked:
            self._parked = False
            self._kick.set()

    def ended(self) -> None:
        self._busy = None

    def _loop(self) -> None:
        last_runs, last_busy = -1, None
        while True:
            time.sleep(self.TICK)
            busy, runs = self._busy, self._runs
            if busy is not None and busy is last_busy and runs == last_runs:
                if busy.takeover():
                    busy.watch()
                    busy = None
            elif busy is None and runs == last_runs:
                self._parked = True
                if self._busy is None and self._runs == runs:
                    self._kick.wait()
                    self._kick.clear()
                self._parked = False
            last_runs, last_busy = runs, busy


def _key(call_id: Any) -> str:
    try:
        return json.dumps(call_id, sort_keys=True)
    except (TypeError, ValueError):
        return repr(call_id)


def protect_stdio() -> Tuple[IO[bytes], IO[bytes]]:
    """Moves the protocol to private descriptors and returns (reader, writer) for it; fd 1
    and sys.stdout now go to stderr, fd 0 and sys.stdin read /dev/null."""
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except (OSError, ValueError, AttributeError):
            pass
    in_fd = os.dup(0)   # os.dup makes non-inheritable descriptors: children don't get them
    out_fd = os.dup(1)
    os.dup2(2, 1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdout = sys.stderr
    try:
        sys.stdin = open(os.devnull, "r")
    except OSError:
        pass
    return os.fdopen(in_fd, "rb"), os.fdopen(out_fd, "wb")
