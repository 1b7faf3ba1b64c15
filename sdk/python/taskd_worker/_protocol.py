"""Worker protocol v1 input and output: the stdin reader, line encoding, limits, and the
stdout protection."""

import json
import os
import queue
import sys
import threading
from typing import IO, Any, Dict, Optional, Set, Tuple

DEFAULT_MAX_MESSAGE_BYTES = 16 << 20  # taskd's default max_message_bytes

EOF = object()  # queued by the reader thread at end of input


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


class Inbox(object):
    """Messages from taskd. A reader thread (read_from) parses stdin and applies cancels at
    once; the main thread takes the other messages in order (next, start, skip, finish).
    The fields below are guarded by _lock, but for _q (a queue) and error (written by the
    reader before it queues EOF, read by the main thread after it takes EOF)."""

    def __init__(self) -> None:
        self._q = queue.Queue()  # type: queue.Queue[Any]
        self._lock = threading.Lock()
        self._current = None  # type: Any  # the running call's Context
        self._pending = {}  # type: Dict[str, int]  # call id -> number of queued calls with that id
        self._precancelled = set()  # type: Set[str]  # ids cancelled before their call started
        self._eof = False
        self.error = None  # type: Optional[str]  # why reading stopped early, if it did

    def read_from(self, f: IO[bytes], limit: int) -> None:
        try:
            while True:
                line = f.readline(limit + 1)  # at most limit bytes and the newline
                if not line:
                    break
                if len(line) > limit and not line.endswith(b"\n"):
                    self.error = ("taskd sent a line longer than %d bytes; TASKD_MAX_MESSAGE_BYTES "
                                  "must match taskd's max_message_bytes" % limit)
                    break
                line = line.strip()
                if not line:
                    continue
                try:
                    msg = json.loads(line)
                except ValueError:
                    msg = None
                if not isinstance(msg, dict):
                    sys.stderr.write("taskd_worker: ignoring a stdin line that is not a JSON object\n")
                    continue
                t = msg.get("t")
                if t == "cancel":
                    self._cancel(msg.get("id"))
                    continue
                if t == "call":
                    with self._lock:
                        k = _key(msg.get("id"))
                        self._pending[k] = self._pending.get(k, 0) + 1
                self._q.put(msg)
        except (OSError, ValueError) as e:
            self.error = "reading from taskd: %s" % (e,)
        with self._lock:
            self._eof = True
            if self._current is not None:
                self._current._cancelled.set()
        self._q.put(EOF)

    def _cancel(self, call_id: Any) -> None:
        k = _key(call_id)
        with self._lock:
            if self._current is not None and _key(self._current.id) == k:
                self._current._cancelled.set()
            elif k in self._pending:
                self._precancelled.add(k)
            # else: a late cancel for an answered call; nothing to do

    def next(self) -> Any:
        """The next message (a dict), or EOF after the last one."""
        return self._q.get()

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
                ctx._cancelled.set()
            self._current = ctx

    def skip(self, call_id: Any) -> None:
        """The queued call call_id is answered without being run (aborted)."""
        with self._lock:
            self._unqueue(_key(call_id))

    def finish(self) -> None:
        with self._lock:
            self._current = None


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
