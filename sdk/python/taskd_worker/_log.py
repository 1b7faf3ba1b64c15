"""Per-call log records: Logger, Timer, and LogHandler, the bridge from Python's logging."""

import json
import logging
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional

if TYPE_CHECKING:  # pragma: no cover
    from ._worker import Worker

__all__ = ["Logger", "Timer", "LogHandler"]

Record = Dict[str, Any]  # one entry of a reply's "logs": {"ts", "lvl", "msg", "f"}


class Timer(object):
    """A running timer, returned by :meth:`Logger.timer`: a context manager, or call
    :meth:`stop`. Safe for concurrent use."""

    def __init__(self, logger: "Logger", name: str, fields: Mapping[str, Any]) -> None:
        self._logger = logger
        self._name = name
        self._fields = dict(fields)
        self._lock = threading.Lock()
        self._start = time.perf_counter()  # the clock runs from timer(), as in Perl and Go
        self._stopped = False

    def __enter__(self) -> "Timer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def stopped(self) -> bool:
        """True once the timer has been recorded."""
        return self._stopped

    def stop(self, **more: Any) -> None:
        """Ends the timer and records it (done by the ``with`` statement); later calls do
        nothing. ``more`` are extra fields for the record."""
        with self._lock:
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
    JSON values; anything else is replaced by its ``repr``. A Logger is safe for concurrent
    use: it may be used from threads the handler starts; records made after the call has
    been answered only go to stderr. The worker-wide logger (:attr:`Worker.log`, usable in
    setup and hooks) only writes to stderr.
    """

    def __init__(self, collect: bool) -> None:
        self._lock = threading.Lock()
        self._records = [] if collect else None  # type: Optional[List[Record]]
        self._timers = []  # type: List[Timer]

    def debug(self, msg: str, **fields: Any) -> None:
        self._record("debug", msg, fields)

    def info(self, msg: str, **fields: Any) -> None:
        self._record("info", msg, fields)

    def warn(self, msg: str, **fields: Any) -> None:
        self._record("warn", msg, fields)

    warning = warn

    def error(self, msg: str, **fields: Any) -> None:
        self._record("error", msg, fields)

    def log(self, lvl: str, msg: str, **fields: Any) -> None:
        """Records msg at level lvl ("debug", "info", "warn", "error")."""
        self._record(str(lvl), msg, fields)

    def timer(self, name: str, **fields: Any) -> Timer:
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
        t = Timer(self, str(name), fields)
        with self._lock:
            if self._records is not None:  # only a call's logger reports unfinished timers
                self._timers.append(t)
        return t

    def _record(self, lvl: str, msg: Any, fields: Mapping[str, Any], ts: Optional[float] = None,
                echo: bool = True) -> None:
        rec = {"ts": time.time() if ts is None else ts, "lvl": lvl, "msg": str(msg),
               "f": _jsonable_fields(fields)}
        with self._lock:
            if self._records is not None:
                self._records.append(rec)
        if echo:
            _echo(rec)

    def _take(self) -> List[Record]:
        """Returns the records so far and stops collecting (the call is being answered)."""
        with self._lock:
            timers, self._timers = self._timers, []
        for t in timers:
            if not t.stopped:
                t.stop(unfinished=True)
        with self._lock:
            recs, self._records = self._records, None
        return recs or []


def _echo(rec: Record) -> None:
    """Writes rec to stderr as one line: ``level: message {fields as JSON}``."""
    line = "%s: %s" % (rec["lvl"], rec["msg"])
    if rec["f"]:
        line += " " + json.dumps(rec["f"], ensure_ascii=False, sort_keys=True)
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _jsonable_fields(fields: Mapping[str, Any]) -> Dict[str, Any]:
    out = {}
    for k, v in fields.items():
        try:
            json.dumps(v, allow_nan=False)
        except (TypeError, ValueError):
            v = repr(v)
        out[str(k)] = v
    return out


# The attributes every logging.LogRecord has; any other attribute came from ``extra=``.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
_FORMATTER = logging.Formatter()


class LogHandler(logging.Handler):
    """A :class:`logging.Handler` that sends records of Python's :mod:`logging` made while
    a call runs back to the caller, in the reply's ``logs``, like ``ctx.log``::

        import logging
        from taskd_worker import LogHandler, Worker

        w = Worker()
        logging.basicConfig(level=logging.INFO, handlers=[LogHandler(w)])

    Each record becomes one log record of the reply: ``ts`` the time it was made, ``lvl``
    "debug", "info", "warn" (WARNING) or "error" (ERROR and CRITICAL), ``msg`` the
    formatted message (``record.getMessage()``; formatters are not used), and fields
    ``logger`` (the logger's name), whatever was passed as ``extra=``, ``exc`` (the
    traceback, with ``exc_info``) and ``stack`` (with ``stack_info``).

    Calls run one at a time, so a record made on any thread while a call runs belongs to
    that call. A record made outside a call (in setup, in a hook, between calls) goes to
    stderr only. With ``echo`` (the default), every record is also written to stderr, as
    ``ctx.log`` does; pass ``echo=False`` if another handler already writes to stderr.
    Safe for concurrent use.
    """

    def __init__(self, worker: "Worker", level: int = logging.NOTSET, echo: bool = True) -> None:
        super().__init__(level)
        self._worker = worker
        self._echo = echo

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = {"logger": record.name}  # type: Dict[str, Any]
            for k, v in vars(record).items():
                if k not in _RECORD_ATTRS and not k.startswith("_"):
                    fields[k] = v
            if record.exc_info:
                fields["exc"] = _FORMATTER.formatException(record.exc_info)
            elif record.exc_text:
                fields["exc"] = record.exc_text
            if record.stack_info:
                fields["stack"] = record.stack_info
            ctx = self._worker._current  # the running call, or None
            log = ctx.log if ctx is not None else self._worker.log
            log._record(_level(record.levelno), record.getMessage(), fields, ts=record.created,
                        echo=self._echo)
        except Exception:
            self.handleError(record)


def _level(levelno: int) -> str:
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warn"
    if levelno >= logging.INFO:
        return "info"
    return "debug"
