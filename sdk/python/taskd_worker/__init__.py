"""taskd_worker: write taskd workers in Python (worker protocol v1).

A worker is a long-lived process that taskd starts and talks to over its stdin and stdout,
one JSON object per line (see docs/worker-protocol.md). This package does the protocol; you
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

Per-call logs: ``ctx.log.info(msg, **fields)`` (and debug, warn, error, timer) records a log
record that travels back to the caller with the reply. Records of Python's :mod:`logging`
do the same once a :class:`LogHandler` is installed::

    logging.basicConfig(level=logging.INFO, handlers=[LogHandler(w)])

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
when unset): a longer line from taskd ends the worker, and a reply that would be longer is
replaced by an ``err`` of type "ReplyTooLarge", as in the Go SDK.

Errors that end the worker (an invalid TASKD_MAX_MESSAGE_BYTES, a setup or checkout-done
hook that raised, an over-long line from taskd) are :class:`WorkerError` exceptions, raised
by :meth:`Worker.serve`. :meth:`Worker.run`, the usual entry point, reports them on stderr
and exits with status 1; nothing else in this package exits the process.

Standard library only; Python 3.8 or newer. Install it with ``pip install ./sdk/python``
(from a taskd checkout; distribution ``taskd-worker``), or put ``sdk/python`` on
PYTHONPATH.
"""

from ._errors import Cancelled, CheckoutDoneError, ConfigError, ProtocolError, SetupError, WorkerError
from ._log import LogHandler, Logger, Timer
from ._worker import PROTOCOL_VERSION, Context, Handler, Hook, Worker

__version__ = "1.0.0"

__all__ = [
    "Worker", "Context", "Logger", "Timer", "LogHandler", "Handler", "Hook",
    "Cancelled", "WorkerError", "ConfigError", "SetupError", "CheckoutDoneError", "ProtocolError",
    "PROTOCOL_VERSION",
]
