"""Exceptions of the taskd_worker package."""

__all__ = ["Cancelled", "WorkerError", "ConfigError", "SetupError", "CheckoutDoneError", "ProtocolError"]


class Cancelled(Exception):
    """Raised by :meth:`Context.check_cancelled` when the caller cancelled the call."""


class WorkerError(Exception):
    """The worker cannot go on serving. :meth:`Worker.serve` raises it (one of the
    subclasses below); :meth:`Worker.run` reports it on stderr and exits with status 1.

    After it is raised the protocol is unusable: taskd will not be answered again. Say why
    on stderr and end the process, with a non-zero status.
    """


class ConfigError(WorkerError):
    """The environment taskd gave the worker is invalid (TASKD_MAX_MESSAGE_BYTES). Raised
    before anything is read or written."""


class SetupError(WorkerError):
    """The setup hook raised; that exception is ``__cause__``. The worker never reported
    ready, so taskd reports the interface as unavailable, quoting stderr."""


class CheckoutDoneError(WorkerError):
    """The checkout-done hook raised; that exception is ``__cause__``. The worker's state is
    unknown, so it must serve no further checkout."""


class ProtocolError(WorkerError):
    """Reading from taskd failed, or taskd sent a line longer than TASKD_MAX_MESSAGE_BYTES.
    The calls read before it have been answered."""
