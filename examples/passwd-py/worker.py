#!/usr/bin/env python3
"""passwd-py: password hashing with scrypt, in a pool of Python workers.

    hash(password)          -> "scrypt$N$r$p$SALT$HASH"   (SALT, HASH: base64)
    verify(hashed, password) -> true or false

Setup opens /dev/urandom once; every hash gets a fresh 16-byte salt read from it. The cost
comes from the environment: SCRYPT_N (default 16384, a power of two), SCRYPT_R (8),
SCRYPT_P (1). verify takes the parameters from the hash itself (within limits, so that a
forged hash cannot make the worker allocate gigabytes) and compares in constant time.
A malformed hash is an error (type ValueError), not a mismatch.
"""
import base64
import hashlib
import hmac
import os
import sys

sys.dont_write_bytecode = True
# this checkout's SDK (taskd gives workers no PYTHONPATH); installed with
# `pip install ./sdk/python`, the import needs no path
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "sdk", "python"))
from taskd_worker import Worker  # noqa: E402

SALT_BYTES = 16
HASH_BYTES = 32
MAX_N = 1 << 20          # refuse to verify hashes costlier than this
MAX_MEM = 1 << 30        # hashlib.scrypt's maxmem for the largest allowed N

w = Worker()
urandom = None
N = int(os.environ.get("SCRYPT_N", "16384"))
R = int(os.environ.get("SCRYPT_R", "8"))
P = int(os.environ.get("SCRYPT_P", "1"))


def _check_params(n, r, p):
    if n < 2 or n & (n - 1) or n > MAX_N or not 1 <= r <= 32 or not 1 <= p <= 16:
        raise ValueError("scrypt parameters out of range: N=%d r=%d p=%d" % (n, r, p))


def _scrypt(password, salt, n, r, p, dklen=HASH_BYTES):
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                          maxmem=MAX_MEM, dklen=dklen)


@w.setup
def setup():
    global urandom
    _check_params(N, R, P)
    urandom = open("/dev/urandom", "rb", buffering=0)


@w.method("hash")
def hash_password(ctx, password):
    salt = urandom.read(SALT_BYTES)
    with ctx.log.timer("scrypt", n=N):
        digest = _scrypt(password, salt, N, R, P)
    b64 = lambda b: base64.b64encode(b).decode("ascii")
    return "scrypt$%d$%d$%d$%s$%s" % (N, R, P, b64(salt), b64(digest))


@w.method("verify")
def verify(ctx, hashed, password):
    try:
        scheme, n, r, p, salt, digest = hashed.split("$")
        if scheme != "scrypt":
            raise ValueError
        n, r, p = int(n), int(r), int(p)
        salt = base64.b64decode(salt, validate=True)
        digest = base64.b64decode(digest, validate=True)
        if len(salt) < 8 or not 16 <= len(digest) <= 64:
            raise ValueError
    except (ValueError, AttributeError):
        raise ValueError("not a hash made by passwd-py (want scrypt$N$r$p$salt$hash)")
    _check_params(n, r, p)
    with ctx.log.timer("scrypt", n=n):
        got = _scrypt(password, salt, n, r, p, dklen=len(digest))
    return hmac.compare_digest(got, digest)


w.run()
