"""The direct-lease extension (docs/worker-protocol.md, "Direct leases"): taskd's control
socket (TASKD_CONTROL_FD), the stats page (TASKD_STATS_FD), and one thread per lease."""

import json
import mmap
import os
import socket
import struct
import sys
import threading
import time
from typing import Any, Dict, Optional, Tuple

from . import _protocol

LEASE_VERSION = 1
STATS_SIZE = 4096
STATS_MAGIC = 0x7461736B64737431  # "taskdst1"
MAX_METHOD_BYTES = 192
MAX_CONTROL_PACKET = 4096

_FIELDS = struct.Struct("<QQQqQQQ")  # calls, done, cur_id, cur_start, lease, errs, mlen: offset 16
_U64 = struct.Struct("<Q")


def endpoints() -> Tuple[Optional[socket.socket], Optional[mmap.mmap], Optional[str]]:
    """The control socket and the stats page taskd named in the environment, checked: a
    SOCK_SEQPACKET socket and a descriptor that maps 4096 bytes. The variables are removed
    from the environment and the descriptors are not inherited by child processes. Returns
    (None, None, why) if they are missing or unusable (why is None if neither was set)."""
    cv = os.environ.pop("TASKD_CONTROL_FD", "")
    sv = os.environ.pop("TASKD_STATS_FD", "")
    if cv == "" and sv == "":
        return None, None, None
    if not hasattr(socket, "recv_fds"):
        return None, None, "receiving a lease's socket needs Python 3.9 or later (socket.recv_fds)"
    try:
        cfd, sfd = _fd("TASKD_CONTROL_FD", cv), _fd("TASKD_STATS_FD", sv)
        os.set_inheritable(cfd, False)
        os.set_inheritable(sfd, False)
        sock = socket.socket(fileno=cfd)
        if sock.type != socket.SOCK_SEQPACKET:
            sock.detach()
            raise ValueError("TASKD_CONTROL_FD=%d is not a SOCK_SEQPACKET socket" % cfd)
        sock.setblocking(True)
        size = os.fstat(sfd).st_size
        if size < STATS_SIZE:
            raise ValueError("TASKD_STATS_FD=%d is %d bytes, want %d" % (sfd, size, STATS_SIZE))
        page = mmap.mmap(sfd, STATS_SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        os.close(sfd)  # the mapping stays
    except (OSError, ValueError) as e:
        return None, None, str(e)
    return sock, page, None


def _fd(name: str, v: str) -> int:
    if not (v.isascii() and v.isdigit()) or int(v) < 3:
        raise ValueError("%s=%r: want a descriptor number of 3 or more" % (name, v))
    fd = int(v)
    os.fstat(fd)
    return fd


class Stats(object):
    """The worker's side of the stats page: every call's start and end, under a seqlock.
    Only the thread running a call (holding Worker._exec) writes it."""

    def __init__(self, page: mmap.mmap) -> None:
        self._m = page
        self._seq = 0
        self._calls = self._done = self._errs = 0
        _U64.pack_into(page, 8, STATS_MAGIC)

    def _bump(self) -> None:
        self._seq += 1
        _U64.pack_into(self._m, 0, self._seq)

    def start(self, call_id: Any, lease: int, method: str) -> None:
        cid = call_id if isinstance(call_id, int) and 0 <= call_id < 1 << 64 else 0
        name = method.encode("utf-8", "replace")
        if len(name) > MAX_METHOD_BYTES:
            name = name[:MAX_METHOD_BYTES].decode("utf-8", "ignore").encode("utf-8")
        self._calls += 1
        self._bump()
        _FIELDS.pack_into(self._m, 16, self._calls, self._done, cid, time.time_ns(), lease, self._errs, len(name))
        self._m[72:72 + len(name)] = name
        self._bump()

    def end(self, is_err: bool) -> None:
        self._done += 1
        if is_err:
            self._errs += 1
        self._bump()
        _FIELDS.pack_into(self._m, 16, self._calls, self._done, 0, 0, 0, self._errs, 0)
        self._bump()


class _Lease(object):
    def __init__(self, lease_id: int, sock: socket.socket, worker: Any, limit: int) -> None:
        self.id = lease_id
        self.sock = sock
        self.worker = worker
        self._wlock = threading.Lock()
        self.stream = _protocol.Stream(sock.makefile("rb"), self._write, limit, lease=lease_id)
        self.end = threading.Event()

    def _write(self, line: bytes) -> None:
        with self._wlock:
            try:
                self.sock.sendall(line)
            except OSError:
                pass  # the client went away: taskd ends the lease

    def stop(self) -> None:
        self.stream.stop()
        try:
            self.sock.shutdown(socket.SHUT_RD)  # a blocked read returns EOF
        except OSError:
            pass
        self.end.set()


class Leases(object):
    """Serves direct leases: a daemon thread reads the control socket; each lease runs in a
    thread of its own, which answers calls on the lease's socket until taskd ends it, then
    closes it, runs the checkout-done hook and says "ended"."""

    def __init__(self, worker: Any, sock: socket.socket, page: mmap.mmap, limit: int) -> None:
        self.worker = worker
        self.sock = sock
        self.stats = Stats(page)
        self.limit = limit
        self._lock = threading.Lock()
        self._leases = {}  # type: Dict[int, _Lease]
        self._closed = False
        self._slock = threading.Lock()
        t = threading.Thread(target=self._read, name="taskd-control")
        t.daemon = True
        t.start()

    def send(self, msg: Dict[str, Any]) -> None:
        with self._slock:
            try:
                self.sock.send(json.dumps(msg, separators=(",", ":")).encode("utf-8"))
            except OSError:
                pass  # taskd is gone; stdin ends too

    def _read(self) -> None:
        while True:
            try:
                data, fds, flags, _ = socket.recv_fds(self.sock, MAX_CONTROL_PACKET + 1, 4)
            except OSError:
                data, fds, flags = b"", [], 0
            if not data and not fds:
                # taskd is gone: leases end; the worker exits at EOF on stdin, which follows
                self.close()
                return
            for fd in fds:
                os.set_inheritable(fd, False)
            try:
                msg = json.loads(data)
            except ValueError:
                msg = None
            if not isinstance(msg, dict) or flags & getattr(socket, "MSG_TRUNC", 0):
                sys.stderr.write("taskd_worker: ignoring a malformed control packet from taskd\n")
                msg = {}
            t, lease_id = msg.get("t"), msg.get("id")
            if t == "lease" and fds:
                self._start(lease_id, socket.socket(fileno=fds.pop(0)))
            elif t == "lease":
                sys.stderr.write("taskd_worker: taskd sent a lease without its socket; ending it\n")
                self.send({"t": "ended", "id": lease_id})
            elif t == "end":
                self._end(lease_id)
            elif t == "cancel":
                with self._lock:
                    leases = list(self._leases.values())
                for lease in leases:
                    lease.stream.cancel(lease_id)
            for fd in fds:
                os.close(fd)

    def _start(self, lease_id: Any, sock: socket.socket) -> None:
        sock.setblocking(True)
        lease = _Lease(lease_id, sock, self.worker, self.limit)
        with self._lock:
            if self._closed or lease_id in self._leases:
                sock.close()
                return
            self._leases[lease_id] = lease
        t = threading.Thread(target=self._serve, args=(lease,), name="taskd-lease-%s" % (lease_id,))
        t.daemon = True
        t.start()

    def _end(self, lease_id: Any) -> None:
        with self._lock:
            lease = self._leases.get(lease_id)
        if lease is None:
            self.send({"t": "ended", "id": lease_id})  # unknown or over: never leave taskd waiting
            return
        lease.stop()

    def _serve(self, lease: _Lease) -> None:
        w = self.worker
        try:
            w._run_stream(lease.stream)
        except Exception as e:  # a checkout-done hook ("done" on a warm lease) failed
            _fatal(e)
        lease.end.wait()  # the client may close first: the lease lasts until taskd ends it
        lease.stream.f.close()  # the socket's descriptor closes with its last file object
        lease.sock.close()
        with self._lock:
            self._leases.pop(lease.id, None)
            closed = self._closed
        if closed:
            return
        try:
            w._checkout_done_hook(lease.stream)
        except Exception as e:
            _fatal(e)
        self.send({"t": "ended", "id": lease.id})

    def close(self) -> None:
        """Ends every lease for good (stdin or the control socket ended)."""
        with self._lock:
            self._closed = True
            leases = list(self._leases.values())
        for lease in leases:
            lease.stop()


def _fatal(e: BaseException) -> None:
    """A hook failed in a lease's thread: the worker must serve nothing more. Report as
    Worker.run does and end the process now."""
    from ._worker import _report
    from ._errors import WorkerError
    if isinstance(e, WorkerError):
        _report(e)
    else:
        sys.stderr.write("taskd_worker: %s\n" % (e,))
    os._exit(1)
