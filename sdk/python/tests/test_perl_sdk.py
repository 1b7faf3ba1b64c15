"""The Perl SDK (sdk/perl/Taskd/Worker.pm) against the protocol, without the daemon."""
import os
import shutil
import unittest

from sdk_cases import SDKCases
from workerproc import REPO

PERL = shutil.which("perl")


@unittest.skipIf(PERL is None, "PERL IS NOT INSTALLED: the Perl SDK was NOT tested")
class PerlSDK(SDKCases, unittest.TestCase):
    # the conformance suite's worker: one worker serves both (see python_sdk.py's docstring)
    ARGV = [PERL or "perl", os.path.join(REPO, "internal", "conformance", "workers", "perl_sdk.pl")]

    def test_plain_die(self):
        reply = self.w.call("die", "plain string")
        self.assertEqual(reply["t"], "err")
        self.assertEqual(reply["e"]["type"], "die")
        self.assertEqual(reply["e"]["msg"], "plain string")
        self.assertIn("perl_sdk.pl line", reply["e"]["trace"])


if __name__ == "__main__":
    unittest.main()
