"""Worker and Context: the method table, the hooks, and the loop that serves calls."""

import sys
import threading
import traceback
from typing import IO, Any, Callable, Dict, Mapping, Optional, TypeVar

from . import _lease, _protocol
from ._errors import Cancelled, CheckoutDoneError, ConfigError, ProtocolError, SetupError, WorkerError
from ._log import Logger

__all__ = ["Worker", "Context", "Handler", "Hook", "PROTOCOL_VERSION"]

PROTOCOL_VERSION = 1

Handler = Callable[..., Any]  # handler(ctx, *args) -> result (any JSON value)
Hook = Callable[[], Any]      # setup() and checkout_done()
H = TypeVar("H", bound=Callable[..., Any])


class Context(object):
    """What a handler gets besides its arguments. One Context per call.

    Attributes: ``id`` (the call id), ``method`` (the method name, "" for a function-style
    call), ``log`` (a :class:`Logger`). Safe for concurrent use (threads the handler starts
    may log and check for cancel).
    """

    def __init__(self, worker: "Worker", call_id: Any, method: str) -> None:
        self.id = call_id  # type: Any
        self.method = method
        self.log = Logger(collect=True)
        self._worker = worker
        self._cancelled = False  # set once, by whoever sees the cancel (a bool: no lock needed)

    def cancelled(self) -> bool:
        """True once taskd has sent ``cancel`` for this call (the caller gave up), or stdin
        has ended (taskd is stopping the worker). Cancel is advisory: the handler decides
        whether to stop, and whatever it returns or raises is still sent."""
        return self._cancelled

    def check_cancelled(self) -> None:
        """Raises :class:`Cancelled` if :meth:`cancelled` is true."""
        if self._cancelled:
            raise Cancelled("call %s was cancelled" % (self.id,))

    def bye(self, msg: str = "") -> None:
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
      worker reports ready never: :meth:`serve` raises :class:`SetupError`, and
      :meth:`run` writes the traceback to stderr and exits with status 1 (taskd reports the
      interface as unavailable, quoting stderr).
    - ``@w.checkout_done``: ``f()`` runs when a checkout is released (e.g. roll back an
      open transaction). If it raises, the worker's state is unknown, so it must not serve
      another checkout: :meth:`serve` raises :class:`CheckoutDoneError`, and :meth:`run`
      writes the traceback to stderr and exits with status 1.

    Handlers can also be passed to the constructor: ``Worker(methods={...}, default=f,
    setup=f, checkout_done=f)``. A call of an unregistered method gets an ``err`` reply
    of type "UnknownMethod". Register handlers before :meth:`run`; :meth:`bye` and
    :attr:`log` are safe for concurrent use.
    """

    def __init__(self, methods: Optional[Mapping[str, Handler]] = None, default: Optional[Handler] = None,
                 setup: Optional[Hook] = None, checkout_done: Optional[Hook] = None) -> None:
        self._methods = dict(methods or {})  # type: Dict[str, Handler]
        self._default = default
        self._setup = setup
        self._checkout_done = checkout_done
        self.log = Logger(collect=False)
        self._out = None  # type: Optional[IO[bytes]]
        self._wlock = threading.Lock()
        self._pending_bye = None  # type: Optional[str]
        self._started = False
        self._running = False
        self._current = None  # type: Optional[Context]  # the running call's; read by LogHandler
        self._exec = threading.Lock()  # held while a handler or hook runs: one at a time, any stream
        self._sup = None  # type: Optional[_protocol.Supervisor]
        self._leases = None  # type: Any  # _lease.Leases when taskd gave the lease endpoints
        self._max = _protocol.DEFAULT_MAX_MESSAGE_BYTES  # longest line, either way, without its newline

    # -- registration -------------------------------------------------------------

    def method(self, name: str) -> Callable[[H], H]:
        """Decorator: registers f as the handler of method name."""

        def register(f: H) -> H:
            self._methods[str(name)] = f
            return f

        return register

    def default(self, f: H) -> H:
        """Decorator: registers f as the handler of function-style calls."""
        self._default = f
        return f

    def setup(self, f: H) -> H:
        """Decorator: registers f to run once before the worker reports ready."""
        self._setup = f
        return f

    def checkout_done(self, f: H) -> H:
        """Decorator: registers f to run each time a checkout is released."""
        self._checkout_done = f
        return f

    # -- protocol -----------------------------------------------------------------

    def bye(self, msg: str = "") -> None:
        """Asks taskd to retire this worker after the current checkout. Called during setup
        it is sent right after ready; during a call, with that call's reply; otherwise
        (a checkout-done hook, another thread) at once. Safe for concurrent use."""
        if not self._running or self._current is not None:
            self._pending_bye = str(msg)  # sent after ready / with the reply
            return
        self._send({"t": "bye", "msg": str(msg)})

    def run(self) -> None:
        """Serves (see :meth:`serve`) and returns at end of input; let your script end
        there. This is the program's entry point, not a library call: if the worker cannot
        go on (:class:`WorkerError`: an invalid TASKD_MAX_MESSAGE_BYTES, a setup or
        checkout-done hook that raised, an over-long line from taskd), it writes why to
        stderr, with the hook's traceback, and **exits the process with status 1**
        (``sys.exit(1)``, which raises SystemExit). Call :meth:`serve` instead to handle
        that yourself."""
        try:
            self.serve()
        except WorkerError as e:
            _report(e)
            sys.exit(1)

    def serve(self) -> None:
        """Protects stdout, runs setup, reports ready, then serves calls until stdin ends,
        and returns. Raises :class:`WorkerError` (a subclass) when the worker cannot go on;
        the protocol is then unusable: say why on stderr and end the process with a
        non-zero status. Never exits the process itself. Call it once, on the main thread.

        Before setup runs, the protocol moves to private duplicates of file descriptors 0
        and 1; fd 1 and ``sys.stdout`` then go to stderr, fd 0 and ``sys.stdin`` read
        /dev/null."""
        if self._started:
            raise RuntimeError("Worker.serve called twice")
        self._started = True
        try:
            self._max = _protocol.max_message_bytes()
        except ValueError as e:
            raise ConfigError(str(e)) from None
        ctl, page, why = _lease.endpoints()
        if why is not None:
            sys.stderr.write("taskd_worker: direct leases off, taskd relays calls over stdin: %s\n" % (why,))
        proto_in, proto_out = _protocol.protect_stdio()
        self._out = proto_out
        if self._setup is not None:
            try:
                self._setup()
            except Exception as e:
                raise SetupError("setup failed: %s" % (_describe(e),)) from e
        self._running = True
        self._sup = _protocol.Supervisor()
        try:
            ready = {"t": "ready", "v": PROTOCOL_VERSION, "pipeline": True}  # type: Dict[str, Any]
            if ctl is not None and page is not None:
                self._leases = _lease.Leases(self, ctl, page, self._max)
                ready["lease"] = _lease.LEASE_VERSION
            self._send(ready)
            if self._pending_bye is not None:
                msg, self._pending_bye = self._pending_bye, None
                self._send({"t": "bye", "msg": msg})
            self._serve(proto_in)
        except BrokenPipeError:
            pass  # taskd is gone: nothing left to answer
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass

    def _serve(self, proto_in: IO[bytes]) -> None:
        # This thread reads stdin, runs each call and answers it: no hand-off between
        # threads while nothing else is pending. The supervisor reads for it during long
        # calls (see _protocol.Stream).
        stdin = _protocol.Stream(proto_in, self._write, self._max)
        self._run_stream(stdin)
        # End of input: the messages read before it have been handled (as cancelled
        # calls, see Context.cancelled); now return.
        if self._leases is not None:
            self._leases.close()
        if stdin.error is not None:
            raise ProtocolError(stdin.error)

    def _run_stream(self, st: _protocol.Stream) -> None:
        while True:
            msg = st.next()
            if msg is _protocol.EOF:
                return
            if msg.get("t") == "call":
                self._call(st, msg)
            else:
                self._done(st)

    def _call(self, st: _protocol.Stream, msg: Dict[str, Any]) -> None:
        call_id = msg.get("id")
        ep = _protocol.ep_of(msg.get("ep"))
        if ep is not None and ep < st.errs:
            # Made before the application saw an error that this checkout's earlier calls
            # got: queued behind that error, so it must not run. Not an error itself.
            st.skip(call_id)
            st.finish()
            st.write(_protocol.encode({"t": "aborted", "id": call_id}))
            return
        method = msg.get("m") or ""
        args = msg.get("a")
        if args is None:
            args = []
        ctx = Context(self, call_id, method)
        st.start(ctx)
        assert self._sup is not None
        with self._exec:
            self._sup.started(st)
            if self._leases is not None:
                self._leases.stats.start(call_id, st.lease, method)
            self._current = ctx
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
                reply = {"t": "ok", "id": call_id, "r": f(ctx, *args)}  # type: Dict[str, Any]
            except Exception as e:
                reply = {"t": "err", "id": call_id, "e": _error_payload(e)}
            finally:
                st.finish()
                self._current = None
                self._sup.ended()
            logs = ctx.log._take()
            if logs:
                reply["logs"] = logs
            try:
                line = _protocol.encode(reply)
            except (TypeError, ValueError) as e:
                # the result is not JSON (log fields were made JSON when recorded)
                payload = {"msg": "the result cannot be sent as JSON: %s" % (e,), "type": "TypeError", "trace": ""}
                reply = {"t": "err", "id": call_id, "e": payload}
                if logs:
                    reply["logs"] = logs
                line = _protocol.encode(reply)
            if len(line) - 1 > self._max:
                what = 'method "%s"' % method if method else "function-style call"
                reply = {"t": "err", "id": call_id, "e": {
                    "msg": "the reply of %s is %d bytes, more than max_message_bytes (%d): return "
                           "less, or raise max_message_bytes" % (what, len(line) - 1, self._max),
                    "type": "ReplyTooLarge", "trace": ""}}
                line = _protocol.encode(reply)
            if reply["t"] == "err":
                st.errs += 1
            if self._leases is not None:
                self._leases.stats.end(reply["t"] == "err")
            if self._pending_bye is not None:
                # bye goes first, in the same write: taskd then knows it when the reply ends
                # the checkout (a one-shot checkout is released as soon as the reply is
                # read). On a lease it goes to taskd on the control socket instead.
                bye, self._pending_bye = self._pending_bye, None
                if st.lease:
                    assert self._leases is not None
                    self._leases.send({"t": "bye", "msg": bye})
                else:
                    line = _protocol.encode({"t": "bye", "msg": bye}) + line
        st.write(line)

    def _done(self, st: _protocol.Stream) -> None:
        try:
            self._checkout_done_hook(st)
        finally:
            st.finish()
        st.errs = 0  # the next checkout starts with no errors

    def _checkout_done_hook(self, st: _protocol.Stream) -> None:
        if self._checkout_done is None:
            return
        assert self._sup is not None
        with self._exec:
            self._sup.started(st)
            try:
                self._checkout_done()
            except Exception as e:
                raise CheckoutDoneError("checkout_done hook failed (%s); exiting so that this worker "
                                        "serves no further checkout" % (_describe(e),)) from e
            finally:
                self._sup.ended()

    def _send(self, msg: Dict[str, Any]) -> None:
        self._write(_protocol.encode(msg))

    def _write(self, line: bytes) -> None:
        with self._wlock:
            assert self._out is not None
            self._out.write(line)
            self._out.flush()


class _UnknownMethod(Exception):
    pass


def _describe(e: BaseException) -> str:
    s = str(e)
    return "%s: %s" % (type(e).__name__, s) if s else type(e).__name__


def _report(e: WorkerError) -> None:
    """What Worker.run writes to stderr before exiting: the reason, and the traceback of the
    hook's exception if a hook raised."""
    try:
        sys.stderr.write("taskd_worker: %s\n" % (e,))
        cause = e.__cause__
        if cause is not None:
            traceback.print_exception(type(cause), cause, cause.__traceback__, file=sys.stderr)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _ours(tb: Any) -> bool:
    """Whether traceback entry tb is in this package's code."""
    name = tb.tb_frame.f_globals.get("__name__") or ""
    return name == __package__ or name.startswith(__package__ + ".")


def _error_payload(e: BaseException) -> Dict[str, Any]:
    name = type(e).__name__
    tb = e.__traceback__
    # leave out this package's own frames at the top of the traceback
    while tb is not None and _ours(tb):
        tb = tb.tb_next
    if isinstance(e, _UnknownMethod):
        name, tb = "UnknownMethod", None
    msg = str(e) or name
    trace = "".join(traceback.format_exception(type(e), e, tb))
    return {"msg": msg, "type": name, "trace": trace}
