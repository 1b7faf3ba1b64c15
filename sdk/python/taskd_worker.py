"""taskd_worker: write taskd workers in Python (worker protocol v1).

A worker is a long-lived process that taskd starts and talks to over its stdin and stdout,
one JSON object per line (see docs/worker-protocol.md). This module does the protocol; you
write the methods::

    from taskd_worker import Worker

    w = Worker()

    @w.method("hello")
    def hello(ctx, name):
        ctx.log.info("greeting", name=name)
        return "hello, " + name

    w.run()

Handlers are called as ``handler(ctx, *args)`` where ``args`` are the call's positional JSON
arguments and ``ctx`` is a :class:`Context` (logger, cancel flag, bye).  Whatever the handler
returns is the result (any JSON value); an exception becomes an ``err`` reply with the
exception's class name and traceback, and the worker stays usable.

Calls run one at a time, in order, on the thread that called :meth:`Worker.run`. A second
thread reads stdin while a handler runs, so a ``cancel`` for the running call sets
``ctx.cancelled()`` at once.

The worker announces pipelining (``"pipeline": true`` on ready; see "Pipelining (optional)"
in docs/worker-protocol.md): taskd may then send several calls of a checkout at once, each
with ``"ep"``, the number of errors of this checkout the application had seen when it made
the call. A call with ``ep`` lower than the number of ``err`` replies sent since the last
``done`` is queued behind an error and is not run: it is answered ``{"t":"aborted"}``, and
its handler is never called. Nothing is needed in your code for this.

Before setup runs, :meth:`Worker.run` moves the protocol to private duplicates of file
descriptors 0 and 1, points fd 1 (and ``sys.stdout``) at stderr and fd 0 at /dev/null: a
``print()`` in your code, a library or a child process goes to stderr (which taskd logs)
and can never corrupt the protocol or steal its input.

Lines are bounded by TASKD_MAX_MESSAGE_BYTES (taskd sets it from ``max_message_bytes``; 16 MiB
when unset): a longer line from taskd ends the worker with status 1, and a reply that would
be longer is replaced by an ``err`` of type "ReplyTooLarge", as in the Go SDK.

Standard library only; Python 3.8 or newer. Single file: copy it next to your worker or put
sdk/python on PYTHONPATH.
"""

import json
import os
import queue
import sys
import threading
import time
import traceback

__all__ = ["Worker", "Context", "Logger", "Cancelled", "PROTOCOL_VERSION"]

PROTOCOL_VERSION = 1
DEFAULT_MAX_MESSAGE_BYTES = 16 << 20  # taskd's default max_message_bytes

_EOF = object()  # queued by the reader thread at end of input


class Cancelled(Exception):
    """Raised by :meth:`Context.check_cancelled` when the caller cancelled the call."""


class _Timer(object):
    """Context manager returned by :meth:`Logger.timer`."""

    def __init__(self, logger, name, fields):
        self._logger = logger
        self._name = name
        self._fields = fields
        self._start = time.perf_counter()  # the clock runs from timer(), as in Perl and Go
        self._stopped = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def stop(self, **more):
        """Ends the timer and records it (done by the ``with`` statement); later calls do
        nothing. ``more`` are extra fields for the record."""
        if self._stopped:
            return
        self._stopped = True
        ms = round((time.perf_counter() - self._start) * 1000.0, 3)
        # The record is made when the timer stops, so it follows the records logged inside
        # the timer and its time stamp is the end time (the same in every SDK).
        f = dict(self._fields)
        f.update(more)
        f["timer"] = self._name
        f["ms"] = float(ms)
        self._logger._record("info", self._name, f)


class Logger(object):
    """Log records of one call, returned to the caller in the reply's ``logs``.

    Every record is also written to stderr (one line), which taskd logs. Fields must be
    JSON values; anything else is replaced by its ``repr``. A Logger may be used from
    threads the handler starts; records made after the call has been answered only go to
    stderr. The worker-wide logger (:attr:`Worker.log`, usable in setup and hooks) only
    writes to stderr.
    """

    def __init__(self, collect):
        self._lock = threading.Lock()
        self._records = [] if collect else None
        self._timers = []

    def debug(self, msg, **fields):
        self._record("debug", msg, fields)

    def info(self, msg, **fields):
        self._record("info", msg, fields)

    def warn(self, msg, **fields):
        self._record("warn", msg, fields)

    warning = warn

    def error(self, msg, **fields):
        self._record("error", msg, fields)

    def log(self, lvl, msg, **fields):
        """Records msg at level lvl ("debug", "info", "warn", "error")."""
        self._record(str(lvl), msg, fields)

    def timer(self, name, **fields):
        """Starts a timer and returns it: a context manager that records how long its
        block took (or call its ``stop()``)::

            with ctx.log.timer("query", table="users"):
                rows = db.execute(...)

        When the block ends (also by an exception) one record is made: level "info", msg
        name, fields plus ``"timer": name`` and ``"ms"``, the duration in milliseconds (a
        float, microsecond resolution). It follows the records logged inside the block. A
        timer still running when the call is answered is recorded then, with its duration
        so far and ``"unfinished": true``.
        """
        t = _Timer(self, str(name), fields)
        with self._lock:
            if self._records is not None:  # only a call's logger reports unfinished timers
                self._timers.append(t)
        return t

    def _record(self, lvl, msg, fields):
        rec = {"ts": time.time(), "lvl": lvl, "msg": str(msg), "f": _jsonable_fields(fields)}
        with self._lock:
            if self._records is not None:
                self._records.append(rec)
        self._echo(rec)

    def _echo(self, rec):
        line = "%s: %s" % (rec["lvl"], rec["msg"])
        if rec["f"]:
            line += " " + json.dumps(rec["f"], ensure_ascii=False, sort_keys=True)
        try:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass

    def _take(self):
        """Returns the records so far and stops collecting (the call is being answered)."""
        with self._lock:
            timers, self._timers = self._timers, []
        for t in timers:
            if not t._stopped:
                t.stop(unfinished=True)
        with self._lock:
            recs, self._records = self._records, None
        return recs or []


def _jsonable_fields(fields):
    out = {}
    for k, v in fields.items():
        try:
            json.dumps(v, allow_nan=False)
        except (TypeError, ValueError):
            v = repr(v)
        out[str(k)] = v
    return out


class Context(object):
    """What a handler gets besides its arguments. One Context per call.

    Attributes: ``id`` (the call id), ``method`` (the method name, "" for a function-style
    call), ``log`` (a :class:`Logger`).
    """

    def __init__(self, worker, call_id, method):
        self.id = call_id
        self.method = method
        self.log = Logger(collect=True)
        self._worker = worker
        self._cancelled = threading.Event()

    def cancelled(self):
        """True once taskd has sent ``cancel`` for this call (the caller gave up), or stdin
        has ended (taskd is stopping the worker). Cancel is advisory: the handler decides
        whether to stop, and whatever it returns or raises is still sent."""
        return self._cancelled.is_set()

    def check_cancelled(self):
        """Raises :class:`Cancelled` if :meth:`cancelled` is true."""
        if self._cancelled.is_set():
            raise Cancelled("call %s was cancelled" % (self.id,))

    def bye(self, msg=""):
        """Asks taskd to retire this worker after the current checkout. The request is sent
        with this call's reply (just before it); the worker keeps serving until taskd stops
        it."""
        self._worker._pending_bye = str(msg)


class Worker(object):
    """A taskd worker: a method table plus hooks. Register handlers with the decorators,
    then call :meth:`run` once, on the main thread, at the end of your script.

    - ``@w.method("name")``: handler for calls of method "name", called as ``f(ctx, *args)``.
    - ``@w.default``: handler for function-style calls (no method name), ``f(ctx, *args)``.
    - ``@w.setup``: ``f()`` runs once before the worker reports ready. If it raises, the
      traceback goes to stderr and the worker exits with status 1 (taskd reports the
      interface as unavailable, quoting stderr).
    - ``@w.checkout_done``: ``f()`` runs when a checkout is released (e.g. roll back an
      open transaction). If it raises, the traceback goes to stderr and the worker exits
      with status 1: its state is unknown, so it must not serve another checkout.

    Handlers can also be passed to the constructor: ``Worker(methods={...}, default=f,
    setup=f, checkout_done=f)``. A call of an unregistered method gets an ``err`` reply
    of type "UnknownMethod".
    """

    def __init__(self, methods=None, default=None, setup=None, checkout_done=None):
        self._methods = dict(methods or {})
        self._default = default
        self._setup = setup
        self._checkout_done = checkout_done
        self.log = Logger(collect=False)
        self._out = None
        self._wlock = threading.Lock()
        self._pending_bye = None
        self._started = False
        self._running = False
        self._in_call = False
        self._errs = 0  # err replies sent since the last "done" (pipelining)
        self._max = DEFAULT_MAX_MESSAGE_BYTES  # longest line, either way, without its newline

    # -- registration -------------------------------------------------------------

    def method(self, name):
        """Decorator: registers f as the handler of method name."""

        def register(f):
            self._methods[str(name)] = f
            return f

        return register

    def default(self, f):
        """Decorator: registers f as the handler of function-style calls."""
        self._default = f
        return f

    def setup(self, f):
        """Decorator: registers f to run once before the worker reports ready."""
        self._setup = f
        return f

    def checkout_done(self, f):
        """Decorator: registers f to run each time a checkout is released."""
        self._checkout_done = f
        return f

    # -- protocol -----------------------------------------------------------------

    def bye(self, msg=""):
        """Asks taskd to retire this worker after the current checkout. Called during setup
        it is sent right after ready; during a call, with that call's reply; otherwise
        (a checkout-done hook, another thread) at once. Safe for concurrent use."""
        if not self._running or self._in_call:
            self._pending_bye = str(msg)  # sent after ready / with the reply
            return
        self._send({"t": "bye", "msg": str(msg)})

    def run(self):
        """Protects stdout, runs setup, reports ready, then serves calls until stdin ends.
        Returns (normally) at end of input; let your script end there."""
        if self._started:
            raise RuntimeError("Worker.run called twice")
        self._started = True
        try:
            self._max = _max_message_bytes()
        except ValueError as e:
            sys.stderr.write("taskd_worker: %s\n" % (e,))
            sys.stderr.flush()
            sys.exit(1)
        proto_in, proto_out = _protect_stdio()
        self._out = proto_out
        if self._setup is not None:
            try:
                self._setup()
            except Exception:
                traceback.print_exc(file=sys.stderr)
                sys.stderr.flush()
                sys.exit(1)
        self._running = True
        try:
            self._send({"t": "ready", "v": PROTOCOL_VERSION, "pipeline": True})
            if self._pending_bye is not None:
                msg, self._pending_bye = self._pending_bye, None
                self._send({"t": "bye", "msg": msg})
            self._serve(proto_in)
        except BrokenPipeError:
            pass  # taskd is gone: nothing left to answer
        finally:
            sys.stderr.flush()

    def _serve(self, proto_in):
        inbox = _Inbox()
        # The reader thread ends at end of input (or a read error, or an over-long line),
        # after queueing _EOF; it is joined then. It is a daemon thread only so that an
        # early exit (sys.exit in a hook, taskd gone) does not wait for its blocked read.
        reader = threading.Thread(target=inbox.read_from, args=(proto_in, self._max), name="taskd-stdin")
        reader.daemon = True
        reader.start()
        while True:
            msg = inbox.next()
            if msg is _EOF:
                # End of input: the messages read before it have been handled (as
                # cancelled calls, see Context.cancelled); now exit.
                reader.join()
                if inbox.error is not None:
                    sys.stderr.write("taskd_worker: %s\n" % (inbox.error,))
                    sys.stderr.flush()
                    sys.exit(1)
                return
            t = msg.get("t")
            if t == "call":
                self._call(inbox, msg)
            elif t == "done":
                self._done()
            # "cancel" is handled by the reader; unknown types are ignored.

    def _call(self, inbox, msg):
        call_id = msg.get("id")
        ep = _ep(msg.get("ep"))
        if ep is not None and ep < self._errs:
            # Made before the application saw an error that this checkout's earlier calls
            # got: queued behind that error, so it must not run. Not an error itself.
            inbox.skip(call_id)
            self._send({"t": "aborted", "id": call_id})
            return
        method = msg.get("m") or ""
        args = msg.get("a")
        if args is None:
            args = []
        ctx = Context(self, call_id, method)
        inbox.start(ctx)
        self._in_call = True
        try:
            if not isinstance(args, list):
                raise TypeError('"a" must be a JSON array')
            if method:
                f = self._methods.get(method)
                if f is None:
                    raise _UnknownMethod('unknown method "%s"' % method)
            else:
                f = self._default
                if f is None:
                    raise _UnknownMethod("this worker has no handler for function-style calls")
            reply = {"t": "ok", "id": call_id, "r": f(ctx, *args)}
        except Exception as e:
            reply = {"t": "err", "id": call_id, "e": _error_payload(e)}
        finally:
            inbox.finish()
            self._in_call = False
        logs = ctx.log._take()
        if logs:
            reply["logs"] = logs
        try:
            line = _encode(reply)
        except (TypeError, ValueError) as e:
            # the result is not JSON (log fields were made JSON when recorded)
            payload = {"msg": "the result cannot be sent as JSON: %s" % (e,), "type": "TypeError", "trace": ""}
            reply = {"t": "err", "id": call_id, "e": payload}
            if logs:
                reply["logs"] = logs
            line = _encode(reply)
        if len(line) - 1 > self._max:
            what = 'method "%s"' % method if method else "function-style call"
            reply = {"t": "err", "id": call_id, "e": {
                "msg": "the reply of %s is %d bytes, more than max_message_bytes (%d): return "
                       "less, or raise max_message_bytes" % (what, len(line) - 1, self._max),
                "type": "ReplyTooLarge", "trace": ""}}
            line = _encode(reply)
        if reply["t"] == "err":
            self._errs += 1
        if self._pending_bye is not None:
            # bye goes first, in the same write: taskd then knows it when the reply ends the
            # checkout (a one-shot checkout is released as soon as the reply is read).
            msg, self._pending_bye = self._pending_bye, None
            line = _encode({"t": "bye", "msg": msg}) + line
        self._write(line)

    def _done(self):
        if self._checkout_done is not None:
            try:
                self._checkout_done()
            except Exception:
                sys.stderr.write("taskd_worker: checkout_done hook failed; exiting so that this "
                                 "worker serves no further checkout\n")
                traceback.print_exc(file=sys.stderr)
                sys.stderr.flush()
                sys.exit(1)
        self._errs = 0  # the next checkout starts with no errors

    def _send(self, msg):
        self._write(_encode(msg))

    def _write(self, line):
        with self._wlock:
            self._out.write(line)
            self._out.flush()


class _UnknownMethod(Exception):
    pass


def _max_message_bytes():
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


def _ep(v):
    """A call's "ep" if it is a non-negative integer, else None: an absent or malformed ep
    means the call runs, as without pipelining."""
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    return None


def _error_payload(e):
    name = type(e).__name__
    tb = e.__traceback__
    # leave out this module's own frames at the top of the traceback
    while tb is not None and tb.tb_frame.f_globals.get("__name__") == __name__:
        tb = tb.tb_next
    if isinstance(e, _UnknownMethod):
        name, tb = "UnknownMethod", None
    msg = str(e) or name
    trace = "".join(traceback.format_exception(type(e), e, tb))
    return {"msg": msg, "type": name, "trace": trace}


def _encode(msg):
    """One protocol line as UTF-8 bytes. Raises TypeError/ValueError for values that are not
    JSON (including NaN and infinities, which JSON cannot express)."""
    s = json.dumps(msg, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    try:
        b = s.encode("utf-8")
    except UnicodeEncodeError:
        # lone surrogates: escape everything instead, which JSON allows
        b = json.dumps(msg, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")
    return b + b"\n"


class _Inbox(object):
    """Messages from taskd. A reader thread parses stdin and applies cancels at once; the main
    thread takes the other messages in order."""

    def __init__(self):
        self._q = queue.Queue()
        self._lock = threading.Lock()
        self._current = None       # Context of the running call
        self._pending = {}         # call id -> number of queued calls with that id
        self._precancelled = set() # ids cancelled before their call started
        self._eof = False
        self.error = None          # why reading stopped early, if it did (read by the main thread after _EOF)

    def read_from(self, f, limit):
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
        self._q.put(_EOF)

    def _cancel(self, call_id):
        k = _key(call_id)
        with self._lock:
            if self._current is not None and _key(self._current.id) == k:
                self._current._cancelled.set()
            elif k in self._pending:
                self._precancelled.add(k)
            # else: a late cancel for an answered call; nothing to do

    def next(self):
        return self._q.get()

    def _unqueue(self, k):
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

    def start(self, ctx):
        k = _key(ctx.id)
        with self._lock:
            if self._unqueue(k) or self._eof:
                ctx._cancelled.set()
            self._current = ctx

    def skip(self, call_id):
        """The queued call call_id is answered without being run (aborted)."""
        with self._lock:
            self._unqueue(_key(call_id))

    def finish(self):
        with self._lock:
            self._current = None


def _key(call_id):
    try:
        return json.dumps(call_id, sort_keys=True)
    except (TypeError, ValueError):
        return repr(call_id)


def _protect_stdio():
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
