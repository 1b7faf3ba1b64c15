"""The Python SDK (sdk/python/taskd_worker.py) against the protocol, without the daemon."""
import os
import sys
import unittest

from sdk_cases import SDKCases
from workerproc import REPO


class PythonSDK(SDKCases, unittest.TestCase):
    # the conformance suite's worker: one worker serves both (see its docstring)
    ARGV = [sys.executable, os.path.join(REPO, "internal", "conformance", "workers", "python_sdk.py")]


if __name__ == "__main__":
    unittest.main()
