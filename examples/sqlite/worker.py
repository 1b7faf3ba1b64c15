#!/usr/bin/env python3
"""sqlite: a database handle per worker, with transactions held across the calls of one
checkout (AnyEvent::Task's DBI synopsis, with Python's stdlib sqlite3).

    execute(sql, params=[])  -> the number of rows changed (-1 for statements that change none)
    query(sql, params=[])    -> the rows: a list of objects, column name -> value
    begin()                  -> null: starts a transaction (BEGIN); it spans the next calls
    commit(), rollback()     -> null
    in_transaction()         -> true while a transaction is open

params is a list (for ? placeholders) or an object (for :name placeholders). BLOB values
come back as base64 strings. sqlite3's exceptions come back as errors of the same type
(IntegrityError, OperationalError, ...).

Setup opens the database: the file SQLITE_PATH (default "taskd-example.sqlite"; a relative
path is relative to the worker's working directory, the interface's `dir`), creating it
and its directory if needed, in WAL mode so that readers and a writer do not block each
other. SQLITE_BUSY_MS (default 5000) is how long a writer waits for another one's
transaction to end before failing with "database is locked".

When a checkout is released, the checkout-done hook rolls back any transaction the
application left open: the next checkout always starts clean.
"""
import base64
import os
import sqlite3
import sys

sys.dont_write_bytecode = True
# this checkout's SDK (taskd gives workers no PYTHONPATH); installed with
# `pip install ./sdk/python`, the import needs no path
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "sdk", "python"))
from taskd_worker import Worker  # noqa: E402

w = Worker()
db = None


@w.setup
def setup():
    global db
    path = os.environ.get("SQLITE_PATH") or "taskd-example.sqlite"
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    busy = int(os.environ.get("SQLITE_BUSY_MS", "5000")) / 1000.0
    # isolation_level=None: no implicit transactions; begin/commit/rollback are explicit,
    # so that a transaction can span calls.
    db = sqlite3.connect(path, timeout=busy, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA foreign_keys=ON")
    w.log.info("database open", path=os.path.abspath(path))


@w.checkout_done
def rollback_leftovers():
    if db.in_transaction:
        db.execute("ROLLBACK")
        w.log.warn("checkout released with a transaction open: rolled back")


def _params(params):
    if params is None:
        return ()
    if not isinstance(params, (list, dict)):
        raise TypeError("params must be an array or an object, not %s" % type(params).__name__)
    return params


def _value(v):
    if isinstance(v, bytes):
        return base64.b64encode(v).decode("ascii")
    return v


@w.method("execute")
def execute(ctx, sql, params=None):
    with ctx.log.timer("execute"):
        return db.execute(sql, _params(params)).rowcount


@w.method("query")
def query(ctx, sql, params=None):
    with ctx.log.timer("query"):
        cur = db.execute(sql, _params(params))
        names = [d[0] for d in cur.description or ()]
        return [{n: _value(v) for n, v in zip(names, row)} for row in cur]


@w.method("begin")
def begin(ctx):
    db.execute("BEGIN")


@w.method("commit")
def commit(ctx):
    db.execute("COMMIT")


@w.method("rollback")
def rollback(ctx):
    db.execute("ROLLBACK")


@w.method("in_transaction")
def in_transaction(ctx):
    return db.in_transaction


w.run()
