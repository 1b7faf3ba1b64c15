"""The Python SDK (sdk/python/taskd_worker.py) against the protocol, without the daemon."""
import os
import sys
import unittest

from sdk_cases import SDKCases
from workerproc import HERE


class PythonSDK(SDKCases, unittest.TestCase):
    ARGV = [sys.executable, os.path.join(HERE, "sdk_worker.py")]
    FAIL_TYPE = "ValueError"


if __name__ == "__main__":
    unittest.main()
