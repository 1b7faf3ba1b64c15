"""Tests of the Python SDK (taskd_worker), run from sdk/python with

    python3 -m unittest

They start real worker processes (the conformance suite's internal/conformance/workers/
python_sdk.py, the examples, and small workers beside these files) and speak worker
protocol v1 to them, without the daemon; the workers load the SDK of this source tree. The
Perl SDK's tests are in sdk/perl/t (prove -l sdk/perl/t)."""
import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
